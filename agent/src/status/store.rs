//! The latest status of every pod, as workers report it: computed once per report (not per
//! request), served by `GET /pods`, and published to subscribers as a change feed.
//!
//! The feed is per subscriber and coalesced per pod UID: a subscriber that is slow to read gets
//! each changed UID once, whatever the number of changes in between, and then reads the current
//! pod with [`StatusStore::get`]. A report that changes nothing (the same status again) notifies
//! nobody. This is what the API status manager and mirror pods subscribe to.
//!
//! Completeness: after a restart the list is empty until workers have observed their pods. The
//! reconcile manager says when every pod source has listed ([`StatusSink::sources_ready`]); the
//! list is complete once each pod desired then has reported (or the wait is given up), and
//! [`PodsProvider::complete`] is false until then, so `/pods` never shows a node without the
//! pods it runs.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use tokio::sync::Notify;

use super::{StatusInput, pod_status};
use crate::{
    clock::{self, Clock},
    reconcile::{
        state::{Nanos, PodRuntime, RunState},
        worker::{PodReport, StatusSink},
    },
};

/// The pods with their status filled in, as `GET /pods` lists them; the status store implements
/// it, tests pass a closure.
pub trait PodsProvider: Send + Sync + 'static {
    fn pods(&self) -> Vec<Pod>;

    /// False while the list may miss pods that run (kernlet starting: sources not yet read or
    /// pods not yet observed); `/pods` then answers 503 rather than an incomplete list.
    fn complete(&self) -> bool {
        true
    }

    /// Each pod's UID and revision, a number that changes whenever the pod's status does; `None`
    /// when the provider keeps none (then readers take [`Self::pods`] whole).
    fn revisions(&self) -> Option<Vec<(String, u64)>> {
        None
    }

    /// A number that changes whenever [`Self::pods`] would list something else (a status
    /// changed, a pod came or went); `None` when the provider keeps none (then readers cannot
    /// keep what they made of the list).
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Pod `uid` with its status.
    fn pod(&self, uid: &str) -> Option<Pod> {
        self.pods()
            .into_iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
    }
}

impl<F> PodsProvider for F
where
    F: Fn() -> Vec<Pod> + Send + Sync + 'static,
{
    fn pods(&self) -> Vec<Pod> {
        self()
    }
}

/// Pods with their computed status, by UID.
#[derive(Debug)]
pub struct StatusStore {
    runtime_name: String,
    host_ips: Vec<IpAddr>,
    /// Condition transition times.
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    exit_observer: ExitObserver,
}

/// Told, for each container the store last showed running and now shows exited, how long after
/// the runtime's `finishedAt` the status said so: the node's exit-to-status latency.
#[derive(Default)]
struct ExitObserver(Option<Box<dyn Fn(Duration) + Send + Sync>>);

impl std::fmt::Debug for ExitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    /// Each pod's revision: the value of `revision` when its status last changed.
    revisions: HashMap<String, u64>,
    /// Counts every change of the list: a status changed, a pod came or went.
    revision: u64,
    /// `None` until the sources are listed; then the pods still to report.
    awaiting: Option<HashSet<String>>,
    subscribers: Vec<Weak<Subscriber>>,
}

#[derive(Debug, Default)]
struct Subscriber {
    changed: Mutex<BTreeSet<String>>,
    notify: Notify,
}

/// One subscriber's view of the change feed.
#[derive(Debug)]
pub struct StatusFeed {
    inner: Arc<Subscriber>,
}

impl StatusFeed {
    /// Waits until at least one pod's status changed (or the pod went away) since the last call,
    /// and returns the UIDs that did, each once.
    pub async fn changed(&mut self) -> Vec<String> {
        loop {
            let taken = std::mem::take(
                &mut *self
                    .inner
                    .changed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            if !taken.is_empty() {
                return taken.into_iter().collect();
            }
            self.inner.notify.notified().await;
        }
    }
}

impl StatusStore {
    #[must_use]
    pub fn new(runtime_name: String, host_ips: Vec<IpAddr>) -> Self {
        Self {
            runtime_name,
            host_ips,
            clock: clock::system(),
            state: Mutex::default(),
            exit_observer: ExitObserver::default(),
        }
    }

    /// This store calling `observe` with each container exit's latency from the runtime's
    /// `finishedAt` to the status that shows it (`kernlet_pleg_exit_to_status_seconds`).
    #[must_use]
    pub fn with_exit_observer(
        mut self,
        observe: impl Fn(Duration) + Send + Sync + 'static,
    ) -> Self {
        self.exit_observer = ExitObserver(Some(Box::new(observe)));
        self
    }

