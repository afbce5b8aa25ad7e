//! The kubelet port over real TLS on 127.0.0.1 with real TLS clients: certificates,
//! authentication, authorization, HTTP/2, slow clients, and the endpoints a config asks for.
//!
//! The API server's reviews are test doubles (`TokenReviewDouble`, `AccessReviewDouble`): the
//! real `TokenReview`/`SubjectAccessReview` client comes with cluster mode.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hyper::StatusCode;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, pem::PemObject},
};

use super::*;
use crate::config::{KubeletConfig, TlsVersion};

/// A CA that signs client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("client-ca.crt");
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }

    /// A client certificate for `user` in `groups`.
    fn client(&self, user: &str, groups: &[&str]) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A test double of the API server's `TokenReview`: one good token.
struct TokenReviewDouble;

impl TokenReviewer for TokenReviewDouble {
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a, Option<User>> {
        Box::pin(async move {
            Ok((token == "good-token").then(|| User {
                name: "token-user".to_owned(),
                groups: vec!["system:authenticated".to_owned()],
                ..User::default()
            }))
        })
    }
}

/// A test double of the API server's `SubjectAccessReview`: denies `bob`, allows the rest,
/// and records what it was asked.
#[derive(Default)]
struct AccessReviewDouble {
    asked: Mutex<Vec<(String, &'static str, &'static str, String)>>,
}

impl AccessReviewer for AccessReviewDouble {
    fn review<'a>(&'a self, a: &'a Attributes) -> ReviewFuture<'a, Decision> {
        self.asked.lock().unwrap().push((
            a.user.name.clone(),
            a.verb,
            a.subresource,
            a.name.clone(),
        ));
        let allowed = a.user.name != "bob";
        Box::pin(async move {
            Ok(Decision {
                allowed,
                reason: if allowed { "" } else { "bob may not" }.to_owned(),
            })
        })
    }
}

struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Server {
    fn serving_ca(&self) -> PathBuf {
        self.dir.path().join("pki/kubelet.crt")
    }
}

/// The kubelet port with a generated certificate, client certificates from `ca`, the token
/// double, and the access double (or `AlwaysAllow`).
async fn start(
    ca: &Ca,
    access: Option<Arc<AccessReviewDouble>>,
    anonymous: bool,
    tune: impl FnOnce(&mut TlsSettings, &mut Limits),
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TlsSettings {
        cert_dir: dir.path().join("pki"),
        client_ca_file: Some(ca.write(dir.path())),
        host_name: "node-a".to_owned(),
        ..TlsSettings::default()
    };
    let mut limits = Limits::default();
    tune(&mut settings, &mut limits);
    let tls = tls::build(&settings).unwrap();
    let tokens: Arc<dyn TokenReviewer> = Arc::new(TokenReviewDouble);
    let authorizer = match access {
        Some(double) => {
            Authorizer::webhook(double, Duration::from_mins(5), Duration::from_secs(30))
        }
        None => Authorizer::AlwaysAllow,
    };
    let endpoint = Endpoint {
        access: Access {
            authenticator: Authenticator::new(
                tls.client_ca.clone(),
                Some((tokens, Duration::from_mins(2))),
                anonymous,
            ),
            authorizer,
            node_name: "node-a".to_owned(),
        },
        tls: Some(tls),
        routes: RouteSet::Full,
        limits,
    };
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let pods: Arc<dyn PodsProvider> = Arc::new(Vec::new);
    tokio::spawn(serve(
        listener,
        Arc::new(endpoint),
        Providers::new(pods),
        cancel.clone(),
    ));
    Server { addr, cancel, dir }
}

fn connector(
    serving_ca: &Path,
    identity: Option<&Identity>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(serving_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_protocol_versions(versions).with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// `GET path` over HTTP/1.1 with `extra` headers: the status and the body.
async fn get(
    server: &Server,
    identity: Option<&Identity>,
    extra: &str,
    path: &str,
) -> (u16, String) {
    let connector = connector(&server.serving_ca(), identity, rustls::ALL_VERSIONS, &[]);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn unauthenticated_and_foreign_certificates_get_401() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, false, |_, _| {}).await;
    assert_eq!(
        get(&server, None, "", "/pods").await,
        (401, "Unauthorized".to_owned())
    );
    let stranger = Ca::new("another ca").client("alice", &["admins"]);
    assert_eq!(get(&server, Some(&stranger), "", "/pods").await.0, 401);
    let bad_token = "Authorization: Bearer wrong\r\n";
    assert_eq!(get(&server, None, bad_token, "/pods").await.0, 401);
    let alice = ca.client("alice", &["admins"]);
    assert_eq!(get(&server, Some(&alice), "", "/pods").await.0, 200);
    let good_token = "Authorization: bearer good-token\r\n";
    assert_eq!(
        get(&server, None, good_token, "/healthz").await,
        (200, "ok".to_owned())
    );
}

#[tokio::test]
async fn anonymous_when_enabled_but_bad_credentials_still_fail() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, true, |_, _| {}).await;
    assert_eq!(get(&server, None, "", "/healthz").await.0, 200);
    let bad_token = "Authorization: Bearer wrong\r\n";
    assert_eq!(get(&server, None, bad_token, "/healthz").await.0, 401);
    let stranger = Ca::new("another ca").client("alice", &[]);
    assert_eq!(get(&server, Some(&stranger), "", "/healthz").await.0, 401);
}

