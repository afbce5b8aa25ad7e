//! The API server's pods for this node (`spec.nodeName=<node>`), fed into the pod store as source
//! `api` beside the static pods.
//!
//! Upstream: `pkg/kubelet/config/apiserver.go` (a list-watch of pods with that field selector)
//! merged by `config.go`, which stamps `kubernetes.io/config.source: api`. Every (re)list — the
//! first one, and each after a watch expired (410 Gone) or broke — replaces the source's pods
//! whole (`PodStore::set`), so a pod deleted while the watch was down is not kept and none is
//! counted twice; between lists, changes are applied one by one. The source counts as seen
//! after its first complete list, so orphans are not judged before. A pod new to kernlet passes
//! [`admit`] first (else it is marked `Failed`, as upstream). Watch errors are retried
//! with backoff (`kube`'s default: 800 ms doubling to 30 s, with jitter) and logged.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use super::mirror::{MirrorPods, is_mirror};
use super::{API_SOURCE, admit};
use crate::event::{EventType, Recorder};
use crate::pod::PodStore;
use crate::pod::defaults::CONFIG_SOURCE_ANNOTATION;
use crate::stats::metrics::Metrics;

/// What the source needs besides the store.
pub struct ApiPods {
    pub client: kube::Client,
    pub node_name: String,
    pub store: Arc<PodStore>,
    pub metrics: Arc<Metrics>,
    /// The Node as kernlet registers it, for admission while the API's copy cannot be read.
    pub fallback_node: Node,
    /// Where the mirror pods the watch sees go (they are never run).
    pub mirrors: Arc<MirrorPods>,
    /// Rejections are events too, as upstream's.
    pub events: Recorder,
}

