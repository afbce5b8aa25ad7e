//! Cluster mode: kernlet as a node of a real cluster, through the API server named by
//! `--kubeconfig`. This module registers the Node and keeps it alive (status and Lease), runs
//! the pods bound to it and writes their status back, and answers the kubelet port's token and
//! access reviews with the API server.
//!
//! Upstream: `pkg/kubelet/kubelet_node_status.go` (registration, status updates),
//! `pkg/kubelet/nodelease` (the Lease in `kube-node-lease`), `pkg/kubelet/config/apiserver.go`
//! (the pods bound to the node, [`pods`]), `pkg/kubelet/status` (pod status writes and the final
//! delete, [`status`]), `pkg/kubelet/server/auth.go` (the `TokenReview` and
//! `SubjectAccessReview` webhooks). Every API call goes through `kube`'s client
//! (rustls over ring, as the server's TLS) with the node's own credentials, so the API server's
//! `Node` authorizer and `NodeRestriction` admission judge kernlet as they judge a kubelet.
//!
//! API errors never stop kernlet or a pod: every loop retries with backoff, logs, and counts
//! its calls in `kernlet_api_requests_total{call,result}`.
//!
//! `kube` is kept over hand-written REST calls: its typed `Api<K>` over `k8s-openapi`'s objects,
//! kubeconfig loading (client certificates, tokens, CA data) and watcher are what a kubelet's
//! client needs, and it is the client the field uses.

pub mod admit;
pub mod bootstrap;
pub mod correlate;
pub mod credentials;
pub mod csr;
pub mod events;
pub mod facts;
pub mod heartbeat;
pub mod lease;
pub mod mirror;
pub mod node;
pub mod pods;
pub mod ratelimit;
pub mod reviews;
pub mod rotation;
pub mod status;

use std::path::Path;
use std::time::Duration;

use kube::api::{DeleteParams, Preconditions};
use tokio_util::sync::CancellationToken;

/// Errors of cluster mode's setup; the loops themselves only log.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("api client from kubeconfig {path}: {source}")]
    Client {
        path: String,
        #[source]
        source: kube::Error,
    },
}

/// An API client with the credentials of `kubeconfig` (its current context), its requests
/// limited to `rate` (e.g. `kubeAPIQPS`/`kubeAPIBurst` as [`crate::config::ApiRate::client`]
/// applies them).
pub async fn connect(
    kubeconfig: &Path,
    rate: crate::config::ApiRate,
) -> Result<kube::Client, ClusterError> {
    credentials::Credentials::load(kubeconfig, None)
        .await?
        .client(rate)
}

/// Whether `error` is the API server's answer with HTTP status `code`.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// The pod store's name for this source (upstream's `kubetypes.ApiserverSource`).
pub const API_SOURCE: &str = "api";

/// The last delete of a pod nothing of which runs: grace 0, only this pod (UID precondition).
fn final_delete(uid: String) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Sleeps `wait`, or forever when `None`.
async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Sleeps `delay` unless cancelled first; `false` when cancelled.
async fn pause(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancel.cancelled() => false,
    }
}
