//! The node's heartbeat: a `coordination.k8s.io/v1` Lease named after the node in
//! `kube-node-lease`, renewed every quarter of `nodeLeaseDurationSeconds`.
//!
//! Upstream: `pkg/kubelet/nodelease` and `component-helpers/apimachinery/lease`: the Lease is
//! created when missing (owned by the Node, so it goes with it), then renewed with an update of
//! the last Lease seen (no read per renewal); a conflict or a missing Lease falls back to
//! reading or creating it. Failures retry after 200 ms doubling to 7 s, and never stop kernlet.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use super::pause;
use crate::stats::metrics::Metrics;

/// The namespace of node Leases.
pub const NAMESPACE: &str = "kube-node-lease";

const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(7);

/// Renews the node's Lease.
pub struct LeaseKeeper {
    pub client: kube::Client,
    pub node_name: String,
    /// `nodeLeaseDurationSeconds`.
    pub duration: Duration,
    pub metrics: Arc<Metrics>,
}

impl LeaseKeeper {
    /// Renews the Lease every quarter of its duration until cancelled. `owner` is the
    /// registered Node, the Lease's owner.
    pub async fn run(&self, owner: &Node, cancel: &CancellationToken) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut latest: Option<Lease> = None;
        let mut retry = RETRY_START;
        loop {
            let result = match latest.take() {
                Some(lease) => self.update(&api, lease).await,
                None => self.ensure(&api, owner).await,
            };
            self.metrics.count_api_request("lease", result.is_ok());
            let delay = match result {
                Ok(lease) => {
                    latest = Some(lease);
                    retry = RETRY_START;
                    self.duration / 4
                }
                Err(error) => {
                    tracing::warn!(node = %self.node_name, %error,
                        "cannot renew the node lease; retrying in {retry:?}");
                    let delay = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    delay
                }
            };
            if !pause(delay, cancel).await {
                return;
            }
        }
    }

    /// The Lease as the API server has it, renewed now: created when missing.
    async fn ensure(&self, api: &Api<Lease>, owner: &Node) -> Result<Lease, kube::Error> {
        if let Some(lease) = api.get_opt(&self.node_name).await? {
            return self.update(api, lease).await;
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                namespace: Some(NAMESPACE.to_owned()),
                owner_references: owner_reference(owner).map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec()),
        };
        api.create(&PostParams::default(), &lease).await
    }

    async fn update(&self, api: &Api<Lease>, mut lease: Lease) -> Result<Lease, kube::Error> {
        lease.spec = Some(self.spec_from(lease.spec.take()));
        api.replace(&self.node_name, &PostParams::default(), &lease)
            .await
    }

    fn spec(&self) -> LeaseSpec {
        self.spec_from(None)
    }

    /// `existing` with this node as holder, the configured duration, and renewed now.
    fn spec_from(&self, existing: Option<LeaseSpec>) -> LeaseSpec {
        let now = Timestamp::try_from(crate::clock::wall()).unwrap_or(Timestamp::UNIX_EPOCH);
        LeaseSpec {
            holder_identity: Some(self.node_name.clone()),
            lease_duration_seconds: i32::try_from(self.duration.as_secs()).ok(),
            renew_time: Some(MicroTime(now)),
            ..existing.unwrap_or_default()
        }
    }
}

/// The Node as the Lease's owner (so deleting the Node deletes its Lease).
fn owner_reference(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}
