//! `/exec`, `/attach` and `/portForward`: upstream's streaming flow (`pkg/kubelet/server`
//! `getExec`, `getAttach`, `getPortForward`, then `proxyStream`).
//!
//! The request names the pod and container (`/exec/{namespace}/{pod}[/{uid}]/{container}`,
//! `/portForward/{namespace}/{pod}[/{uid}]`) and, for exec and attach, the streams
//! (`input`, `output`, `error`, `tty` equal to `1`, as the API server sends them) and the
//! `command` (repeated). kernlet checks them as upstream's `remotecommand.NewOptions` does, asks
//! the runtime (CRI `Exec`, `Attach`, `PortForward`) for a one-time URL on its streaming server,
//! and proxies the client's upgrade request there: the runtime's server negotiates the protocol
//! (SPDY/3.1 or WebSocket, and the channel protocol version) and runs the session; after its
//! `101 Switching Protocols` kernlet copies bytes both ways until either side closes. So every
//! protocol the runtime speaks works, and the exit status, resize and port data travel as the
//! runtime frames them. The one protocol the runtime may lack, WebSocket `v5.channel.k8s.io`,
//! kernlet serves itself (see `translate`). The CRI call's failure is answered as upstream's
//! `streaming.WriteError` does (404, 429, 500). The client's credentials (`Authorization`,
//! cookies, a token carried as a WebSocket subprotocol) are not forwarded to the runtime. Only an HTTP/1.1 upgrade request
//! costs the runtime a session: anything else is a 400 `Upgrade request required` first. The
//! session holds its connection's slot under the server's connection cap.
//!
//! On shutdown an open session gets [`super::SHUTDOWN_GRACE`] to finish, then it is cut.

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use kernlet_cri::v1;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::logs::{find_pod, path_segments, status_of};
use super::query::{is_websocket, path_decode, query_pairs};
use super::routes::{Body, TEXT, respond};
use super::{Providers, Slot, translate};

/// The most of an error answer from the runtime's streaming server that is passed on.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How long the runtime's streaming server may take to accept and to answer the upgrade.
const RUNTIME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The client's headers that stay with kernlet: its credentials, and the framing of a request
/// that has no body on the runtime's side.
const CLIENT_ONLY: [hyper::header::HeaderName; 8] = [
    AUTHORIZATION,
    HOST,
    hyper::header::COOKIE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::CONTENT_LENGTH,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::TE,
    hyper::header::TRAILER,
];

/// Drops a bearer token carried as a WebSocket subprotocol
/// (`base64url.bearer.authorization.k8s.io.<token>`) from what goes to the runtime.
fn strip_token_protocol(headers: &mut hyper::HeaderMap) {
    let name = hyper::header::SEC_WEBSOCKET_PROTOCOL;
    let offered: Vec<String> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(super::authn::TOKEN_PROTOCOL))
        .map(str::to_owned)
        .collect();
    headers.remove(&name);
    if let Ok(value) = HeaderValue::from_str(&offered.join(", "))
        && !offered.is_empty()
    {
        headers.insert(name, value);
    }
}

/// Which streaming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// The streams an exec or attach asks for (upstream `remotecommand.Options`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "upstream's four independent stream switches, as CRI's ExecRequest has them"
)]
pub(super) struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

/// Upstream's `NewOptions`: each stream is on when its parameter is `1`; a tty merges stderr
/// into stdout; at least one stream; exec needs a command.
pub(super) fn stream_options(query: Option<&str>, kind: Kind) -> Result<StreamOptions, String> {
    let mut options = StreamOptions::default();
    let mut first = std::collections::HashMap::new();
    for (key, value) in query_pairs(query) {
        if key == "command" {
            options.command.push(value);
        } else {
            first.entry(key).or_insert(value);
        }
    }
    let on = |key: &str| first.get(key).is_some_and(|v| v == "1");
    options.tty = on("tty");
    options.stdin = on("input");
    options.stdout = on("output");
    options.stderr = on("error") && !options.tty;
    if !options.stdin && !options.stdout && !options.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".to_owned());
    }
    if kind == Kind::Exec && options.command.is_empty() {
        return Err("you must specify at least one command for the container".to_owned());
    }
    Ok(options)
}