    /// This store stamping conditions with `clock` (unit tests: a clock on paused time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new subscriber to status changes; it sees changes made from now on.
    #[must_use]
    pub fn subscribe(&self) -> StatusFeed {
        let inner = Arc::new(Subscriber::default());
        self.lock().subscribers.push(Arc::downgrade(&inner));
        StatusFeed { inner }
    }

    /// Pod `uid` with its latest status, if it is known.
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<Pod> {
        self.lock().pods.get(uid).cloned()
    }

    fn changed(state: &mut State, uid: &str) {
        if let Some(awaiting) = &mut state.awaiting {
            awaiting.remove(uid);
        }
        state.subscribers.retain(|weak| {
            let Some(subscriber) = weak.upgrade() else {
                return false;
            };
            subscriber
                .changed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid.to_owned());
            subscriber.notify.notify_one();
            true
        });
    }
}

impl StatusSink for StatusStore {
    fn publish(&self, uid: &str, report: Option<PodReport>) {
        let mut state = self.lock();
        let Some(report) = report else {
            if state.pods.remove(uid).is_some() {
                state.revisions.remove(uid);
                state.revision += 1;
                Self::changed(&mut state, uid);
            } else if let Some(awaiting) = &mut state.awaiting {
                awaiting.remove(uid);
            }
            return;
        };
        let previous = state.pods.get(uid).and_then(|p| p.status.clone());
        if let (Some(observe), Some(previous)) = (&self.exit_observer.0, &previous) {
            let now = self.clock.wall_nanos();
            for finished_at in newly_exited(previous, &report.runtime) {
                observe(Duration::from_nanos(
                    u64::try_from(now.saturating_sub(finished_at)).unwrap_or(0),
                ));
            }
        }
        let status = pod_status(&StatusInput {
            pod: &report.pod,
            runtime: &report.runtime,
            runtime_name: &self.runtime_name,
            waiting: &report.waiting,
            backing_off: &report.backing_off,
            probes: &report.runtime.probes,
            host_ips: &self.host_ips,
            start_time: None,
            terminating: report.terminating,
            previous: previous.as_ref(),
            now: Time(
                Timestamp::from_nanosecond(i128::from(self.clock.wall_nanos()))
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            ),
        });
        let mut pod = (*report.pod).clone();
        pod.status = Some(status);
        if state.pods.get(uid) == Some(&pod) {
            // Reported, so no longer awaited, but nothing changed for subscribers.
            if let Some(awaiting) = &mut state.awaiting {
                awaiting.remove(uid);
            }
            return;
        }
        state.pods.insert(uid.to_owned(), pod);
        state.revision += 1;
        let revision = state.revision;
        state.revisions.insert(uid.to_owned(), revision);
        Self::changed(&mut state, uid);
    }

    fn sources_ready(&self, uids: &[String]) {
        let mut state = self.lock();
        let awaiting = uids
            .iter()
            .filter(|uid| !state.pods.contains_key(*uid))
            .cloned()
            .collect();
        state.awaiting = Some(awaiting);
    }

    fn first_status_overdue(&self) {
        let mut state = self.lock();
        if let Some(awaiting) = state.awaiting.as_mut().filter(|a| !a.is_empty()) {
            tracing::warn!(pods = ?awaiting, "no first status from these pods in time; /pods lists the others");
            awaiting.clear();
        }
    }
}

impl PodsProvider for StatusStore {
    fn pods(&self) -> Vec<Pod> {
        let mut list: Vec<Pod> = self.lock().pods.values().cloned().collect();
        list.sort_by(|a, b| {
            let (a, b) = (&a.metadata, &b.metadata);
            (a.namespace.as_deref(), a.name.as_deref())
                .cmp(&(b.namespace.as_deref(), b.name.as_deref()))
        });
        list
    }

    fn generation(&self) -> Option<u64> {
        Some(self.lock().revision)
    }

    fn complete(&self) -> bool {
        self.lock().awaiting.as_ref().is_some_and(HashSet::is_empty)
    }

    fn revisions(&self) -> Option<Vec<(String, u64)>> {
        let state = self.lock();
        Some(
            state
                .revisions
                .iter()
                .map(|(uid, r)| (uid.clone(), *r))
                .collect(),
        )
    }

    fn pod(&self, uid: &str) -> Option<Pod> {
        self.get(uid)
    }
}

