//! The kubelet's HTTP API, first cut: plain HTTP/1.1 (TLS and authentication come later).
//!
//! Endpoints, after upstream's `pkg/kubelet/server/server.go`:
//! - `GET /pods`: the pods bound to this node as a `v1.PodList` (`getPods` / `encodePods`):
//!   `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[...]}`, the items without their
//!   own `kind` / `apiVersion`, as Go's codec writes a typed list, and a trailing newline;
//! - `GET /healthz`: `ok`;
//! - any other path: 404 `404 page not found` (Go's `http.NotFound`); another method on a known
//!   path: 405.
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

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests may take to finish once the server is cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause after a failed accept.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The pods `GET /pods` lists, each with its status filled in; the daemon keeps it current.
pub trait PodsProvider: Send + Sync + 'static {
    fn pods(&self) -> Vec<Pod>;
}

impl<F> PodsProvider for F
where
    F: Fn() -> Vec<Pod> + Send + Sync + 'static,
{
    fn pods(&self) -> Vec<Pod> {
        self()
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

/// Serves `listener` until `cancel` fires, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    pods: Arc<dyn PodsProvider>,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
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
                        Arc::clone(&pods),
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
    pods: Arc<dyn PodsProvider>,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = route(request.method(), request.uri().path(), pods.as_ref());
        async move { Ok::<_, Infallible>(response) }
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

fn route(method: &Method, path: &str, pods: &dyn PodsProvider) -> Response<Body> {
    match path {
        "/pods" | "/healthz" if method != Method::GET => {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "405: Method Not Allowed",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            response
        }
        "/pods" => match encode_pod_list(&pods.pods()) {
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
        _ => respond(StatusCode::NOT_FOUND, TEXT, "404 page not found\n"),
    }
}

/// `encodePods`: the `v1.PodList` JSON upstream's kubelet serves for `pods`.
pub fn encode_pod_list(pods: &[Pod]) -> Result<Vec<u8>, serde_json::Error> {
    let items = pods
        .iter()
        .map(|pod| {
            let mut value = serde_json::to_value(pod)?;
            if let Some(fields) = value.as_object_mut() {
                fields.remove("apiVersion");
                fields.remove("kind");
            }
            Ok(value)
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    let mut out = br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":"#.to_vec();
    serde_json::to_writer(&mut out, &items)?;
    out.extend_from_slice(b"}\n");
    Ok(out)
}