/// The ports a WebSocket port-forward asks for (upstream `NewV4Options`): `port` parameters,
/// each a comma-separated list of ports above 0; nothing for SPDY, whose streams name their
/// ports.
pub(super) fn forwarded_ports(query: Option<&str>, websocket: bool) -> Result<Vec<i32>, String> {
    if !websocket {
        return Ok(Vec::new());
    }
    let values: Vec<String> = query_pairs(query)
        .filter(|(key, _)| key == "port")
        .map(|(_, value)| value)
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".to_owned());
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".to_owned());
        }
        for part in value.split(',') {
            let port: u16 = part
                .parse()
                .map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(i32::from(port));
        }
    }
    Ok(ports)
}

/// Whether `request` asks to switch protocols (HTTP/1.1, `Connection: upgrade`, an
/// `Upgrade`): nothing else can carry a session, so nothing else costs the runtime one.
fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == hyper::Version::HTTP_11
        && request.headers().contains_key(hyper::header::UPGRADE)
        && request
            .headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
            })
}

/// The `tty` of `container` in the pod's spec.
fn spec_tty(pod: &k8s_openapi::api::core::v1::Pod, container: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .and_then(|c| c.tty)
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == container)
                .and_then(|c| c.tty)
        })
        .unwrap_or(false)
}

/// The route: `rest` is the path after `/exec/`, `/attach/` or `/portForward/`.
pub(super) async fn stream(
    kind: Kind,
    rest: &str,
    request: Request<Incoming>,
    providers: &Providers,
    shutdown: &CancellationToken,
) -> Response<Body> {
    let text = |status: StatusCode, message: String| respond(status, TEXT, message + "\n");
    let parts: Vec<String> = rest.split('/').map(path_decode).collect();
    let (target, uid) = match (kind, parts.len()) {
        (Kind::PortForward, 2) => (None, None),
        (Kind::PortForward, 3) => (None, Some(parts[2].clone())),
        (Kind::Exec | Kind::Attach, 3) => (Some(parts[2].clone()), None),
        (Kind::Exec | Kind::Attach, 4) => (Some(parts[3].clone()), Some(parts[2].clone())),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found".to_owned()),
    };
    let Some([namespace, name]) = path_segments::<2>(&format!("{}/{}", parts[0], parts[1])) else {
        return text(StatusCode::NOT_FOUND, "404 page not found".to_owned());
    };
    let (options, forward_ports) = match kind {
        Kind::PortForward => {
            let websocket = is_websocket(request.headers());
            match forwarded_ports(request.uri().query(), websocket) {
                Ok(list) => (StreamOptions::default(), list),
                Err(message) => return text(StatusCode::BAD_REQUEST, message),
            }
        }
        _ => match stream_options(request.uri().query(), kind) {
            Ok(options) => (options, Vec::new()),
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        },
    };
    let Some(pod) = find_pod(&providers.pods.pods(), &namespace, &name)
        .filter(|pod| uid.is_none() || pod.metadata.uid == uid)
    else {
        return text(StatusCode::NOT_FOUND, "pod does not exist".to_owned());
    };
    let Some(runtime) = providers.runtime.clone() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no container runtime".to_owned(),
        );
    };
    // The options of a v5 WebSocket session, which kernlet translates itself.
    let mut v5 = None;
    let url = match target {
        Some(container) => {
            let Some(id) = status_of(&pod, &container)
                .filter(|s| s.state.as_ref().is_some_and(|s| s.running.is_some()))
                .and_then(|s| s.container_id.clone())
            else {
                // Upstream's `findContainer` error, which its `WriteError` answers with 500.
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("container not found ({container:?})"),
                );
            };
            if !is_upgrade(&request) {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Upgrade request required".to_owned(),
                );
            }
            let id = id
                .split_once("://")
                .map_or(id.clone(), |(_, bare)| bare.to_owned());
            let mut options = options;
            if kind == Kind::Attach {
                // A running process's terminal is what its spec said (upstream `GetAttach`).
                options.tty = spec_tty(&pod, &container);
            }
            if is_websocket(request.headers()) && translate::offers_v5(request.headers()) {
                v5 = Some(options.clone());
            }
            streaming_url(&runtime, kind, id, options).await
        }
        None if !is_upgrade(&request) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Upgrade request required".to_owned(),
            );
        }
        None => match sandbox_of(&runtime, pod.metadata.uid.as_deref().unwrap_or("")).await {
            Ok(sandbox) => runtime
                .port_forward(v1::PortForwardRequest {
                    pod_sandbox_id: sandbox,
                    port: forward_ports,
                })
                .await
                .map(|r| r.url)
                .map_err(|e| refused_by_runtime(&e)),
            Err(refused) => Err(refused),
        },
    };
    match (url, v5) {
        (Ok(url), Some(options)) => translate::translate(&url, request, &options, shutdown).await,
        (Ok(url), None) => proxy(&url, request, shutdown).await,
        (Err(refused), _) => refused,
    }
}