#[tokio::test]
async fn the_webhook_authorizer_denies_with_403_and_caches() {
    let ca = Ca::new("clients");
    let double = Arc::new(AccessReviewDouble::default());
    let server = start(&ca, Some(double.clone()), false, |_, _| {}).await;
    let bob = ca.client("bob", &["devs"]);
    let (status, body) = get(&server, Some(&bob), "", "/pods").await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[pods proxy])"
    );
    let alice = ca.client("alice", &["admins"]);
    assert_eq!(get(&server, Some(&alice), "", "/metrics").await.0, 200);
    assert_eq!(get(&server, Some(&alice), "", "/metrics").await.0, 200);
    assert_eq!(get(&server, Some(&alice), "", "/healthz").await.0, 200);
    let asked = double.asked.lock().unwrap().clone();
    let expected = [
        ("bob", "get", "pods"),
        ("bob", "get", "proxy"),
        ("alice", "get", "metrics"),
        ("alice", "get", "healthz"),
    ];
    let asked: Vec<_> = asked
        .iter()
        .map(|(user, verb, sub, node)| {
            assert_eq!(node, "node-a");
            (user.as_str(), *verb, *sub)
        })
        .collect();
    // The second /metrics came from the cache.
    assert_eq!(asked, expected);
}

/// Whether a TLS handshake with the server at `addr` succeeds, `ca_file` as the only root.
async fn handshake_ok(addr: std::net::SocketAddr, ca_file: PathBuf) -> bool {
    let connector = connector(&ca_file, None, rustls::ALL_VERSIONS, &[]);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn the_generated_certificate_is_kept_and_files_are_reloaded() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, true, |_, _| {}).await;
    let first = std::fs::read(server.serving_ca()).unwrap();
    // Built again on the same cert dir, the pair is reused.
    let settings = TlsSettings {
        cert_dir: server.dir.path().join("pki"),
        host_name: "node-a".to_owned(),
        ..TlsSettings::default()
    };
    tls::build(&settings).unwrap();
    assert_eq!(std::fs::read(server.serving_ca()).unwrap(), first);

    // Given files: a replaced pair is served without a restart.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write_pair = |host: &str| {
        let (chain, key_pem) = tls::generate(host, &[]).unwrap();
        std::fs::write(&cert, chain).unwrap();
        std::fs::write(&key, key_pem).unwrap();
    };
    write_pair("first");
    let server = start(&ca, None, true, |s, _| {
        s.cert_file = Some(cert.clone());
        s.key_file = Some(key.clone());
    })
    .await;
    let handshake_ok = |ca_file: PathBuf| handshake_ok(server.addr, ca_file);
    assert!(handshake_ok(cert.clone()).await);
    let old = dir.path().join("old.crt");
    std::fs::copy(&cert, &old).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write_pair("second");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first handshake after the change notices it; the new CA then verifies.
    let _ = handshake_ok(cert.clone()).await;
    assert!(handshake_ok(cert.clone()).await, "the new pair is served");
    assert!(
        !handshake_ok(old).await,
        "the old pair is not served any more"
    );
}

#[tokio::test]
async fn a_requested_certificate_is_served_once_it_is_written() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, true, |s, _| s.bootstrap = true).await;
    let handshake_ok = |ca_file: PathBuf| handshake_ok(server.addr, ca_file);
    let pki = server.dir.path().join("pki");
    assert!(
        !pki.join("kubelet.crt").exists(),
        "no self-signed pair is made"
    );
    let chain = pki.join("chain.pem");
    let (pem, key_pem) = tls::generate("node-a", &[]).unwrap();
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::write(&chain, &pem).unwrap();
    assert!(!handshake_ok(chain.clone()).await, "nothing to serve yet");
    // As cluster mode writes it: certificate and key in one file.
    std::fs::write(pki.join(tls::SERVING_CURRENT), pem + &key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(handshake_ok(chain).await, "served from the next handshake");
}