impl ApiPods {
    /// Follows the pods bound to the node into the store until cancelled.
    pub async fn follow(&self, cancel: CancellationToken) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.node_name);
        let events = watcher::watcher(api, watcher::Config::default().fields(&selector));
        let events = events.default_backoff();
        futures_util::pin_mut!(events);
        // The pods of a list under way, until its end replaces the source's pods.
        let mut listing: Vec<Pod> = Vec::new();
        let mut rejected: HashSet<String> = HashSet::new();
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = events.try_next() => event,
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(error) => {
                    self.metrics.count_api_request("pods-watch", false);
                    tracing::warn!(node = %self.node_name, %error, "pod watch failed; retrying");
                    continue;
                }
            };
            let fed = match event {
                Event::Init => {
                    listing.clear();
                    Ok(())
                }
                Event::InitApply(pod) => {
                    listing.push(stamped(pod));
                    Ok(())
                }
                Event::InitDone => {
                    self.metrics.count_api_request("pods-watch", true);
                    let (mirrors, listed): (Vec<Pod>, Vec<Pod>) = std::mem::take(&mut listing)
                        .into_iter()
                        .partition(is_mirror);
                    self.mirrors.listed(mirrors.iter());
                    tracing::debug!(pods = listed.len(), "api pods listed");
                    let admitted = self.admit_all(listed, &mut rejected).await;
                    self.store.set(API_SOURCE, admitted)
                }
                Event::Apply(pod) if is_mirror(&pod) => {
                    self.mirrors.seen(&pod);
                    Ok(())
                }
                Event::Delete(pod) if is_mirror(&pod) => {
                    self.mirrors.gone(&pod);
                    Ok(())
                }
                Event::Apply(pod) => {
                    let pod = stamped(pod);
                    match self.admit_all(vec![pod], &mut rejected).await.pop() {
                        Some(pod) => self.store.upsert(API_SOURCE, pod),
                        None => Ok(()),
                    }
                }
                Event::Delete(pod) => match pod.metadata.uid.as_deref() {
                    Some(uid) => {
                        rejected.remove(uid);
                        self.store.remove(API_SOURCE, uid)
                    }
                    None => Ok(()),
                },
            };
            if let Err(error) = fed {
                tracing::error!(%error, "cannot feed the pod store");
            }
        }
    }

    /// The pods of `listed` that run here: those already running, and the new ones admitted in
    /// creation order (upstream's `HandlePodAdditions`). A new pod that is finished or being
    /// deleted is not started; one that does not fit is marked `Failed` and remembered in
    /// `rejected`, never admitted later.
    async fn admit_all(&self, mut listed: Vec<Pod>, rejected: &mut HashSet<String>) -> Vec<Pod> {
        listed.sort_by(|a, b| {
            let created = |p: &Pod| p.metadata.creation_timestamp.clone().map(|t| t.0);
            created(a).cmp(&created(b))
        });
        let known = self.store.snapshot();
        let mut running: Vec<Arc<Pod>> = known.values().map(|d| d.pod.clone()).collect();
        let mut node: Option<Node> = None;
        let mut out = Vec::new();
        for pod in listed {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if known.contains_key(&uid) {
                out.push(pod);
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let finished = matches!(phase, Some("Failed" | "Succeeded")) || rejected.contains(&uid);
            if finished || pod.metadata.deletion_timestamp.is_some() {
                if pod.metadata.deletion_timestamp.is_some() {
                    // Nothing of it runs here: its object can go at once.
                    self.delete_object(&pod).await;
                }
                continue;
            }
            if node.is_none() {
                node = Some(self.live_node().await);
            }
            let others: Vec<&Pod> = running.iter().map(AsRef::as_ref).collect();
            match admit::admit(&pod, node.as_ref().unwrap_or(&self.fallback_node), &others) {
                Ok(()) => {
                    running.push(Arc::new(pod.clone()));
                    out.push(pod);
                }
                Err(rejection) => {
                    rejected.insert(uid);
                    self.reject(&pod, &rejection).await;
                }
            }
        }
        out
    }

    /// The Node as the API server has it (labels and taints others may have set), else the one
    /// kernlet registers.
    async fn live_node(&self) -> Node {
        let nodes: Api<Node> = Api::all(self.client.clone());
        match nodes.get(&self.node_name).await {
            Ok(node) => node,
            Err(error) => {
                tracing::debug!(%error, "admission uses the node as registered");
                self.fallback_node.clone()
            }
        }
    }

    /// Marks `pod` `Failed` with the rejection (upstream's `rejectPod`).
    async fn reject(&self, pod: &Pod, rejection: &admit::Rejection) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::warn!(pod = %name, reason = %rejection.reason, message = %rejection.message,
            "pod rejected");
        let events = &self.events;
        events.pod(
            pod,
            EventType::Warning,
            &rejection.reason,
            rejection.message.clone(),
        );
        let patch = serde_json::json!({
            "metadata": {"uid": pod.metadata.uid},
            "status": {
                "phase": "Failed",
                "reason": rejection.reason,
                "message": format!("Pod was rejected: {}", rejection.message),
            }
        });
        let result = self
            .pods_in(pod)
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await;
        self.metrics.count_api_request("pod-status", result.is_ok());
        if let Err(error) = result {
            tracing::warn!(pod = %name, %error, "cannot mark the rejected pod failed");
        }
    }

    async fn delete_object(&self, pod: &Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = super::final_delete(pod.metadata.uid.clone().unwrap_or_default());
        let result = self.pods_in(pod).delete(&name, &params).await;
        self.metrics.count_api_request("pod-delete", result.is_ok());
        if let Some(error) = result.as_ref().err().filter(|e| !super::is_status(e, 404)) {
            tracing::warn!(pod = %name, %error, "cannot delete the pod object");
        }
    }

    fn pods_in(&self, pod: &Pod) -> Api<Pod> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// `pod` with the source annotation upstream's config merge sets.
fn stamped(mut pod: Pod) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert(CONFIG_SOURCE_ANNOTATION.to_owned(), API_SOURCE.to_owned());
    pod
}
