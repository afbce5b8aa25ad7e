//! The httpGet handler as upstream's (`pkg/probe/http`): HTTP or HTTPS (any certificate
//! accepted, as upstream), GET with `User-Agent: kube-probe/1.34`,
//! `Accept: */*` and the probe's headers (a `Host` header among them sets the host), no
//! keep-alive; redirects followed to the same host name up to 10 times, a redirect elsewhere
//! ends the probe as a success with a warning; 200-399 passes; the body read is capped at
//! 10 KiB. The whole attempt, redirects included, is bounded by the probe's timeout.
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use tokio::net::TcpStream;

use super::handler::{MAX_OUTPUT, Outcome, Target, host, join_host_port, resolve_port};

/// What upstream's prober sends as its user agent (the kubelet version kernlet follows).
pub const USER_AGENT: &str = "kube-probe/1.34";
const MAX_REDIRECTS: usize = 10;
/// How a failing status code is reported (upstream's words).
pub(super) const STATUS_FAILURE: &str = "HTTP probe failed with statuscode: ";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = join_host_port(&self.host, self.port);
        write!(f, "{}://{address}{}", self.scheme, self.path)
    }
}

impl Url {
    /// The target of a `Location` header relative to this URL.
    pub(super) fn join(&self, location: &str) -> Option<Self> {
        let absolute = |scheme: &str, rest: &str| {
            let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
            let (host, port) = split_authority(authority, default_port(scheme))?;
            Some(Self {
                scheme: scheme.to_owned(),
                host,
                port,
                path: path.to_owned(),
            })
        };
        let lower = location.to_ascii_lowercase();
        if let Some(scheme) = ["http", "https"]
            .into_iter()
            .find(|s| lower.starts_with(&format!("{s}://")))
        {
            return absolute(scheme, &location[scheme.len() + 3..]);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return absolute(&self.scheme, rest);
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let path = self.path.split(['?', '#']).next().unwrap_or("/");
            let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
            format!("{dir}{location}")
        };
        Some(Self {
            path,
            ..self.clone()
        })
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `host[:port]` or `[v6][:port]`.
fn split_authority(authority: &str, default: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None if authority.is_empty() => None,
        None => Some((authority.to_owned(), default)),
    }
}

/// Runs the httpGet `action` against `target` once.
pub(super) async fn get(action: &HTTPGetAction, target: &Target, timeout: Duration) -> Outcome {
    let (host, port) = match (
        host(action.host.as_deref(), target),
        resolve_port(&action.port, &target.ports),
    ) {
        (Ok(host), Ok(port)) => (host, port),
        (Err(e), _) | (_, Err(e)) => return Outcome::Error(e),
    };
    let scheme = action
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_lowercase();
    let path = action.path.as_deref().unwrap_or("/");
    let url = Url {
        scheme,
        host,
        port,
        path: if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        },
    };
    let headers: Vec<(String, String)> = action
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    match tokio::time::timeout(timeout, follow(&url, &headers)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// One response: its status, its `Location`, and the start of its body.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

async fn follow(first: &Url, headers: &[(String, String)]) -> Outcome {
    let mut url = first.clone();
    for redirects in 0..=MAX_REDIRECTS {
        let answer = match request(&url, headers).await {
            Ok(answer) => answer,
            Err(error) => return Outcome::Failure(format!("Get \"{url}\": {error}")),
        };
        let next = answer
            .location
            .as_deref()
            .filter(|_| answer.status.is_redirection())
            .and_then(|location| url.join(location));
        let Some(next) = next else {
            return classify(&answer);
        };
        if next.host != first.host {
            // Upstream stops at a redirect to another host and reports the redirect itself.
            return classify(&answer);
        }
        if redirects == MAX_REDIRECTS {
            return Outcome::Failure(format!("Get \"{next}\": stopped after 10 redirects"));
        }
        url = next;
    }
    Outcome::Failure(format!("Get \"{url}\": stopped after 10 redirects"))
}

fn classify(answer: &Answer) -> Outcome {
    let code = answer.status.as_u16();
    if (200..300).contains(&code) {
        Outcome::Success
    } else if (300..400).contains(&code) {
        Outcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            answer.body
        ))
    } else {
        Outcome::Failure(format!("{STATUS_FAILURE}{code}"))
    }
}

async fn request(url: &Url, headers: &[(String, String)]) -> Result<Answer, String> {
    let address = join_host_port(&url.host, url.port);
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("dial tcp {address}: {e}"))?;
    match url.scheme.as_str() {
        "http" => exchange(stream, url, &address, headers).await,
        "https" => {
            let connector = tls::connector()?;
            let stream = connector
                .connect(tls::server_name(&url.host)?, stream)
                .await
                .map_err(|e| format!("tls handshake with {address}: {e}"))?;
            exchange(stream, url, &address, headers).await
        }
        other => Err(format!("unsupported protocol scheme {other:?}")),
    }
}

/// One GET over `io`.
async fn exchange<T>(
    io: T,
    url: &Url,
    address: &str,
    headers: &[(String, String)],
) -> Result<Answer, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven beside the request and dropped with it.
    let driver = tokio::spawn(connection);
    let _abort = AbortOnDrop(driver);
    let mut builder = Request::get(url.path.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close");
    let mut host_set = false;
    for (name, value) in headers {
        host_set |= name.eq_ignore_ascii_case("host");
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !host_set {
        builder = builder.header(header::HOST, address);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut kept = Vec::new();
    while kept.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    kept.extend_from_slice(data);
                }
            }
            Some(Err(error)) => return Err(format!("reading the body: {error}")),
            None => break,
        }
    }
    kept.truncate(MAX_OUTPUT);
    Ok(Answer {
        status,
        location,
        body: String::from_utf8_lossy(&kept).into_owned(),
    })
}

/// TLS for `https` probes: any certificate is accepted, as upstream's prober sets
/// `InsecureSkipVerify` (a probe checks that the container answers, not who it is).
mod tls {
    use std::sync::Arc;

    use tokio_rustls::rustls::{
        self, DigitallySignedStruct, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
        pki_types::{CertificateDer, ServerName, UnixTime},
    };

    #[derive(Debug)]
    struct AcceptAny(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A connector that trusts any server certificate.
    pub(super) fn connector() -> Result<tokio_rustls::TlsConnector, String> {
        #[expect(
            deprecated,
            reason = "ring has no post-quantum key exchange; a probe of a pod does not need one"
        )]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls configuration: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The name to present for `host` (an IP address or a DNS name).
    pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
        ServerName::try_from(host.to_owned()).map_err(|e| format!("tls server name {host:?}: {e}"))
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