/// The `finishedAt` of each container `runtime` has exited that `previous` showed running.
fn newly_exited(previous: &PodStatus, runtime: &PodRuntime) -> Vec<Nanos> {
    let running: HashSet<&str> = [
        &previous.init_container_statuses,
        &previous.container_statuses,
        &previous.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    .filter_map(|c| {
        c.container_id
            .as_deref()?
            .split_once("://")
            .map(|(_, id)| id)
    })
    .collect();
    runtime
        .containers
        .iter()
        .filter(|c| c.state == RunState::Exited && c.finished_at > 0)
        .filter(|c| running.contains(c.id.as_str()))
        .map(|c| c.finished_at)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::{
        api::core::v1::{Container, PodSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;
    use crate::reconcile::state::PodRuntime;

    fn report(uid: &str, image: &str) -> PodReport {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{uid}")),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        PodReport {
            pod: Arc::new(pod),
            runtime: PodRuntime::default(),
            waiting: HashMap::new(),
            backing_off: Vec::new(),
            terminating: false,
        }
    }

    fn store() -> StatusStore {
        StatusStore::new("containerd".into(), Vec::new())
    }

    #[tokio::test(start_paused = true)]
    async fn the_feed_coalesces_per_uid_and_skips_unchanged_reports() {
        let store = store();
        let mut feed = store.subscribe();
        store.publish("a", Some(report("a", "one")));
        store.publish("a", Some(report("a", "two")));
        store.publish("b", Some(report("b", "one")));
        assert_eq!(feed.changed().await, ["a", "b"]);
        store.publish("b", Some(report("b", "one")));
        let quiet = tokio::time::timeout(Duration::from_secs(1), feed.changed()).await;
        assert!(quiet.is_err(), "an unchanged status notified: {quiet:?}");
        store.publish("a", None);
        assert_eq!(feed.changed().await, ["a"]);
        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_is_observed_once_with_its_latency_from_finished_at() {
        use crate::{
            clock::TestClock,
            reconcile::state::{Container as Instance, RunState, Sandbox},
        };
        const NOW: Nanos = 1_700_000_000_000_000_000;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let store = store()
            .with_clock(Arc::new(TestClock::new(NOW)))
            .with_exit_observer(move |took| record.lock().unwrap().push(took));
        let instance = |state, finished_at| Instance {
            id: "c1".into(),
            sandbox_id: "s1".into(),
            name: "main".into(),
            state,
            hash: String::new(),
            restart_count: 0,
            exit_code: 137,
            created_at: NOW - 5_000_000_000,
            started_at: NOW - 4_000_000_000,
            finished_at,
            reason: String::new(),
            message: String::new(),
            image: "one".into(),
            image_ref: String::new(),
        };
        let with = |container| {
            let mut report = report("a", "one");
            report.runtime = PodRuntime {
                sandboxes: vec![Sandbox {
                    id: "s1".into(),
                    ready: true,
                    attempt: 0,
                    created_at: NOW - 6_000_000_000,
                    ip: None,
                }],
                containers: vec![container],
                ..PodRuntime::default()
            };
            report
        };
        store.publish("a", Some(with(instance(RunState::Running, 0))));
        store.publish(
            "a",
            Some(with(instance(RunState::Exited, NOW - 30_000_000))),
        );
        store.publish(
            "a",
            Some(with(instance(RunState::Exited, NOW - 30_000_000))),
        );
        assert_eq!(*seen.lock().unwrap(), [Duration::from_millis(30)]);
    }

    /// The generation moves with every change of the list and only then.
    #[test]
    fn the_generation_moves_when_the_list_changes() {
        let store = store();
        let at = || store.generation().unwrap();
        let empty = at();
        store.publish("a", Some(report("a", "one")));
        let one = at();
        assert_ne!(one, empty);
        store.publish("a", Some(report("a", "one")));
        assert_eq!(at(), one, "an unchanged status");
        store.publish("b", Some(report("b", "one")));
        let two = at();
        assert_ne!(two, one);
        store.publish("a", None);
        assert_ne!(at(), two, "a pod gone");
        let gone = at();
        store.publish("a", None);
        assert_eq!(at(), gone, "a pod already gone");
        assert_eq!(store.pods().len(), 1);
    }

    #[test]
    fn the_list_is_complete_once_every_pod_known_at_start_has_reported() {
        let store = store();
        assert!(!store.complete(), "sources not listed yet");
        store.publish("a", Some(report("a", "one")));
        store.sources_ready(&["a".into(), "b".into(), "c".into()]);
        assert!(!store.complete());
        store.publish("b", Some(report("b", "one")));
        assert!(!store.complete(), "c is missing");
        store.publish("c", None);
        assert!(store.complete(), "a pod reported gone counts as reported");

        let late = self::store();
        late.sources_ready(&["x".into()]);
        assert!(!late.complete());
        late.first_status_overdue();
        assert!(late.complete(), "given up waiting");
    }
}
