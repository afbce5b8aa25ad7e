//! The kubelet's routes, after upstream's `pkg/kubelet/server/server.go`.
//!
//! - `GET /pods`: the pods bound to this node as a `v1.PodList` (`getPods` / `encodePods`):
//!   `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[...]}`, the items without their
//!   own `kind` / `apiVersion`, as Go's codec writes a typed list, and a trailing newline;
//!   503 while kernlet starts and the list could still miss running pods;
//! - `GET /healthz` and `/healthz/<check>`: the named checks (`ok` when healthy; `health`);
//! - `GET` or `POST /stats/summary` (`pkg/kubelet/server/stats/handler.go`): the
//!   [`Summary`](summary::Summary) as pretty JSON; `only_cpu_and_memory=true` (in the query, or
//!   in a form-encoded POST body, exactly once) serves the CPU-and-memory subset. Without stats the
//!   answer is upstream's `500 Internal Error: <reason>`;
//! - `/metrics`, `/metrics/cadvisor`, `/metrics/resource`, `/metrics/probes` (any method, as Go's
//!   `promhttp` handlers take): Prometheus text format 0.0.4, see [`crate::stats::metrics`];
//!   without stats they still answer 200, with `resource_scrape_error 1` /
//!   `container_scrape_error 1`;
//! - `GET /configz`: `{"kubeletconfig": {...}}`, the effective configuration in upstream's
//!   v1beta1 shape;
//! - `GET /runningpods/`: the runtime's running pods (`running`);
//! - `/containerLogs/...` (`logs`), `/exec/...`, `/attach/...`, `/portForward/...` (`stream`);
//! - any other path: 404 `404 page not found` (Go's `http.NotFound`); another method on a known
//!   path: 405.
//!
//! Which routes an endpoint serves is its [`RouteSet`]: the read-only port serves upstream's
//! default handlers only, the healthz port only `/healthz`.

use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderMap, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, Response, StatusCode};

use super::Providers;
use super::query::query_values;
use super::stream::{Kind, stream};
use crate::config::{MetricKinds, UnknownMetricKind};
use crate::stats::metrics;
use crate::stats::summary;

/// Which routes an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSet {
    /// The kubelet port: everything.
    Full,
    /// Upstream's default handlers (`/healthz`, `/pods`, `/stats/`, `/metrics*`), none of the
    /// debugging ones: the read-only port.
    ReadOnly,
    /// `healthzPort`: `/healthz` only.
    Healthz,
    /// The kubelet port with `enableDebuggingHandlers: false`: the default routes, and 405
    /// `Debug endpoints are disabled.` on the debugging ones.
    NoDebugging,
}

impl RouteSet {
    /// Whether `path` is served here (else a 404).
    #[must_use]
    pub fn serves(self, path: &str) -> bool {
        match self {
            Self::Full => true,
            Self::ReadOnly => {
                matches!(
                    path,
                    "/healthz"
                        | "/pods"
                        | "/metrics"
                        | "/metrics/cadvisor"
                        | "/metrics/resource"
                        | "/metrics/probes"
                ) || path.starts_with("/stats/")
                    || path.starts_with("/healthz/")
            }
            Self::Healthz => path == "/healthz" || path.starts_with("/healthz/"),
            Self::NoDebugging => Self::ReadOnly.serves(path),
        }
    }
}

/// The debugging handlers' paths (upstream `InstallDebuggingHandlers`).
fn is_debugging(path: &str) -> bool {
    [
        "/run/",
        "/exec/",
        "/attach/",
        "/portForward/",
        "/containerLogs/",
        "/runningpods/",
        "/debug/pprof/",
        "/logs/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix) || path == prefix.trim_end_matches('/'))
}

fn method_not_allowed_text(text: &'static str) -> Response<Body> {
    respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, text)
}

/// A response body: whole, or streamed.
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type.starts_with("text/") {
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    response
}

pub(super) const TEXT: &str = "text/plain; charset=utf-8";
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

/// Serves `request` on routes `set`.
pub(super) async fn handle(
    request: Request<Incoming>,
    providers: &Providers,
    set: RouteSet,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Response<Body> {
    if set == RouteSet::NoDebugging && is_debugging(request.uri().path()) {
        // Upstream's `InstallDebuggingDisabledHandlers`.
        return method_not_allowed_text("Debug endpoints are disabled.\n");
    }
    if !set.serves(request.uri().path()) {
        return not_found();
    }
    let path = request.uri().path().to_owned();
    for (prefix, kind) in [
        ("/exec/", Kind::Exec),
        ("/attach/", Kind::Attach),
        ("/portForward/", Kind::PortForward),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            if request.method() != Method::GET && request.method() != Method::POST {
                return method_not_allowed("GET, POST");
            }
            return stream(kind, rest, request, providers, shutdown).await;
        }
    }
    let (parts, body) = request.into_parts();
    if matches!(parts.uri.path(), "/runningpods/" | "/runningpods") {
        if parts.method != Method::GET {
            return method_not_allowed("GET");
        }
        return super::running::running_pods(providers).await;
    }
    if let Some(rest) = parts.uri.path().strip_prefix("/containerLogs/") {
        if parts.method != Method::GET {
            return method_not_allowed("GET");
        }
        return super::logs::container_logs(rest, parts.uri.query(), providers, shutdown).await;
    }
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
        // Bounded in size and in time: a body trickled in does not hold a connection.
        let read = Limited::new(body, MAX_FORM_BODY).collect();
        match tokio::time::timeout(super::HEADER_READ_TIMEOUT, read).await {
            Ok(Ok(collected)) => Some(collected.to_bytes()),
            Ok(Err(error)) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("cannot read the request body: {error}\n"),
                );
            }
            Err(_) => {
                return respond(
                    StatusCode::REQUEST_TIMEOUT,
                    TEXT,
                    "the request body did not arrive in time\n",
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
        "/pods" | "/configz" if method != Method::GET => method_not_allowed("GET"),
        "/configz" => configz(&providers.configz),
        p if (p == "/healthz" || p.starts_with("/healthz/")) && method != Method::GET => {
            method_not_allowed("GET")
        }
        "/stats/summary" if method != Method::GET && method != Method::POST => {
            method_not_allowed("GET, POST")
        }
        "/pods" if !providers.pods.complete() => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "kernlet is starting: the pod list is not complete yet\n",
        ),
        "/pods" => match providers.pod_list.body(&*providers.pods) {
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
        p if p == "/healthz" || p.starts_with("/healthz/") => {
            super::health::healthz(p, query, &providers.health)
        }
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
        _ => not_found(),
    }
}

/// `/configz`: the effective configuration, compact JSON as Go's `json.Marshal` writes it.
fn configz(document: &serde_json::Value) -> Response<Body> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let document = if document.is_null() { &empty } else { document };
    match serde_json::to_vec(document) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(error) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("cannot encode the configuration: {error}\n"),
        ),
    }
}

/// Go's `http.NotFound`.
pub(super) fn not_found() -> Response<Body> {
    respond(StatusCode::NOT_FOUND, TEXT, "404 page not found\n")
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
