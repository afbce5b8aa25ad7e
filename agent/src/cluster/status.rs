//! The status manager: the status of each API pod written to the API server when it changes, and
//! a deleted pod's object removed once its containers are gone.
//!
//! Upstream: `pkg/kubelet/status/status_manager.go`. Writes follow the status store's change feed
//! (coalesced per pod: a pod that changed three times while a write was under way is written
//! once more, with its latest status), one at a time, each a strategic-merge patch of `status`
//! carrying `metadata.uid` as a precondition (a pod recreated under the same name is never
//! written with the old one's status); conditions merge by type, so the scheduler's
//! `PodScheduled` stays. A status equal to the last one written is not sent again. Failed
//! writes are retried after 1 s doubling to 10 s. A pod with a `deletionTimestamp` whose
//! containers no longer run is deleted with grace 0 and a UID precondition, as upstream's
//! `canBeDeleted`/`deletePod`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use super::mirror::MirrorPods;
use super::{API_SOURCE, final_delete, sleep_or_forever};
use crate::pod::PodStore;
use crate::pod::defaults::FILE_SOURCE;
use crate::stats::metrics::Metrics;
use crate::status::store::StatusStore;

const RETRY_START: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Writes API pods' statuses.
pub struct StatusWriter {
    pub client: kube::Client,
    pub pods: Arc<PodStore>,
    pub statuses: Arc<StatusStore>,
    pub metrics: Arc<Metrics>,
    /// Static pods' statuses go to their mirror pods.
    pub mirrors: Arc<MirrorPods>,
}

/// What happened to one pod's write.
enum Outcome {
    Done,
    Retry,
}

impl StatusWriter {
    /// Follows the status feed until cancelled.
    pub async fn run(&self, cancel: &CancellationToken) {
        let mut feed = self.statuses.subscribe();
        // A pod deleted after its containers ended changes no status: the pod store says so.
        let mut desired = self.pods.subscribe();
        let mut written: HashMap<String, PodStatus> = HashMap::new();
        // Pods whose worker is done: the store dropped their status (a feed change with no
        // status left is only ever that). A deleted one's object can go now.
        let mut finished: HashSet<String> = HashSet::new();
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut retry = RETRY_START;
        loop {
            let mut failed = BTreeSet::new();
            for uid in std::mem::take(&mut pending) {
                if self.pods.get(&uid).is_none() {
                    // Gone from every source: nothing more to write about it.
                    written.remove(&uid);
                    finished.remove(&uid);
                    continue;
                }
                let done = finished.contains(&uid);
                match self.sync(&uid, &mut written, done).await {
                    Outcome::Retry => {
                        failed.insert(uid);
                    }
                    // Its worker is done and its object handled: forget it.
                    Outcome::Done if done => {
                        written.remove(&uid);
                        finished.remove(&uid);
                    }
                    Outcome::Done => {}
                }
            }
            let wait = if failed.is_empty() {
                retry = RETRY_START;
                None
            } else {
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                Some(wait)
            };
            pending = failed;
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = feed.changed() => {
                    for uid in changed {
                        if self.statuses.get(&uid).is_none() {
                            finished.insert(uid.clone());
                        }
                        pending.insert(uid);
                    }
                }
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending.extend(self.deleting());
                }
                () = sleep_or_forever(wait) => {}
            }
        }
    }

    /// Writes pod `uid`'s status if it changed; deletes it when it is finished being deleted
    /// (`finished`: its worker removed everything and reported it gone).
    async fn sync(
        &self,
        uid: &str,
        written: &mut HashMap<String, PodStatus>,
        finished: bool,
    ) -> Outcome {
        let Some(desired) = self.pods.get(uid) else {
            return Outcome::Done;
        };
        let Some(pod) = self.statuses.get(uid) else {
            if finished && desired.source == API_SOURCE && desired.deletion.is_some() {
                let pod = &desired.pod;
                let name = pod.metadata.name.clone().unwrap_or_default();
                return self.delete(&self.api(pod), &name, uid).await;
            }
            return Outcome::Done;
        };
        let Some(status) = pod.status.clone() else {
            return Outcome::Done;
        };
        let api = self.api(&pod);
        let name = pod.metadata.name.clone().unwrap_or_default();
        // The API object the status goes to: the pod itself, or a static pod's mirror.
        let target = if desired.source == API_SOURCE {
            uid.to_owned()
        } else if desired.source == FILE_SOURCE {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            match self.mirrors.get(namespace, &name).filter(|m| !m.deleting) {
                Some(mirror) => mirror.uid,
                // No mirror yet: its creation comes, then this write.
                None => return Outcome::Retry,
            }
        } else {
            return Outcome::Done;
        };
        if written.get(&target) != Some(&status) {
            let patch = serde_json::json!({ "metadata": { "uid": target }, "status": status });
            let result = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await;
            self.metrics.count_api_request("pod-status", result.is_ok());
            match result {
                Ok(_) => {
                    written.insert(target.clone(), status.clone());
                }
                Err(error) if super::is_status(&error, 404) || super::is_status(&error, 409) => {
                    // Gone, or another pod of that name now: nothing of this one to write.
                    tracing::debug!(pod = %name, %error, "pod status not written");
                    return Outcome::Done;
                }
                Err(error) => {
                    tracing::warn!(pod = %name, %error, "cannot write pod status; retrying");
                    return Outcome::Retry;
                }
            }
        }
        if desired.source == API_SOURCE && desired.deletion.is_some() && !runs_anything(&status) {
            return self.delete(&api, &name, uid).await;
        }
        Outcome::Done
    }

    async fn delete(&self, api: &Api<Pod>, name: &str, uid: &str) -> Outcome {
        let result = api.delete(name, &final_delete(uid.to_owned())).await;
        self.metrics.count_api_request("pod-delete", result.is_ok());
        match result {
            Ok(_) => {
                tracing::info!(pod = %name, "pod terminated; its api object is deleted");
                Outcome::Done
            }
            Err(error) if super::is_status(&error, 404) || super::is_status(&error, 409) => {
                Outcome::Done
            }
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot delete the terminated pod; retrying");
                Outcome::Retry
            }
        }
    }

    /// The API pods being deleted.
    fn deleting(&self) -> Vec<String> {
        self.pods
            .snapshot()
            .into_iter()
            .filter(|(_, d)| d.source == API_SOURCE && d.deletion.is_some())
            .map(|(uid, _)| uid)
            .collect()
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// Whether any container of `status` may still run (upstream's `PodCouldHaveRunningContainers`,
/// as far as the status tells).
fn runs_anything(status: &PodStatus) -> bool {
    [
        &status.init_container_statuses,
        &status.container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .any(|container| {
        container
            .state
            .as_ref()
            .is_some_and(|state| state.running.is_some())
    })
}
