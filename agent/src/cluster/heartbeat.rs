//! Registration and node status: the Node is created (or an existing one adopted) at start,
//! then its status is computed every `nodeStatusUpdateFrequency` and patched when it changed or
//! when `nodeStatusReportFrequency` has passed since the last report.
//!
//! Upstream: `registerWithAPIServer` (create; on `AlreadyExists` get it and reconcile the
//! default labels and the attach/detach annotation), `syncNodeStatus`/`tryUpdateNodeStatus` (a
//! strategic-merge patch of `status`, so conditions merge by type and other writers' conditions
//! stay). A failed write is retried on the next tick; nothing here stops kernlet.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::lease::LeaseKeeper;
use super::node::{self, NodeFacts};
use super::{facts, pause};
use crate::config::ClusterSettings;
use crate::cri::Runtime;
use crate::event::{EventType, Involved, Recorder, reason};
use crate::stats::metrics::Metrics;

/// The registration backoff: 100 ms doubling to 7 s, as upstream's.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(7);

/// What the node status loop needs.
pub struct NodeReporter {
    pub client: kube::Client,
    pub settings: ClusterSettings,
    pub facts: NodeFacts,
    pub runtime: Runtime,
    pub metrics: Arc<Metrics>,
    /// `nodeStatusUpdateFrequency`.
    pub update_every: Duration,
    /// `nodeStatusReportFrequency`.
    pub report_every: Duration,
    /// The node's events (`Starting`, `NodeReady`, ...).
    pub events: Recorder,
}

/// Registers the node, then reports its status and renews its Lease until cancelled.
pub async fn keep_node(reporter: &NodeReporter, lease: &LeaseKeeper, cancel: &CancellationToken) {
    let node = Involved::node(&reporter.facts.name);
    let events = &reporter.events;
    events.record(
        node,
        EventType::Normal,
        reason::STARTING,
        "Starting kubelet.",
    );
    let Some(node) = reporter.register(cancel).await else {
        return;
    };
    tokio::join!(reporter.run(&node, cancel), lease.run(&node, cancel));
}

impl NodeReporter {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Creates or adopts the Node, retrying until it succeeds; `None` when cancelled first.
    pub async fn register(&self, cancel: &CancellationToken) -> Option<Node> {
        let mut delay = BACKOFF_START;
        loop {
            match self.try_register().await {
                Ok(node) => {
                    tracing::info!(node = %self.facts.name, "node registered with the api server");
                    return Some(node);
                }
                Err(error) => {
                    tracing::warn!(node = %self.facts.name, %error,
                        "cannot register the node; retrying in {delay:?}");
                }
            }
            if !pause(delay, cancel).await {
                return None;
            }
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    async fn try_register(&self) -> Result<Node, kube::Error> {
        let nodes = self.nodes();
        if !self.settings.register_node {
            // registerNode: false: someone else creates the Node; kernlet only reports on it.
            let existing = nodes.get(&self.facts.name).await;
            self.count("register", &existing);
            return existing;
        }
        let initial = node::initial_node(&self.facts, &self.settings);
        let created = nodes.create(&PostParams::default(), &initial).await;
        self.count("register", &created);
        match created {
            Ok(node) => Ok(node),
            Err(error) if super::is_status(&error, 409) => {
                let existing = nodes.get(&self.facts.name).await;
                self.count("register", &existing);
                let existing = existing?;
                let Some(patch) = node::adoption_patch(&existing, &self.facts) else {
                    return Ok(existing);
                };
                let params = PatchParams::default();
                let patched = nodes
                    .patch(&self.facts.name, &params, &Patch::Strategic(patch))
                    .await;
                self.count("register", &patched);
                patched
            }
            Err(error) => Err(error),
        }
    }

    fn count<T>(&self, call: &'static str, result: &Result<T, kube::Error>) {
        self.metrics.count_api_request(call, result.is_ok());
    }

    /// Reports the node's status until cancelled.
    pub async fn run(&self, registered: &Node, cancel: &CancellationToken) {
        // The status the API server has, and when kernlet last wrote it.
        let mut reported = registered.status.clone();
        let mut reported_at: Option<tokio::time::Instant> = None;
        loop {
            let status = self.compute(reported.as_ref()).await;
            let due = reported_at.is_none_or(|at| at.elapsed() >= self.report_every);
            let changed = reported
                .as_ref()
                .is_none_or(|old| node::changed(old, &status));
            if due || changed {
                match self.patch_status(&status).await {
                    Ok(()) => {
                        self.announce(reported.as_ref(), &status);
                        reported = Some(status);
                        reported_at = Some(tokio::time::Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!(node = %self.facts.name, %error,
                            "cannot update the node status; retrying in {:?}", self.update_every);
                    }
                }
            }
            if !pause(self.update_every, cancel).await {
                return;
            }
        }
    }

    /// Records the events of the conditions that changed with this report.
    fn announce(&self, old: Option<&NodeStatus>, new: &NodeStatus) {
        let name = &self.facts.name;
        // All `Normal`, as upstream's setters record them, `NodeNotReady` too.
        for why in node::condition_events(old, new) {
            let message = format!("Node {name} status is now: {why}");
            let node = Involved::node(name);
            self.events.record(node, EventType::Normal, why, message);
        }
    }

    async fn compute(&self, previous: Option<&NodeStatus>) -> NodeStatus {
        let (readiness, images) = tokio::join!(
            facts::readiness(&self.runtime),
            facts::images(&self.runtime)
        );
        let now = Timestamp::try_from(crate::clock::wall()).unwrap_or(Timestamp::UNIX_EPOCH);
        node::status(
            &self.facts,
            &readiness,
            &images,
            self.settings.node_status_max_images,
            previous,
            now,
        )
    }

    async fn patch_status(&self, status: &NodeStatus) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "status": status });
        let result = self
            .nodes()
            .patch_status(
                &self.facts.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await;
        self.count("node-status", &result);
        result.map(drop)
    }
}
