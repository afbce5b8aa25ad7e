//! Mirror pods: each static pod shown in the API server as a pod of the same name, annotated
//! `kubernetes.io/config.mirror: <hash>` and owned by the Node, so `kubectl get pods` sees what
//! the node runs from its manifests. kernlet never runs a mirror pod; it writes the static pod's
//! status to it.
//!
//! Upstream: `pkg/kubelet/pod/mirror_client.go` and `syncPod`'s mirror handling: a missing mirror
//! is created, one whose hash is not the static pod's (the manifest changed) or that is being
//! deleted is deleted (UID precondition) and created again, and one without a static pod is
//! deleted. The API pod source reports the mirrors it sees ([`MirrorPods`]); every change to
//! them or to the static pods wakes the sync, and a failed call retries after 1 s doubling to
//! 10 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pod::PodStore;
use crate::pod::defaults::{CONFIG_HASH_ANNOTATION, FILE_SOURCE};
use crate::stats::metrics::Metrics;

/// The annotation marking a mirror pod (`kubetypes.ConfigMirrorAnnotationKey`).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A mirror pod as the API server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub uid: String,
    /// Its `config.mirror` annotation: the static pod's hash it mirrors.
    pub hash: String,
    pub deleting: bool,
}

/// The mirror pods of this node, by `(namespace, name)`, as the pod watch last saw them.
#[derive(Debug, Default)]
pub struct MirrorPods {
    pods: Mutex<HashMap<(String, String), Mirror>>,
    changed: Notify,
}

/// The `(namespace, name)` of a pod.
fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether `pod` is a mirror pod.
#[must_use]
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

impl MirrorPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Mirror>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A mirror pod added or changed.
    pub fn seen(&self, pod: &Pod) {
        let hash = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        let mirror = Mirror {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            hash,
            deleting: pod.metadata.deletion_timestamp.is_some(),
        };
        self.lock().insert(key(pod), mirror);
        self.changed.notify_one();
    }

    /// A mirror pod deleted.
    pub fn gone(&self, pod: &Pod) {
        self.lock().remove(&key(pod));
        self.changed.notify_one();
    }

    /// A full list: exactly these mirrors exist.
    pub fn listed<'a>(&self, pods: impl Iterator<Item = &'a Pod>) {
        let mut all = HashMap::new();
        for pod in pods {
            let hash = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR_ANNOTATION));
            all.insert(
                key(pod),
                Mirror {
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                    hash: hash.cloned().unwrap_or_default(),
                    deleting: pod.metadata.deletion_timestamp.is_some(),
                },
            );
        }
        *self.lock() = all;
        self.changed.notify_one();
    }

    /// The mirror of the static pod named `key`.
    #[must_use]
    pub fn get(&self, namespace: &str, name: &str) -> Option<Mirror> {
        self.lock()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

/// Keeps the mirror pods in step with the static pods.
pub struct MirrorKeeper {
    pub client: kube::Client,
    pub node_name: String,
    pub pods: Arc<PodStore>,
    pub mirrors: Arc<MirrorPods>,
    pub metrics: Arc<Metrics>,
}

impl MirrorKeeper {
    /// Syncs on every change until cancelled.
    pub async fn run(&self, cancel: &CancellationToken) {
        let mut desired = self.pods.subscribe();
        let mut retry = Duration::from_secs(1);
        loop {
            let failed = !self.sync().await;
            let wait = if failed {
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(10));
                Some(wait)
            } else {
                retry = Duration::from_secs(1);
                None
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.mirrors.changed.notified() => {}
                changed = desired.changed() => if changed.is_err() { return },
                () = super::sleep_or_forever(wait) => {}
            }
        }
    }

    /// One pass; `false` when a call failed.
    async fn sync(&self) -> bool {
        let statics: Vec<Arc<Pod>> = self
            .pods
            .snapshot()
            .into_values()
            .filter(|d| d.source == FILE_SOURCE && d.deletion.is_none())
            .map(|d| d.pod)
            .collect();
        let existing = self.mirrors.lock().clone();
        let mut ok = true;
        let mut wanted = std::collections::HashSet::new();
        let mut node: Option<Node> = None;
        for pod in &statics {
            let pod_key = key(pod);
            wanted.insert(pod_key.clone());
            let hash = static_hash(pod);
            match existing.get(&pod_key) {
                Some(mirror) if mirror.hash == hash && !mirror.deleting => {}
                Some(mirror) => ok &= self.delete(&pod_key, &mirror.uid).await,
                None => {
                    if node.is_none() {
                        node = Api::<Node>::all(self.client.clone())
                            .get_opt(&self.node_name)
                            .await
                            .ok()
                            .flatten();
                    }
                    let Some(node) = &node else {
                        // Not registered yet: its registration will come, and with it a retry.
                        ok = false;
                        continue;
                    };
                    ok &= self.create(pod, &hash, node).await;
                }
            }
        }
        for (stale, mirror) in &existing {
            if !wanted.contains(stale) && !mirror.deleting {
                ok &= self.delete(stale, &mirror.uid).await;
            }
        }
        ok
    }

    async fn create(&self, pod: &Pod, hash: &str, node: &Node) -> bool {
        let mut mirror = pod.clone();
        let meta = &mut mirror.metadata;
        meta.uid = None;
        meta.resource_version = None;
        meta.creation_timestamp = None;
        meta.annotations
            .get_or_insert_default()
            .insert(MIRROR_ANNOTATION.to_owned(), hash.to_owned());
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            name: self.node_name.clone(),
            uid: node.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        mirror.status = None;
        let (namespace, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let result = api.create(&PostParams::default(), &mirror).await;
        self.metrics.count_api_request("mirror-pod", result.is_ok());
        match result {
            Ok(_) => {
                tracing::info!(pod = %name, "mirror pod created");
                true
            }
            // Created meanwhile (the watch will say): nothing lost.
            Err(error) if super::is_status(&error, 409) => true,
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot create the mirror pod; retrying");
                false
            }
        }
    }

    async fn delete(&self, (namespace, name): &(String, String), uid: &str) -> bool {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let result = api.delete(name, &super::final_delete(uid.to_owned())).await;
        self.metrics.count_api_request("mirror-pod", result.is_ok());
        match result {
            Ok(_) => true,
            Err(error) if super::is_status(&error, 404) || super::is_status(&error, 409) => true,
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot delete the mirror pod; retrying");
                false
            }
        }
    }
}

/// The static pod's hash (kernlet's `config.hash` annotation, its UID).
fn static_hash(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .or_else(|| pod.metadata.uid.clone())
        .unwrap_or_default()
}
