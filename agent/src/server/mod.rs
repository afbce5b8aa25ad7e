//! The kubelet's HTTP API, first cut: plain HTTP/1.1 (TLS and authentication come later).
//!
//! Endpoints, after upstream's `pkg/kubelet/server/server.go`:
//! - `GET /pods`: the pods bound to this node as a `v1.PodList` (`getPods` / `encodePods`):
//!   `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[...]}`, the items without their
//!   own `kind` / `apiVersion`, as Go's codec writes a typed list, and a trailing newline;
//!   503 while kernlet starts and the list could still miss running pods;
//! - `GET /healthz`: `ok`;
//! - `GET` or `POST /stats/summary` (`pkg/kubelet/server/stats/handler.go`): the
//!   [`Summary`](summary::Summary) as pretty JSON; `only_cpu_and_memory=true` (in the query, or
//!   in a form-encoded POST body, exactly once) serves the CPU-and-memory subset. Without stats the
//!   answer is upstream's `500 Internal Error: <reason>`;
//! - `/metrics`, `/metrics/cadvisor`, `/metrics/resource`, `/metrics/probes` (any method, as Go's `promhttp`
//!   handlers take): Prometheus text format 0.0.4, see [`crate::stats::metrics`]; without stats
//!   they still answer 200, with `resource_scrape_error 1` / `container_scrape_error 1`;
//! - any other path: 404 `404 page not found` (Go's `http.NotFound`); another method on a known
//!   path: 405.
//!
//! What is served comes from [`Providers`]: the pods, the stats ([`StatsProvider`]) and
//! kernlet's own [`Metrics`].
//!
//! Each connection is served by its own task; a malformed request only ends its connection
//! (hyper answers 400). Accept errors (descriptor exhaustion and the like) are retried after a
//! short back-off, as Go's `http.Server` does. On cancellation the listener closes, idle
//! connections close, in-flight requests finish within [`SHUTDOWN_GRACE`], the rest are aborted.

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderMap, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{MetricKinds, UnknownMetricKind};
use crate::probe::ProbeMetrics;
use crate::stats::metrics::{self, Metrics};
use crate::stats::store::{NoStats, StatsProvider};
use crate::stats::summary;
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
        }
    }
}

impl From<Arc<dyn PodsProvider>> for Providers {
    fn from(pods: Arc<dyn PodsProvider>) -> Self {
        Self::new(pods)
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

/// Serves `listener` until `cancel` fires, then shuts down gracefully. `providers` is a
/// [`Providers`], or just the pods provider (then no stats and empty own metrics).
pub async fn serve(
    listener: TcpListener,
    providers: impl Into<Providers>,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    let providers = providers.into();
    let shutdown = cancel.child_token();
    let mut connections = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        providers.clone(),
                        shutdown.clone(),
                    ));
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

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    providers: Providers,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let providers = providers.clone();
        async move { Ok::<_, Infallible>(handle(request, &providers).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
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

type Body = Full<Bytes>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type.starts_with("text/") {
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    response
}

const TEXT: &str = "text/plain; charset=utf-8";
/// The most of a `POST /stats/summary` body that is read (Go's `ParseForm` reads 10 MB).
const MAX_FORM_BODY: usize = 1 << 20;

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        "405: Method Not Allowed",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

async fn handle(request: Request<Incoming>, providers: &Providers) -> Response<Body> {
    let (parts, body) = request.into_parts();
    if parts.uri.path() != "/stats/summary" || parts.method != Method::POST {
        return route(
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            None,
            providers,
        );
    }
    let form = if is_form(&parts.headers) {
        match Limited::new(body, MAX_FORM_BODY).collect().await {
            Ok(collected) => Some(collected.to_bytes()),
            Err(error) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("cannot read the request body: {error}\n"),
                );
            }
        }
    } else {
        None
    };
    route(
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        form.as_deref(),
        providers,
    )
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    form: Option<&[u8]>,
    providers: &Providers,
) -> Response<Body> {
    match path {
        "/pods" | "/healthz" if method != Method::GET => method_not_allowed("GET"),
        "/stats/summary" if method != Method::GET && method != Method::POST => {
            method_not_allowed("GET, POST")
        }
        "/pods" if !providers.pods.complete() => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "kernlet is starting: the pod list is not complete yet\n",
        ),
        "/pods" => match encode_pod_list(&providers.pods.pods()) {
            Ok(body) => respond(StatusCode::OK, "application/json", body),
            Err(error) => {
                tracing::error!(%error, "cannot encode the pod list");
                respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot encode the pod list: {error}\n"),
                )
            }
        },
        "/healthz" => respond(StatusCode::OK, TEXT, "ok"),
        "/stats/summary" => stats_summary(providers, only_cpu_and_memory(query, form)),
        "/metrics" => metrics_response(providers.metrics.render()),
        "/metrics/probes" => metrics_response(metrics::probes::render(&providers.probes)),
        "/metrics/resource" => {
            let summary = providers.stats.summary();
            metrics_response(metrics::resource::render(summary.as_ref()))
        }
        "/metrics/cadvisor" => match scraped_kinds(query) {
            Ok(chosen) => {
                let snapshot = providers.stats.cadvisor();
                metrics_response(metrics::cadvisor::render(
                    snapshot.as_ref(),
                    crate::clock::wall(),
                    providers.metric_kinds.and(chosen),
                ))
            }
            Err(error) => respond(
                StatusCode::BAD_REQUEST,
                TEXT,
                format!("collect[]: {error}\n"),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, TEXT, "404 page not found\n"),
    }
}

