//! The desired pods of this node, from every source, keyed by UID, with a change feed.
//!
//! Upstream reference: `pkg/kubelet/config/config.go` (`PodConfig`, `podStorage`: pods merged per
//! source, SET and incremental updates, `seenSources`) and `pkg/kubelet/config/sources.go`
//! (`SourcesReady`). What carries over:
//! - Each source is registered before it runs and owns its pods: a full list (`set`, the file
//!   source's SET) replaces that source's pods; incremental sources (the API watch) `upsert` and
//!   `remove`. A UID already owned by another source is refused and logged (upstream keeps the
//!   first source's pod too).
//! - A source counts as *seen* once it has delivered its first complete list. Until every
//!   registered source is seen, [`PodStore::sources_ready`] is false, and nothing may be treated
//!   as orphaned: a pod absent from the store might only not have been listed yet. This is the
//!   restart-safety rule: a kernlet that starts must not stop a running pod because its
//!   manifest directory had not been read yet.
//! - A pod whose `metadata.deletionTimestamp` is set is still in the store, marked with its
//!   [`Deletion`]: it is stopped within `deletionGracePeriodSeconds` (else its spec's grace), and
//!   not started again while it stays so.
//!
//! The feed is a version counter on a `watch` channel: it changes only when the desired set does,
//! and consumers read [`PodStore::snapshot`] after each change, so bursts coalesce.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::source::Snapshot;