/// The answer to a failed CRI call, as upstream's `streaming.WriteError`: 404 for `NotFound`,
/// 429 with `Retry-After` (the URL cache's minute) for `ResourceExhausted`, else 500.
pub(super) fn refused_by_runtime(error: &crate::cri::CriError) -> Response<Body> {
    let code = match error {
        crate::cri::CriError::Call { status, .. } => status.code(),
        _ => tonic::Code::Unknown,
    };
    let status = match code {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut answer = respond(status, TEXT, format!("{error}\n"));
    if status == StatusCode::TOO_MANY_REQUESTS {
        answer
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    answer
}

fn internal(message: String) -> Response<Body> {
    respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, message + "\n")
}

async fn streaming_url(
    runtime: &crate::cri::Runtime,
    kind: Kind,
    container_id: String,
    options: StreamOptions,
) -> Result<String, Response<Body>> {
    let answer = if kind == Kind::Exec {
        runtime
            .exec(v1::ExecRequest {
                container_id,
                cmd: options.command,
                tty: options.tty,
                stdin: options.stdin,
                stdout: options.stdout,
                stderr: options.stderr,
            })
            .await
            .map(|r| r.url)
    } else {
        runtime
            .attach(v1::AttachRequest {
                container_id,
                stdin: options.stdin,
                tty: options.tty,
                stdout: options.stdout,
                stderr: options.stderr,
            })
            .await
            .map(|r| r.url)
    };
    answer.map_err(|e| refused_by_runtime(&e))
}

/// The ready sandbox of pod `uid`.
async fn sandbox_of(runtime: &crate::cri::Runtime, uid: &str) -> Result<String, Response<Body>> {
    let filter = v1::PodSandboxFilter {
        state: Some(v1::PodSandboxStateValue {
            state: v1::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: [("io.kubernetes.pod.uid".to_owned(), uid.to_owned())].into(),
        ..Default::default()
    };
    let answer = runtime
        .list_pod_sandbox(v1::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|e| refused_by_runtime(&e))?;
    answer
        .items
        .into_iter()
        .next()
        .map(|sandbox| sandbox.id)
        .ok_or_else(|| internal(format!("no ready sandbox for pod {uid}")))
}

/// The runtime's answer other than `101`: its status, type and text; framing is the client
/// connection's own.
pub(super) async fn refusal(answer: Response<Incoming>) -> Response<Body> {
    let (parts, body) = answer.into_parts();
    let read = Limited::new(body, MAX_ERROR_BODY).collect();
    let Ok(Ok(body)) = tokio::time::timeout(RUNTIME_TIMEOUT, read).await else {
        return respond(
            StatusCode::BAD_GATEWAY,
            TEXT,
            "the runtime's streaming server sent an unreadable answer\n",
        );
    };
    let mut response = Response::new(http_body_util::Full::new(body.to_bytes()).boxed());
    *response.status_mut() = parts.status;
    if let Some(kind) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, kind.clone());
    }
    response
}

/// Connects to the runtime's streaming server at `url` and sends it a bodiless `method`
/// request with `headers` (and its own `Host`): the answer, or why there is none.
pub(super) async fn ask_runtime(
    url: &str,
    method: hyper::Method,
    mut headers: hyper::HeaderMap,
) -> Result<Response<Incoming>, String> {
    let Ok(target) = url.parse::<Uri>() else {
        return Err(format!(
            "the runtime's streaming URL {url:?} does not parse"
        ));
    };
    let (Some(host), Some(port)) = (target.host(), target.port_u16()) else {
        return Err(format!(
            "the runtime's streaming URL {url:?} has no host and port"
        ));
    };
    if target.scheme_str() == Some("https") {
        return Err(format!(
            "the runtime streams over TLS ({url}); kernlet proxies plain-HTTP streaming servers only"
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::time::timeout(RUNTIME_TIMEOUT, TcpStream::connect((host, port)));
    let tcp = match connect.await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => {
            return Err(format!(
                "cannot reach the runtime's streaming server: {error}"
            ));
        }
        Err(_) => return Err("the runtime's streaming server did not accept in time".to_owned()),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|error| format!("streaming server handshake: {error}"))?;
    tokio::spawn(connection.with_upgrades());
    if let Ok(authority) = HeaderValue::from_str(&format!("{host}:{port}")) {
        headers.insert(HOST, authority);
    }
    let mut forward = Request::new(Empty::<Bytes>::new());
    *forward.method_mut() = method;
    *forward.uri_mut() = target
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    *forward.headers_mut() = headers;
    match tokio::time::timeout(RUNTIME_TIMEOUT, sender.send_request(forward)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(format!("streaming server request: {error}")),
        Err(_) => Err("the runtime's streaming server did not answer in time".to_owned()),
    }
}

/// A 500 for a session the runtime could not give, logged.
pub(super) fn proxy_failed(url: &str, message: String) -> Response<Body> {
    tracing::warn!(%url, %message, "streaming proxy failed");
    respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, message + "\n")
}

/// Runs `session` until it ends; on shutdown it gets [`super::SHUTDOWN_GRACE`] more.
/// Runs `session` on the two upgraded connections once both upgrades complete, holding the
/// connection's `slot` for as long as it lasts; at shutdown the session gets
/// [`super::SHUTDOWN_GRACE`] to end.
pub(super) fn spawn_session<S, F>(
    slot: Option<Slot>,
    client: hyper::upgrade::OnUpgrade,
    runtime: hyper::upgrade::OnUpgrade,
    shutdown: CancellationToken,
    session: S,
) where
    S: FnOnce(TokioIo<hyper::upgrade::Upgraded>, TokioIo<hyper::upgrade::Upgraded>) -> F
        + Send
        + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        // The connection's slot stays taken while its session lasts.
        let _slot = slot;
        let (client, runtime) = match tokio::join!(client, runtime) {
            (Ok(client), Ok(runtime)) => (TokioIo::new(client), TokioIo::new(runtime)),
            (client, runtime) => {
                tracing::debug!(client = ?client.err(), runtime = ?runtime.err(), "upgrade failed");
                return;
            }
        };
        let session = session(client, runtime);
        tokio::pin!(session);
        tokio::select! {
            () = &mut session => {}
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(super::SHUTDOWN_GRACE, session).await;
            }
        }
    });
}

/// Sends the client's request to the runtime's `url`; after a `101` both upgraded connections
/// are joined; any other answer is passed back as it is.
async fn proxy(
    url: &str,
    mut request: Request<Incoming>,
    shutdown: &CancellationToken,
) -> Response<Body> {
    let mut headers = hyper::HeaderMap::new();
    for (name, value) in request.headers() {
        if !CLIENT_ONLY.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    strip_token_protocol(&mut headers);
    let slot = request.extensions().get::<Slot>().cloned();
    let client_side = hyper::upgrade::on(&mut request);
    let mut answer = match ask_runtime(url, request.method().clone(), headers).await {
        Ok(answer) => answer,
        Err(message) => return proxy_failed(url, message),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return refusal(answer).await;
    }
    let runtime_side = hyper::upgrade::on(&mut answer);
    spawn_session(
        slot,
        client_side,
        runtime_side,
        shutdown.clone(),
        |mut client, mut runtime| async move {
            drop(tokio::io::copy_bidirectional(&mut client, &mut runtime).await);
        },
    );
    let (parts, _) = answer.into_parts();
    Response::from_parts(parts, Empty::new().boxed())
}