/// The kinds a scrape asks for with `collect[]=kind` (repeatable, as Prometheus exporters take
/// a scrape config's `params`); all when it names none.
fn scraped_kinds(query: Option<&str>) -> Result<MetricKinds, UnknownMetricKind> {
    let names: Vec<String> = query_values(query, "collect[]").collect();
    if names.is_empty() {
        return Ok(MetricKinds::ALL);
    }
    MetricKinds::parse(names.iter().map(String::as_str))
}

/// The decoded values of `key` in the url-encoded `query`.
fn query_values<'a>(query: Option<&'a str>, key: &'a str) -> impl Iterator<Item = String> + 'a {
    query
        .into_iter()
        .flat_map(|encoded| encoded.split('&'))
        .filter_map(move |pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(name) == key).then(|| url_decode(value))
        })
}

/// Upstream's test: `only_cpu_and_memory` given exactly once (form body and query together,
/// as Go's `Request.Form`), and equal to `true`.
fn only_cpu_and_memory(query: Option<&str>, form: Option<&[u8]>) -> bool {
    const KEY: &str = "only_cpu_and_memory";
    let form = form.map(String::from_utf8_lossy);
    let values: Vec<String> = query_values(form.as_deref(), KEY)
        .chain(query_values(query, KEY))
        .collect();
    values.len() == 1 && values[0] == "true"
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn stats_summary(providers: &Providers, only_cpu_and_memory: bool) -> Response<Body> {
    let summary = match providers.stats.summary() {
        Ok(summary) if only_cpu_and_memory => summary.cpu_and_memory_only(),
        Ok(summary) => summary,
        Err(error) => {
            tracing::warn!(%error, "cannot serve /stats/summary");
            return respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("Internal Error: {error}"),
            );
        }
    };
    match summary::encode(&summary) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(error) => {
            tracing::error!(%error, "cannot encode the summary");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("Internal Error: {error}"),
            )
        }
    }
}

fn metrics_response(rendered: Result<String, metrics::MetricsError>) -> Response<Body> {
    match rendered {
        Ok(text) => respond(StatusCode::OK, metrics::CONTENT_TYPE, text),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot render metrics: {error}\n"),
            )
        }
    }
}

/// `encodePods`: the `v1.PodList` JSON upstream's kubelet serves for `pods`. Its items carry no
/// `apiVersion` or `kind`.
///
/// Each pod is written straight to the output: k8s-openapi writes a `Pod`'s `apiVersion` and
/// `kind` first, so they are cut as the leading bytes. Going through a `serde_json::Value` to
/// drop them instead was most of the answer's time (165 of about 220 µs for 110 small pods, now
/// 26: every string copied, every object built as a map); a pod that does not start as
/// expected still takes that way.
pub fn encode_pod_list(pods: &[Pod]) -> Result<Vec<u8>, serde_json::Error> {
    const TYPE_META: &[u8] = br#"{"apiVersion":"v1","kind":"Pod""#;
    let mut out = br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":["#.to_vec();
    for (index, pod) in pods.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let start = out.len();
        serde_json::to_writer(&mut out, pod)?;
        let item = &out[start..];
        if item.starts_with(TYPE_META) {
            // `{"apiVersion":"v1","kind":"Pod",` becomes `{`; a pod of nothing else `{}`.
            let end = start
                + TYPE_META.len()
                + usize::from(out.get(start + TYPE_META.len()) == Some(&b','));
            out.drain(start + 1..end);
        } else {
            out.truncate(start);
            let mut value = serde_json::to_value(pod)?;
            if let Some(fields) = value.as_object_mut() {
                fields.remove("apiVersion");
                fields.remove("kind");
            }
            serde_json::to_writer(&mut out, &value)?;
        }
    }
    out.extend_from_slice(b"]}\n");
    Ok(out)
}
