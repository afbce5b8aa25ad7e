//! The node's API credentials, changeable while kernlet runs (`rotateCertificates`): every
//! client made from one [`Credentials`] switches to a renewed client certificate for its next
//! request, as upstream's kubelet swaps its transport's certificate
//! (`pkg/kubelet/certificate/transport.go`).
//!
//! A client is `kube`'s own stack (TLS, timeouts, auth from the kubeconfig) built again from the
//! kubeconfig with the new pair file whenever the pair changed, behind a thin service that the
//! callers' `kube::Client` keeps. Requests in flight (a watch) finish on the connection they
//! have; every new request uses the new certificate, so nothing is cut and nothing is sent with
//! a certificate that has expired. Building the stack again is kept over a `rustls` client
//! certificate resolver inside one stack because pooled connections keep the identity of their
//! handshake: only a new pool makes the switch certain.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::{Request, Response};
use kube::client::Body;
use tokio::sync::watch;

use super::{ClusterError, ratelimit::RateLimitLayer};
use crate::config::ApiRate;

/// `--kubeconfig` and the client certificate pair in use; cheap to clone.
#[derive(Clone)]
pub struct Credentials(Arc<Shared>);

struct Shared {
    path: String,
    base: kube::Config,
    pair: watch::Sender<Option<PathBuf>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("kubeconfig", &self.0.path)
            .field("pair", &*self.0.pair.borrow())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials of `kubeconfig` (its current context); with `pair`, that file's
    /// certificate and key instead of the kubeconfig's own.
    pub async fn load(kubeconfig: &Path, pair: Option<PathBuf>) -> Result<Self, ClusterError> {
        let path = kubeconfig.display().to_string();
        let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|source| {
            ClusterError::Kubeconfig {
                path: path.clone(),
                source,
            }
        })?;
        let options = kube::config::KubeConfigOptions::default();
        let base = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|source| ClusterError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
        let credentials = Self(Arc::new(Shared {
            path,
            base,
            pair: watch::Sender::new(pair),
        }));
        // A broken pair file fails here, at start, rather than at the first request.
        credentials.stack(credentials.0.pair.borrow().as_deref())?;
        Ok(credentials)
    }

    /// Every client of these credentials uses `pair` (certificate and key, PEM) from its next
    /// request on.
    pub fn use_pair(&self, pair: PathBuf) {
        self.0.pair.send_replace(Some(pair));
    }

    /// A client with these credentials whose requests are limited to `rate`.
    pub fn client(&self, rate: ApiRate) -> Result<kube::Client, ClusterError> {
        let mut seen = self.0.pair.subscribe();
        let inner = self.stack(seen.borrow_and_update().as_deref())?;
        let service = Swapping {
            credentials: self.clone(),
            seen,
            inner,
        };
        let namespace = self.0.base.default_namespace.clone();
        let limit = RateLimitLayer::new(rate);
        Ok(kube::client::ClientBuilder::new(service, namespace)
            .with_layer(&limit)
            .build())
    }

    /// `kube`'s stack for the kubeconfig, with `pair` as its client certificate when given.
    fn stack(&self, pair: Option<&Path>) -> Result<kube::Client, ClusterError> {
        let mut config = self.0.base.clone();
        if let Some(pair) = pair {
            let file = pair.display().to_string();
            let auth = &mut config.auth_info;
            auth.client_certificate = Some(file.clone());
            auth.client_key = Some(file);
            auth.client_certificate_data = None;
            auth.client_key_data = None;
        }
        let builder = kube::client::ClientBuilder::try_from(config).map_err(|source| {
            ClusterError::Client {
                path: self.0.path.clone(),
                source,
            }
        })?;
        Ok(builder.build())
    }
}

/// Sends each request through the stack of the newest pair.
struct Swapping {
    credentials: Credentials,
    seen: watch::Receiver<Option<PathBuf>>,
    inner: kube::Client,
}

impl tower::Service<Request<Body>> for Swapping {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.seen.has_changed().unwrap_or(false) {
            let pair = self.seen.borrow_and_update().clone();
            match self.credentials.stack(pair.as_deref()) {
                Ok(inner) => {
                    tracing::info!(pair = ?pair, "api client switched to the new client certificate");
                    self.inner = inner;
                }
                Err(error) => {
                    tracing::warn!(%error, "new client certificate unusable; keeping the previous one");
                }
            }
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(request).await })
    }
}