/// The grace period when neither the deletion nor the spec gives one (the API default).
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A pod being deleted: stop it within `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    pub grace: Duration,
}

/// One desired pod as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    /// The source that gave it (`file`, `api`).
    pub source: String,
    pub pod: Arc<Pod>,
    /// Set when the pod carries a `deletionTimestamp`.
    pub deletion: Option<Deletion>,
}

impl DesiredPod {
    fn new(source: &str, pod: Pod) -> Self {
        let deletion = pod.metadata.deletion_timestamp.as_ref().map(|_| Deletion {
            grace: deletion_grace(&pod),
        });
        Self {
            source: source.to_owned(),
            pod: Arc::new(pod),
            deletion,
        }
    }
}

/// `deletionGracePeriodSeconds`, else `terminationGracePeriodSeconds`, else 30 s.
fn deletion_grace(pod: &Pod) -> Duration {
    let seconds = pod.metadata.deletion_grace_period_seconds.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
    });
    seconds.map_or(DEFAULT_GRACE, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("pod source {0:?} is not registered with the pod store")]
    UnknownSource(String),
}

#[derive(Debug, Default)]
struct State {
    /// Registered sources and whether each has delivered a complete list.
    seen: BTreeMap<String, bool>,
    pods: HashMap<String, DesiredPod>,
}

/// The node's desired pods. Cheap to share (`Arc`), safe to call from any task.
#[derive(Debug)]
pub struct PodStore {
    state: Mutex<State>,
    version: watch::Sender<u64>,
}

impl Default for PodStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            version: watch::channel(0).0,
        }
    }
}

impl PodStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares a source that will feed the store; it is unseen until its first complete list.
    pub fn register(&self, source: &str) {
        self.lock().seen.entry(source.to_owned()).or_insert(false);
        self.bump();
    }

    /// True once every registered source has delivered a complete list (upstream's
    /// `AllReady`). With no source at all there is nothing to wait for.
    #[must_use]
    pub fn sources_ready(&self) -> bool {
        self.lock().seen.values().all(|seen| *seen)
    }

    /// Replaces every pod of `source` with `pods` (a complete list) and marks the source seen.
    pub fn set(&self, source: &str, pods: Vec<Pod>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let seen = state
            .seen
            .get_mut(source)
            .ok_or_else(|| StoreError::UnknownSource(source.to_owned()))?;
        let mut changed = !*seen;
        *seen = true;
        let mut wanted: HashMap<String, DesiredPod> = HashMap::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                tracing::warn!(source, name = ?pod.metadata.name, "pod without a uid ignored");
                continue;
            };
            if let Some(other) = state.pods.get(&uid).filter(|p| p.source != source) {
                tracing::warn!(source, %uid, owner = %other.source, "pod uid already given by another source; ignored");
                continue;
            }
            wanted.insert(uid, DesiredPod::new(source, pod));
        }
        let before = state.pods.len();
        state
            .pods
            .retain(|uid, p| p.source != source || wanted.contains_key(uid));
        changed |= state.pods.len() != before;
        for (uid, desired) in wanted {
            if state.pods.get(&uid) != Some(&desired) {
                state.pods.insert(uid, desired);
                changed = true;
            }
        }
        drop(state);
        if changed {
            self.bump();
        }
        Ok(())
    }

    /// Adds or replaces one pod of an incremental source.
    pub fn upsert(&self, source: &str, pod: Pod) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.seen.contains_key(source) {
            return Err(StoreError::UnknownSource(source.to_owned()));
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            tracing::warn!(source, name = ?pod.metadata.name, "pod without a uid ignored");
            return Ok(());
        };
        if let Some(other) = state.pods.get(&uid).filter(|p| p.source != source) {
            tracing::warn!(source, %uid, owner = %other.source, "pod uid already given by another source; ignored");
            return Ok(());
        }
        let desired = DesiredPod::new(source, pod);
        if state.pods.get(&uid) == Some(&desired) {
            return Ok(());
        }
        state.pods.insert(uid, desired);
        drop(state);
        self.bump();
        Ok(())
    }

    /// Removes one pod of an incremental source (gone from the API server).
    pub fn remove(&self, source: &str, uid: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.seen.contains_key(source) {
            return Err(StoreError::UnknownSource(source.to_owned()));
        }
        let removed = state
            .pods
            .remove_entry(uid)
            .map(|(uid, pod)| (uid, pod.source != source, pod));
        match removed {
            Some((uid, true, pod)) => {
                state.pods.insert(uid, pod);
                Ok(())
            }
            Some(_) => {
                drop(state);
                self.bump();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Marks an incremental source seen (its initial list is in).
    pub fn mark_seen(&self, source: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        let seen = state
            .seen
            .get_mut(source)
            .ok_or_else(|| StoreError::UnknownSource(source.to_owned()))?;
        let was = std::mem::replace(seen, true);
        drop(state);
        if !was {
            self.bump();
        }
        Ok(())
    }

    /// Every desired pod, by UID.
    #[must_use]
    pub fn snapshot(&self) -> HashMap<String, DesiredPod> {
        self.lock().pods.clone()
    }

    /// One pod, by UID.
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<DesiredPod> {
        self.lock().pods.get(uid).cloned()
    }

    /// The change feed: its value moves on after every change of the pods or of a source's
    /// readiness.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Feeds the static source's snapshots into `store` as source `source` until `cancel` fires or
/// the snapshots end. A snapshot of an unreadable path is not a complete list: it does not mark
/// the source seen (its pods, the last good ones, still replace the source's set once seen).
pub async fn follow_snapshots(
    mut snapshots: watch::Receiver<Snapshot>,
    store: Arc<PodStore>,
    source: &'static str,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.unreadable && !store.is_seen(source) {
            tracing::warn!(
                source,
                "static pod path unreadable: orphaned pods are not cleaned up until it is read"
            );
            continue;
        }
        if let Err(error) = store.set(source, snapshot.pods) {
            tracing::error!(%error, "cannot feed the pod store");
            return;
        }
    }
}

impl PodStore {
    fn is_seen(&self, source: &str) -> bool {
        self.lock().seen.get(source).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(uid: &str, grace: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{uid}")),
                uid: Some(uid.to_owned()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                termination_grace_period_seconds: grace,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn deleted(mut pod: Pod, grace: Option<i64>) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        pod.metadata.deletion_grace_period_seconds = grace;
        pod
    }

    #[test]
    fn sources_are_ready_only_once_each_has_listed() {
        let store = PodStore::default();
        assert!(store.sources_ready(), "no source: nothing to wait for");
        store.register("file");
        store.register("api");
        assert!(!store.sources_ready());
        store.set("file", vec![]).unwrap();
        assert!(
            !store.sources_ready(),
            "an empty list counts, but api is unseen"
        );
        store.mark_seen("api").unwrap();
        assert!(store.sources_ready());
        assert_eq!(
            store.set("nope", vec![]),
            Err(StoreError::UnknownSource("nope".into()))
        );
    }

    #[test]
    fn set_replaces_only_its_own_sources_pods() {
        let store = PodStore::default();
        store.register("file");
        store.register("api");
        store
            .set("file", vec![pod("a", None), pod("b", None)])
            .unwrap();
        store.upsert("api", pod("c", None)).unwrap();
        // The api source cannot take a uid the file source gives.
        store.upsert("api", pod("a", Some(5))).unwrap();
        assert_eq!(store.get("a").unwrap().source, "file");
        store.set("file", vec![pod("b", None)]).unwrap();
        let mut uids: Vec<String> = store.snapshot().into_keys().collect();
        uids.sort();
        assert_eq!(uids, ["b", "c"]);
        store.remove("file", "c").unwrap();
        assert!(store.get("c").is_some(), "file cannot remove api's pod");
        store.remove("api", "c").unwrap();
        assert!(store.get("c").is_none());
    }

    #[test]
    fn the_feed_moves_only_on_change() {
        let store = PodStore::default();
        store.register("file");
        let mut feed = store.subscribe();
        feed.borrow_and_update();
        store.set("file", vec![pod("a", None)]).unwrap();
        assert!(feed.has_changed().unwrap());
        feed.borrow_and_update();
        store.set("file", vec![pod("a", None)]).unwrap();
        assert!(
            !feed.has_changed().unwrap(),
            "the same list again is no change"
        );
        store.set("file", vec![pod("a", Some(3))]).unwrap();
        assert!(feed.has_changed().unwrap(), "a changed spec is a change");
    }

    #[test]
    fn a_deletion_timestamp_marks_the_pod_with_its_grace() {
        let store = PodStore::default();
        store.register("file");
        store
            .set(
                "file",
                vec![
                    deleted(pod("a", Some(20)), Some(4)),
                    deleted(pod("b", Some(20)), None),
                    deleted(pod("c", None), None),
                    pod("d", None),
                ],
            )
            .unwrap();
        let grace = |uid: &str| store.get(uid).unwrap().deletion.map(|d| d.grace);
        assert_eq!(grace("a"), Some(Duration::from_secs(4)));
        assert_eq!(grace("b"), Some(Duration::from_secs(20)));
        assert_eq!(grace("c"), Some(DEFAULT_GRACE));
        assert_eq!(grace("d"), None);
    }

    #[tokio::test]
    async fn an_unreadable_first_scan_does_not_make_the_source_seen() {
        let store = Arc::new(PodStore::default());
        store.register("file");
        let (tx, rx) = watch::channel(Snapshot::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(follow_snapshots(rx, store.clone(), "file", cancel.clone()));
        let mut feed = store.subscribe();
        tx.send(Snapshot {
            unreadable: true,
            ..Snapshot::default()
        })
        .unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!store.sources_ready());
        feed.borrow_and_update();
        tx.send(Snapshot {
            pods: vec![pod("a", None)],
            ..Snapshot::default()
        })
        .unwrap();
        feed.changed().await.unwrap();
        assert!(store.sources_ready());
        assert!(store.get("a").is_some());
        cancel.cancel();
        task.await.unwrap();
    }
}