#[tokio::test]
async fn tls_min_version_and_http2() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, true, |s, _| {
        s.min_version = Some(TlsVersion::Tls13);
    })
    .await;
    let tls12 = connector(&server.serving_ca(), None, &[&rustls::version::TLS12], &[]);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(
        tls12.connect(name.clone(), tcp).await.is_err(),
        "TLS 1.2 refused"
    );

    let h2 = connector(&server.serving_ca(), None, rustls::ALL_VERSIONS, &[b"h2"]);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let stream = h2.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://localhost/healthz")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_clients_are_dropped_and_others_served() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, true, |_, limits| {
        limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    // Connects and never starts the handshake.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Completes the handshake, then sends half a request head.
    let connector = connector(&server.serving_ca(), None, rustls::ALL_VERSIONS, &[]);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut slow = connector.connect(name, tcp).await.unwrap();
    slow.write_all(b"GET /pods HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Meanwhile another client is served.
    assert_eq!(get(&server, None, "", "/healthz").await.0, 200);
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "silent client dropped: {closed:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "slow-header client dropped");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
}

#[tokio::test]
async fn a_huge_request_head_is_refused_without_harm() {
    let ca = Ca::new("clients");
    let server = start(&ca, None, true, |_, limits| {
        limits.max_header_bytes = 16 * 1024;
    })
    .await;
    let long = format!("/pods?{}", "a".repeat(64 * 1024));
    let connector = connector(&server.serving_ca(), None, rustls::ALL_VERSIONS, &[]);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!("GET {long} HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = tls.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert_eq!(get(&server, None, "", "/healthz").await.0, 200);
}

#[test]
fn subresources_and_verbs_are_upstream_s() {
    use super::authz::{subresources, verb};
    let cases: [(&str, &[&str]); 14] = [
        ("/pods", &["pods", "proxy"]),
        ("/pods/", &["pods", "proxy"]),
        ("/podsx", &["proxy"]),
        ("/runningpods/", &["pods", "proxy"]),
        ("/runningpods", &["pods", "proxy"]),
        ("/logs", &["log"]),
        ("/healthz", &["healthz", "proxy"]),
        ("/healthz/syncloop", &["healthz", "proxy"]),
        ("/configz", &["configz", "proxy"]),
        ("/stats/summary", &["stats"]),
        ("/metrics/cadvisor", &["metrics"]),
        ("/logs/syslog", &["log"]),
        ("/containerLogs/ns/pod/c", &["proxy"]),
        ("/exec/ns/pod/c", &["proxy"]),
    ];
    for (path, expected) in cases {
        assert_eq!(subresources(path), expected, "{path}");
    }
    assert_eq!(verb(&hyper::Method::GET), "get");
    assert_eq!(verb(&hyper::Method::POST), "create");
    assert_eq!(verb(&hyper::Method::PUT), "update");
    assert_eq!(verb(&hyper::Method::PATCH), "patch");
    assert_eq!(verb(&hyper::Method::DELETE), "delete");
    assert_eq!(verb(&hyper::Method::HEAD), "");
}

#[test]
fn endpoints_follow_the_config_and_webhooks_need_an_api_client() {
    let mut config = KubeletConfig::default();
    let dir = tempfile::tempdir().unwrap();
    config.cert_dir = dir.path().to_owned();
    config.node_name = "node-a".to_owned();
    let error = endpoints(&config, &[], None).err().unwrap().to_string();
    assert!(
        error.contains("cannot use webhook authentication"),
        "{error}"
    );
    assert!(
        error.contains("authentication.webhook.enabled: false"),
        "{error}"
    );
    config.authentication.webhook_enabled = false;
    let error = endpoints(&config, &[], None).err().unwrap().to_string();
    assert!(error.contains("authorization.mode: AlwaysAllow"), "{error}");
    config.authorization.mode = crate::config::AuthorizationMode::AlwaysAllow;
    let names = |planned: &[Planned]| -> BTreeSet<(&'static str, u16, bool)> {
        planned
            .iter()
            .map(|p| (p.name, p.addr.port(), p.endpoint.tls.is_some()))
            .collect()
    };
    let planned = endpoints(&config, &[], None).unwrap();
    assert_eq!(
        names(&planned),
        BTreeSet::from([("kubelet", 10250, true), ("healthz", 10248, false)])
    );
    let healthz = planned.iter().find(|p| p.name == "healthz").unwrap();
    assert_eq!(healthz.addr.ip().to_string(), "127.0.0.1");
    config.read_only_port = 10255;
    config.healthz_port = 0;
    let planned = endpoints(&config, &[], None).unwrap();
    assert_eq!(
        names(&planned),
        BTreeSet::from([("kubelet", 10250, true), ("read-only", 10255, false)])
    );
}

#[test]
fn route_sets_serve_what_upstream_serves_per_port() {
    for path in [
        "/pods",
        "/healthz",
        "/stats/summary",
        "/metrics",
        "/metrics/cadvisor",
    ] {
        assert!(RouteSet::ReadOnly.serves(path), "{path}");
    }
    for path in [
        "/configz",
        "/runningpods/",
        "/containerLogs/a/b/c",
        "/exec/a/b/c",
        "/portForward/a/b",
    ] {
        assert!(!RouteSet::ReadOnly.serves(path), "{path}");
        assert!(RouteSet::Full.serves(path), "{path}");
    }
    assert!(RouteSet::Healthz.serves("/healthz"));
    assert!(!RouteSet::Healthz.serves("/pods"));
}

#[tokio::test]
async fn tokens_without_a_reviewer_are_ignored_and_users_are_authenticated() {
    use hyper::header::{AUTHORIZATION, HeaderMap};
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
    let open = Authenticator::anonymous_only();
    let user = open.authenticate(&[], &headers).await.unwrap();
    assert_eq!(user, User::anonymous());
    let strict = Authenticator::new(None, None, false);
    assert_eq!(
        strict.authenticate(&[], &headers).await,
        Err(AuthnError::NoCredentials)
    );
    let reviewer: Arc<dyn TokenReviewer> = Arc::new(TokenReviewDouble);
    let tokens = Authenticator::new(None, Some((reviewer, Duration::from_mins(1))), false);
    headers.insert(AUTHORIZATION, "bearer good-token".parse().unwrap());
    let user = tokens.authenticate(&[], &headers).await.unwrap();
    assert_eq!(user.name, "token-user");
    assert_eq!(
        user.groups
            .iter()
            .filter(|g| *g == "system:authenticated")
            .count(),
        1
    );
    // Upstream splits on single spaces: a second space leaves an empty token, which is none.
    headers.insert(AUTHORIZATION, "Bearer  good-token".parse().unwrap());
    assert_eq!(
        tokens.authenticate(&[], &headers).await,
        Err(AuthnError::NoCredentials)
    );
}

#[tokio::test]
async fn a_websocket_may_carry_its_token_as_a_subprotocol() {
    use hyper::header::{CONNECTION, HeaderMap, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
    let reviewer: Arc<dyn TokenReviewer> = Arc::new(TokenReviewDouble);
    let tokens = Authenticator::new(None, Some((reviewer, Duration::from_mins(1))), false);
    let with = |protocols: &str, websocket: bool| {
        let mut headers = HeaderMap::new();
        headers.insert(SEC_WEBSOCKET_PROTOCOL, protocols.parse().unwrap());
        if websocket {
            headers.insert(CONNECTION, "Upgrade".parse().unwrap());
            headers.insert(UPGRADE, "websocket".parse().unwrap());
        }
        headers
    };
    // "good-token" in base64url without padding.
    let good = "base64url.bearer.authorization.k8s.io.Z29vZC10b2tlbg";
    let headers = with(&format!("v5.channel.k8s.io, {good}"), true);
    let user = tokens.authenticate(&[], &headers).await.unwrap();
    assert_eq!(user.name, "token-user");

    let refused = |message: &'static str| Err(AuthnError::ProtocolToken(message));
    for (protocols, want) in [
        (good.to_owned(), refused("missing additional subprotocol")),
        (
            format!("v5.channel.k8s.io,{good},{good}"),
            refused("multiple base64.bearer.authorization tokens specified"),
        ),
        (
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.Z29v=".to_owned(),
            refused("invalid base64.bearer.authorization token encoding"),
        ),
        (
            // 0xff 0xfe: not UTF-8.
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io._-4".to_owned(),
            refused("invalid base64.bearer.authorization token"),
        ),
        (
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.YmFk".to_owned(),
            Err(AuthnError::InvalidToken),
        ),
    ] {
        let answer = tokens.authenticate(&[], &with(&protocols, true)).await;
        assert_eq!(
            answer.map(|u| u.name),
            want.map(|u: User| u.name),
            "{protocols}"
        );
    }
    // Only a WebSocket request carries one; an `Authorization` header comes first.
    let plain = with(&format!("v5.channel.k8s.io, {good}"), false);
    assert_eq!(
        tokens.authenticate(&[], &plain).await,
        Err(AuthnError::NoCredentials)
    );
    let mut both = with(&format!("v5.channel.k8s.io, {good}"), true);
    both.insert(
        hyper::header::AUTHORIZATION,
        "Bearer wrong".parse().unwrap(),
    );
    assert_eq!(
        tokens.authenticate(&[], &both).await,
        Err(AuthnError::InvalidToken)
    );
}
