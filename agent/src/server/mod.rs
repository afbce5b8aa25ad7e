//! The kubelet's HTTP API (upstream `pkg/kubelet/server`): the kubelet port (`address:port`,
//! TLS, authenticated and authorized), the read-only port (`readOnlyPort`, plain HTTP, off by
//! default) and the healthz port (`healthzBindAddress:healthzPort`, plain HTTP).
//!
//! - [`tls`]: certificates, client certificates, versions and suites;
//! - [`authn`] and [`authz`]: who is asking and whether they may (upstream's delegating
//!   authenticator and authorizer; the reviews go to the API server through traits the API
//!   client implements);
//! - `routes`: what is served, and on which port ([`RouteSet`]);
//! - `podlist`: the `/pods` body, kept until the list changes ([`PodListCache`]).
//!
//! Every request on the kubelet port is authenticated, then authorized: 401 `Unauthorized`
//! without acceptable credentials, 403 `Forbidden (user=…, verb=…, resource=…,
//! subresource(s)=…)` when denied, 500 when the review itself failed; each is logged with its
//! reason, and no internal detail is in the body. HTTP/1.1 and HTTP/2 (ALPN) over TLS 1.2+.
//!
//! Hardening: a TLS handshake and each HTTP/1.1 request's headers must arrive within
//! [`Limits::header_timeout`] (a slow client is dropped; the protocol is ALPN's, never guessed
//! from bytes a silent client does not send; HTTP/2 peers that stop answering pings are
//! dropped), the request head is at most
//! [`Limits::max_header_bytes`] (upstream's `MaxHeaderBytes`, 1 MiB: the URL counts), bodies are
//! read only where a route takes one and then bounded in size and time, at most
//! [`Limits::max_connections`] connections, with the sessions upgraded from them, are served
//! at once (more wait in the listen backlog) and
//! [`Limits::max_streams`] HTTP/2 streams per connection. Each connection is its own task: a
//! malformed request ends only its connection. Accept errors (descriptor exhaustion and the
//! like) are retried after a short back-off, as Go's `http.Server` does. On cancellation the
//! listener closes, idle connections close, in-flight requests finish within
//! [`SHUTDOWN_GRACE`], the rest are aborted.

#[cfg(test)]
mod auth_tests;
pub mod authn;
pub mod authz;
mod cache;
mod health;
mod logs;
#[cfg(test)]
mod parse_tests;
mod podlist;
mod query;
mod routes;
mod running;
mod setup;
mod spdy;
mod stream;
#[cfg(test)]
mod tests;
pub mod tls;
mod translate;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

pub use authn::{Authenticator, AuthnError, ReviewError, ReviewFuture, TokenReviewer, User};
pub use authz::{AccessReviewer, Attributes, Authorizer, Decision};
pub use health::{Check, HealthChecks};
pub use podlist::{PodListCache, encode_pod_list};
pub use routes::{Body, RouteSet};
pub use setup::{Planned, Reviewers, SetupError, endpoints};
pub use tls::{SERVING_CURRENT, Tls, TlsError, TlsSettings};

use crate::config::MetricKinds;
use crate::cri::Runtime;
use crate::probe::ProbeMetrics;
use crate::stats::metrics::Metrics;
use crate::stats::store::{NoStats, StatsProvider};
use crate::status::store::PodsProvider;

/// How long in-flight requests may take to finish once the server is cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause after a failed accept.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Everything the server serves.
#[derive(Clone)]
pub struct Providers {
    pub pods: Arc<dyn PodsProvider>,
    pub stats: Arc<dyn StatsProvider>,
    pub metrics: Arc<Metrics>,
    /// What the probes counted (`/metrics/probes`).
    pub probes: Arc<ProbeMetrics>,
    /// The metric kinds `/metrics/cadvisor` serves (`--disable-metrics` takes some away).
    pub metric_kinds: MetricKinds,
    /// The container runtime, for logs and streaming; `None` answers those routes with 503.
    pub runtime: Option<Runtime>,
    /// `/healthz`'s named checks.
    pub health: HealthChecks,
    /// The `/configz` document ([`crate::config::configz`]); `Null` serves `{}`.
    pub configz: Arc<serde_json::Value>,
    /// The last `/pods` body, kept until the list changes.
    pub pod_list: PodListCache,
}

impl Providers {
    /// `pods`, no stats yet, and a fresh [`Metrics`].
    #[must_use]
    pub fn new(pods: Arc<dyn PodsProvider>) -> Self {
        Self {
            pods,
            stats: Arc::new(NoStats),
            metrics: Arc::new(Metrics::new()),
            probes: Arc::new(ProbeMetrics::new()),
            metric_kinds: MetricKinds::ALL,
            runtime: None,
            health: HealthChecks::default(),
            configz: Arc::new(serde_json::Value::Null),
            pod_list: PodListCache::default(),
        }
    }
}

impl From<Arc<dyn PodsProvider>> for Providers {
    fn from(pods: Arc<dyn PodsProvider>) -> Self {
        Self::new(pods)
    }
}

/// Who may do what on an endpoint.
pub struct Access {
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
    /// The node's name: the `nodes` object every request is authorized against.
    pub node_name: String,
}

impl Access {
    /// Anyone, anything: the read-only and healthz ports (upstream installs no auth filter
    /// there).
    #[must_use]
    pub fn open() -> Self {
        Self {
            authenticator: Authenticator::anonymous_only(),
            authorizer: Authorizer::AlwaysAllow,
            node_name: String::new(),
        }
    }
}

