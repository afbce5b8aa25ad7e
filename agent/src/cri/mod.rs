//! The container runtime, through CRI v1 (`runtime.v1`) over a Unix socket.
//!
//! Every call carries a deadline: `runtimeRequestTimeout` (default 2 m) as upstream, except image
//! pulls, which upstream also exempts, and `StopContainer`, whose deadline adds the grace period.
//! Callers use one typed method per CRI call (`calls.rs`); each is timed in
//! `kernlet_cri_request_duration_seconds{method}` through the observer. The calls are also the
//! [`Cri`] trait, which the reconciler uses, so unit tests can put a fake runtime behind it.
//! `RunPodSandbox` and `StartContainer` are admitted a few at a time (`gate`), so that a node
//! starting many pods does not hand the runtime more than it can finish within the deadline.
//! Start-up does the `Version` handshake and retries an unreachable runtime with capped
//! exponential backoff, logging each failure, instead of exiting or spinning.
//!
//! Reference: k8s.io/cri-api `api.proto`; kubelet `pkg/kubelet/kuberuntime` (remote runtime).

mod calls;
pub mod exits;
mod gate;
pub mod labels;

pub use calls::Cri;
pub use gate::{Gate, LaneLoad};

use std::{future::Future, pin::Pin, time::Duration};

use kernlet_cri::containerd::services::events::v1::events_client::EventsClient;
use kernlet_cri::v1::runtime_service_client::RuntimeServiceClient;
use kernlet_cri::v1::{self, image_service_client::ImageServiceClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(transparent)]
    Connect(#[from] kernlet_cri::ConnectError),
    #[error("cri {method} failed: {} ({:?})", status.message(), status.code())]
    Call {
        method: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("cri {method} timed out after {after:?}")]
    Timeout {
        method: &'static str,
        after: Duration,
    },
    #[error("runtime at {endpoint} speaks cri {version:?}, kernlet needs v1")]
    Version { endpoint: String, version: String },
    #[error("cancelled while connecting to the runtime at {endpoint}")]
    Cancelled { endpoint: String },
}

impl CriError {
    /// The gRPC status code, when the runtime answered.
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// True when the runtime says the object does not exist (already removed, never created).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// `containerRuntimeEndpoint`, e.g. `unix:///run/containerd/containerd.sock`.
    pub endpoint: String,
    /// `imageServiceEndpoint`; the runtime endpoint when `None`.
    pub image_endpoint: Option<String>,
    /// `runtimeRequestTimeout`.
    pub request_timeout: Duration,
}

/// A connected runtime: the runtime and image services with per-call deadlines.
#[derive(Clone)]
#[expect(
    clippy::struct_field_names,
    reason = "`runtime` is CRI's RuntimeService, not this struct"
)]
pub struct Runtime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// containerd's event service on the runtime socket (Unimplemented elsewhere).
    events: EventsClient<Channel>,
    timeout: Duration,
    version: v1::VersionResponse,
    observer: Option<CallObserver>,
    /// Exits to overlay on container lists and statuses ([`exits`]).
    exits: Option<exits::ExitRecords>,
    /// Admission of the calls that start processes ([`gate`]), shared by the clones.
    gate: gate::Gate,
}

/// Told the method and the duration of every CRI call (kernlet's
/// `/metrics` CRI latency histogram).
pub type CallObserver = std::sync::Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("runtime", &self.version.runtime_name)
            .field("version", &self.version.runtime_version)
            .finish_non_exhaustive()
    }
}

/// A boxed CRI call with its deadline.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CriError>> + Send + 'a>>;

/// First retry delay and cap for reaching an unreachable runtime.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