/// Bounds on what one client can take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The TLS handshake and each request's head must arrive within this.
    pub header_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_READ_TIMEOUT,
            max_header_bytes: 1 << 20,
            max_connections: 1024,
            max_streams: 250,
        }
    }
}

/// One listening endpoint: its transport, its access rules and its routes.
pub struct Endpoint {
    /// `None`: plain HTTP.
    pub tls: Option<Tls>,
    pub access: Access,
    pub routes: RouteSet,
    pub limits: Limits,
}

impl Endpoint {
    /// Plain HTTP, open to anyone, serving `routes` (the read-only and healthz ports).
    #[must_use]
    pub fn plain(routes: RouteSet) -> Self {
        Self {
            tls: None,
            access: Access::open(),
            routes,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the server's listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `listener` as `endpoint` until `cancel` fires, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    providers: Providers,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    let shutdown = cancel.child_token();
    let slots = Arc::new(Semaphore::new(endpoint.limits.max_connections));
    let mut connections = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        // A free slot first: beyond the cap, clients wait in the backlog.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    let (endpoint, providers, shutdown) =
                        (endpoint.clone(), providers.clone(), shutdown.clone());
                    connections.spawn(async move {
                        // Held by the connection, and by any session it upgrades to.
                        let slot = Slot(Arc::new(slot));
                        accept(stream, peer, slot, endpoint, providers, shutdown).await;
                    });
                }
                Err(error) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                    tracing::warn!(%error, retry_in = ?backoff, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections still busy after the shutdown grace period; aborting them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The TLS handshake (bounded in time) if any, then the connection's requests.
async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    endpoint: Arc<Endpoint>,
    providers: Providers,
    shutdown: CancellationToken,
) {
    // As Go's net/http: a response is not held back waiting for the client's ACK (Nagle).
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let Some(tls) = &endpoint.tls else {
        let http = Http { h2: false, slot };
        serve_connection(
            stream,
            peer,
            Arc::default(),
            http,
            endpoint,
            providers,
            shutdown,
        )
        .await;
        return;
    };
    let handshake =
        tokio::time::timeout(endpoint.limits.header_timeout, tls.acceptor.accept(stream));
    let stream = tokio::select! {
        () = shutdown.cancelled() => return,
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        },
    };
    let chain: Arc<[CertificateDer<'static>]> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    // The protocol is the one ALPN agreed: no guessing from the first bytes, which would wait
    // without a time limit.
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let http = Http { h2, slot };
    serve_connection(stream, peer, chain, http, endpoint, providers, shutdown).await;
}

/// A connection's slot under [`Limits::max_connections`]: released when the connection and
/// every session upgraded from it have ended.
#[derive(Clone)]
pub(super) struct Slot(#[expect(dead_code, reason = "held, never read")] Arc<OwnedSemaphorePermit>);

/// How a connection speaks HTTP.
struct Http {
    h2: bool,
    slot: Slot,
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    chain: Arc<[CertificateDer<'static>]>,
    http: Http,
    endpoint: Arc<Endpoint>,
    providers: Providers,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = endpoint.limits;
    let sessions = shutdown.clone();
    let slot = http.slot;
    let service = service_fn(move |mut request: Request<Incoming>| {
        let (endpoint, providers, chain) = (endpoint.clone(), providers.clone(), chain.clone());
        let sessions = sessions.clone();
        request.extensions_mut().insert(slot.clone());
        async move {
            let response = handle(request, &endpoint, &providers, &chain, &sessions).await;
            Ok::<_, Infallible>(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut builder = if http.h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        // A peer that stops answering pings is gone.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// The auth filter (upstream `InstallAuthFilter`), then the routes.
async fn handle(
    request: Request<Incoming>,
    endpoint: &Endpoint,
    providers: &Providers,
    chain: &[CertificateDer<'static>],
    shutdown: &CancellationToken,
) -> Response<Body> {
    let access = &endpoint.access;
    let user = match access
        .authenticator
        .authenticate(chain, request.headers())
        .await
    {
        Ok(user) => user,
        Err(error) => {
            tracing::info!(path = request.uri().path(), %error, "unauthorized request");
            return routes::respond(StatusCode::UNAUTHORIZED, routes::TEXT, "Unauthorized");
        }
    };
    let path = request.uri().path();
    match access
        .authorizer
        .authorize(&user, request.method(), path, &access.node_name)
        .await
    {
        Ok((decision, _)) if decision.allowed => {}
        Ok((decision, attributes)) => {
            tracing::info!(
                user = %user.name, verb = attributes.verb, path,
                reason = %decision.reason, "forbidden request"
            );
            // Go's `%v` of a string slice: `[pods proxy]`.
            let subresources = authz::subresources(path).join(" ");
            return routes::respond(
                StatusCode::FORBIDDEN,
                routes::TEXT,
                format!(
                    "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{subresources}])",
                    user.name, attributes.verb
                ),
            );
        }
        Err(error) => {
            tracing::warn!(user = %user.name, path, %error, "authorization review failed");
            return routes::respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                routes::TEXT,
                format!(
                    "Authorization error (user={}, verb={}, resource=nodes, subresource(s)=[{}])",
                    user.name,
                    authz::verb(request.method()),
                    authz::subresources(path).join(" ")
                ),
            );
        }
    }
    routes::handle(request, providers, endpoint.routes, shutdown).await
}