impl Runtime {
    /// Connects once and does the `Version` handshake.
    pub async fn connect(config: &CriConfig) -> Result<Self, CriError> {
        let connect_timeout = config.request_timeout.min(Duration::from_secs(10));
        let channel = kernlet_cri::connect(&config.endpoint, connect_timeout).await?;
        let image_channel = match &config.image_endpoint {
            Some(endpoint) if endpoint != &config.endpoint => {
                kernlet_cri::connect(endpoint, connect_timeout).await?
            }
            _ => channel.clone(),
        };
        let mut runtime = Self {
            events: EventsClient::new(channel.clone()),
            runtime: RuntimeServiceClient::new(channel)
                .max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE),
            images: ImageServiceClient::new(image_channel)
                .max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE),
            timeout: config.request_timeout,
            version: v1::VersionResponse::default(),
            observer: None,
            exits: None,
            gate: gate::Gate::for_this_machine(),
        };
        let request = v1::VersionRequest {
            version: kernlet_cri::CRI_API_VERSION.into(),
        };
        let mut client = runtime.runtime.clone();
        let version = runtime
            .call("Version", runtime.timeout, async move {
                client.version(request).await
            })
            .await?;
        if version.runtime_api_version != kernlet_cri::CRI_API_VERSION {
            return Err(CriError::Version {
                endpoint: config.endpoint.clone(),
                version: version.runtime_api_version,
            });
        }
        runtime.version = version;
        Ok(runtime)
    }

    /// Connects, retrying with capped exponential backoff until it works or `cancel` fires.
    pub async fn connect_with_backoff(
        config: &CriConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, CriError> {
        let (mut delay, cap) = CONNECT_BACKOFF;
        loop {
            match Self::connect(config).await {
                Ok(runtime) => return Ok(runtime),
                Err(error @ CriError::Version { .. }) => return Err(error),
                Err(error) => {
                    tracing::warn!(endpoint = %config.endpoint, %error, retry_in = ?delay,
                        "container runtime unreachable");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    return Err(CriError::Cancelled { endpoint: config.endpoint.clone() });
                }
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(cap);
        }
    }

    /// The runtime's answer to the `Version` handshake.
    #[must_use]
    pub fn version(&self) -> &v1::VersionResponse {
        &self.version
    }

    /// This runtime with every later call reported to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: CallObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// This runtime with `records` overlaid on `ListContainers` and `ContainerStatus` (see
    /// [`exits`]); the PLEG keeps a client without, to see what CRI itself has recorded.
    #[must_use]
    pub fn with_exit_records(mut self, records: exits::ExitRecords) -> Self {
        self.exits = Some(records);
        self
    }

    /// Runs one call with deadline `after`, reporting it to the observer. The call is boxed:
    /// tonic's futures are large, and keeping them out of every caller's state machine keeps
    /// the workers' futures small.
    fn call<'a, T: Send + 'a>(
        &self,
        method: &'static str,
        after: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'a,
    ) -> CallFuture<'a, T> {
        let observer = self.observer.clone();
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let result = match tokio::time::timeout(after, call).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(CriError::Call { method, status }),
                Err(_) => Err(CriError::Timeout { method, after }),
            };
            if let Some(observer) = observer {
                observer(method, started.elapsed());
            }
            result
        })
    }

    /// `runtimeRequestTimeout`.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The admission of sandbox creations and container starts, shared by this runtime's
    /// clones: its lanes' load for `/metrics`, and whether pods are waiting to start.
    #[must_use]
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_a_clear_connect_error() {
        let config = CriConfig {
            endpoint: "unix:///nonexistent/kernlet-test.sock".into(),
            image_endpoint: None,
            request_timeout: Duration::from_secs(1),
        };
        let error = Runtime::connect(&config).await.unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/kernlet-test.sock"),
            "error does not name the socket: {error}"
        );
    }

    /// Real gRPC calls to a runtime that never answers (a socket nobody accepts on, so the
    /// requests sit in its backlog): each call ends at its own deadline.
    #[tokio::test(start_paused = true)]
    async fn sandbox_creation_gets_twice_the_request_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let endpoint = format!("unix://{}", path.display());
        let channel = kernlet_cri::connect(&endpoint, Duration::from_secs(1))
            .await
            .unwrap();
        let runtime = Runtime {
            events: EventsClient::new(channel.clone()),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            timeout: Duration::from_mins(1),
            version: v1::VersionResponse::default(),
            observer: None,
            exits: None,
            gate: gate::Gate::new(1, 1),
        };
        let timed = |call: CallFuture<'static, ()>| async move {
            let started = tokio::time::Instant::now();
            let error = call.await.unwrap_err();
            (started.elapsed(), error)
        };
        let list = runtime.list_pod_sandbox(v1::ListPodSandboxRequest::default());
        let run = runtime.run_pod_sandbox(v1::RunPodSandboxRequest::default());
        let ((list_after, list_error), (run_after, run_error)) = tokio::join!(
            timed(Box::pin(async move { list.await.map(drop) })),
            timed(Box::pin(async move { run.await.map(drop) })),
        );
        assert!(
            matches!(list_error, CriError::Timeout { .. }),
            "{list_error}"
        );
        assert!(matches!(run_error, CriError::Timeout { .. }), "{run_error}");
        assert_eq!(list_after.as_secs(), 60, "{list_after:?}");
        assert_eq!(run_after.as_secs(), 120, "{run_after:?}");
        assert!(
            run_error.to_string().contains("RunPodSandbox"),
            "{run_error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_retries_until_cancelled() {
        let config = CriConfig {
            endpoint: "unix:///nonexistent/kernlet-test.sock".into(),
            image_endpoint: None,
            request_timeout: Duration::from_secs(1),
        };
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stopper.cancel();
        });
        let error = Runtime::connect_with_backoff(&config, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(error, CriError::Cancelled { .. }), "{error}");
    }
}
