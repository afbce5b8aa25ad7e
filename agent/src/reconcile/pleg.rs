//! Pod lifecycle events: wake the worker of a pod whose containers or sandboxes changed.
//!
//! Four sources (design decision 4), so a container's exit reaches its pod's worker within
//! milliseconds on every runtime:
//! - CRI `GetContainerEvents`, where the runtime streams it;
//! - containerd's own task events ([`crate::cri::exits`]) on containerd 1.6 and 1.7, which have
//!   no CRI event stream: the exit is recorded (so the reconciler sees it before CRI does) and the
//!   pod woken;
//! - a pidfd per running container ([`super::exits`]) on other runtimes without events: the
//!   kernel says the process died, CRI is asked until it agrees;
//! - a cheap relist (`ListPodSandbox` + `ListContainers`, no status calls) diffed against the
//!   previous one, which repairs anything missed, prunes exit records CRI has caught up with, and
//!   tells the pidfd watches what runs.
//!
//! The relist runs every `relist_period` (5 s) while CRI events flow and every second otherwise,
//! as upstream's generic PLEG does.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kernlet_cri::v1;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::exits::{ExitCounts, ExitWatches};
use crate::clock::Clock as _;
use crate::cri::{
    Runtime,
    exits::{ExitRecords, TaskEvent},
    labels,
};

/// Longest pause between attempts to follow containerd's task events again (after a containerd
/// restart, exits meanwhile wait for the 1 s relist).
const TASK_EVENTS_RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest wait before opening `GetContainerEvents` again.
const EVENTS_RETRY_MAX: Duration = Duration::from_secs(30);
/// Relist period when the runtime streams container events.
pub const RELIST_WITH_EVENTS: Duration = Duration::from_secs(5);
/// Relist period without an event stream (upstream's generic PLEG period).
pub const RELIST_WITHOUT_EVENTS: Duration = Duration::from_secs(1);

/// Per-pod wake-ups, shared by the PLEG (which notifies) and the workers (which wait).
#[derive(Debug, Default, Clone)]
pub struct Wakers {
    inner: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Wakers {
    /// The notifier of pod `uid` (created on first use).
    #[must_use]
    pub fn get(&self, uid: &str) -> Arc<Notify> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(uid.to_owned()).or_default().clone()
    }

    /// Wakes pod `uid`'s worker, if it has one.
    pub fn wake(&self, uid: &str) {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = map.get(uid) {
            notify.notify_one();
        }
    }

    /// Drops pod `uid`'s notifier (its worker ended).
    pub fn remove(&self, uid: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
    }
}

/// What a relist remembers of each object: its pod and state.
type Fingerprint = HashMap<String, (String, i32)>;

/// Where the PLEG learns of exits besides CRI events and the relist.
#[derive(Debug, Clone)]
pub struct ExitSources {
    /// What the exit routes did, for `/metrics`.
    pub counts: Arc<ExitCounts>,
    /// The exits the reconciler's client overlays.
    pub records: ExitRecords,
    /// Follow containerd's task events when the runtime is containerd (off only to test the
    /// pidfd route against containerd, through `KERNLET_FAULT_INJECT=no-task-events`).
    pub task_events: bool,
    /// Beats after each successful relist (`/healthz`'s `syncloop`).
    pub relisted: Arc<crate::supervise::Heartbeat>,
}

/// Runs until `cancel`: the event streams (when the runtime has them), the exit watches and the
/// relist. `runtime` must be a client without exit records (the relist needs CRI's own view).
pub async fn run(runtime: Runtime, wakers: Wakers, exits: ExitSources, cancel: CancellationToken) {
    let ExitSources {
        counts: exit_counts,
        records,
        task_events,
        relisted,
    } = exits;
    // containerd publishes task events; pidfds are for runtimes that turn out not to.
    let containerd = task_events && runtime.version().runtime_name == "containerd";
    let task_events_expected = Arc::new(AtomicBool::new(containerd));
    let running_pods = RunningPods::default();
    let task_events = {
        let follower = TaskEvents {
            runtime: runtime.clone(),
            counts: exit_counts.clone(),
            wakers: wakers.clone(),
            records: records.clone(),
            pods: running_pods.clone(),
            expected: task_events_expected.clone(),
        };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if containerd {
                follower.run(&cancel).await;
            }
        })
    };
    let events_flowing = Arc::new(Notify::new());
    let events = {
        let (runtime, wakers, cancel, flowing) = (
            runtime.clone(),
            wakers.clone(),
            cancel.clone(),
            events_flowing.clone(),
        );
        tokio::spawn(async move { watch_events(&runtime, &wakers, &cancel, &flowing).await })
    };
    let mut exits = ExitWatches::new(
        Arc::new(runtime.clone()),
        wakers.clone(),
        exit_counts,
        cancel.child_token(),
    );
    let mut period = RELIST_WITHOUT_EVENTS;
    let mut previous = Fingerprint::new();
    loop {
        match relist(&runtime).await {
            Ok(Relist {
                fingerprint: current,
                running,
            }) => {
                relisted.beat();
                for uid in changed_pods(&previous, &current) {
                    wakers.wake(&uid);
                }
                records.retain_running(&running.iter().map(|(id, _)| id.as_str()).collect());
                running_pods.set(&running);
                // Task events carry exits faster than a pidfd and CRI would; a runtime without
                // them gets the pidfd watches.
                if task_events_expected.load(Ordering::Relaxed) {
                    exits.sync([]);
                } else {
                    exits.sync(running.iter().map(|(id, uid)| (id.as_str(), uid.as_str())));
                }
                previous = current;
            }
            Err(error) => tracing::warn!(%error, "pleg relist failed"),
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(period) => {}
            () = events_flowing.notified() => {
                tracing::info!(period = ?RELIST_WITH_EVENTS, "runtime streams container events");
                period = RELIST_WITH_EVENTS;
            }
        }
    }
    let _ = events.await;
    let _ = task_events.await;
}

/// The pod of each running container as of the last relist, so an exit event wakes its pod
/// without a status call.
#[derive(Debug, Default, Clone)]
struct RunningPods(Arc<Mutex<HashMap<String, String>>>);

impl RunningPods {
    fn set(&self, running: &[(String, String)]) {
        let mut pods = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pods.clear();
        pods.extend(running.iter().cloned());
    }

    fn get(&self, container: &str) -> Option<String> {
        let pods = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pods.get(container).cloned()
    }
}

/// Follows containerd's task events: records each exit for the reconciler's client and wakes the
/// container's pod.
struct TaskEvents {
    runtime: Runtime,
    pods: RunningPods,
    counts: Arc<ExitCounts>,
    wakers: Wakers,
    records: ExitRecords,
    /// Whether the runtime has task events (false once it answers Unimplemented).
    expected: Arc<AtomicBool>,
}

impl TaskEvents {
    /// Returns when cancelled or when the runtime has no containerd event service.
    async fn run(&self, cancel: &CancellationToken) {
        // containerd answers the subscription with its first event, so opening returns only then.
        let opened = follow(
            "containerd task events",
            cancel,
            TASK_EVENTS_RETRY_MAX,
            || self.runtime.task_events(),
            |envelope| async move {
                if let Some(event) = TaskEvent::decode(&envelope) {
                    self.handle(event).await;
                }
            },
        );
        if opened.await == StreamEnd::Unimplemented {
            self.expected.store(false, Ordering::Relaxed);
            tracing::info!(
                "runtime has no containerd event service; pidfds and the relist carry exits"
            );
        }
    }

    async fn handle(&self, event: TaskEvent) {
        let id = event.container_id().to_owned();
        let TaskEvent::Exit(exit) = &event else {
            self.records.record(event);
            return;
        };
        // How long the exit took to reach kernlet (the shim stamps it when it reaps).
        let lag_ms = (crate::clock::SystemClock.wall_nanos() - exit.finished_at) / 1_000_000;
        self.records.record(event);
        self.counts.count_task_exit();
        let uid = match self.pods.get(&id) {
            Some(uid) => uid,
            // Started since the last relist: the pod from the container's labels.
            None => match self.pod_of(&id).await {
                Some(uid) => uid,
                None => return,
            },
        };
        tracing::debug!(container = %id, pod = %uid, lag_ms, "container exited (task event)");
        self.wakers.wake(&uid);
    }

    async fn pod_of(&self, id: &str) -> Option<String> {
        let request = v1::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        match self.runtime.container_status(request).await {
            Ok(response) => {
                let labels = response.status.map(|s| s.labels).unwrap_or_default();
                labels.get(labels::POD_UID).cloned()
            }
            Err(error) => {
                tracing::debug!(container = %id, %error, "exited container's pod unknown; the relist wakes it");
                None
            }
        }
    }
}

/// One relist: every object's pod and state, and the running containers (ID, pod UID).
struct Relist {
    fingerprint: Fingerprint,
    running: Vec<(String, String)>,
}

async fn relist(runtime: &Runtime) -> Result<Relist, crate::cri::CriError> {
    let sandboxes = runtime
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await?
        .items;
    let containers = runtime
        .list_containers(v1::ListContainersRequest::default())
        .await?
        .containers;
    let mut fingerprint = Fingerprint::new();
    for sandbox in sandboxes {
        if let Some(uid) = sandbox.labels.get(labels::POD_UID) {
            fingerprint.insert(sandbox.id, (uid.clone(), sandbox.state));
        }
    }
    let mut running = Vec::new();
    for container in containers {
        if let Some(uid) = container.labels.get(labels::POD_UID) {
            if container.state == v1::ContainerState::ContainerRunning as i32 {
                running.push((container.id.clone(), uid.clone()));
            }
            fingerprint.insert(container.id, (uid.clone(), container.state));
        }
    }
    Ok(Relist {
        fingerprint,
        running,
    })
}

/// Pods with an object that appeared, disappeared or changed state between two relists.
fn changed_pods(previous: &Fingerprint, current: &Fingerprint) -> Vec<String> {
    let mut pods: Vec<String> = current
        .iter()
        .filter(|(id, now)| previous.get(*id) != Some(now))
        .chain(previous.iter().filter(|(id, _)| !current.contains_key(*id)))
        .map(|(_, (uid, _))| uid.clone())
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

/// Follows `GetContainerEvents`; returns when cancelled or when the runtime has no such stream.
async fn watch_events(
    runtime: &Runtime,
    wakers: &Wakers,
    cancel: &CancellationToken,
    flowing: &Notify,
) {
    let open = || async {
        let stream = runtime.container_events().await;
        if stream.is_ok() {
            flowing.notify_one();
        }
        stream
    };
    let each = |event: v1::ContainerEventResponse| async move {
        if let Some(uid) = event_pod(&event) {
            wakers.wake(&uid);
        }
    };
    let followed = follow("container events", cancel, EVENTS_RETRY_MAX, open, each);
    if followed.await == StreamEnd::Unimplemented {
        tracing::info!(
            "runtime has no container event stream; the relist alone drives pod updates"
        );
    }
}

/// Why [`follow`] returned.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    Cancelled,
    /// The runtime does not offer the stream at all.
    Unimplemented,
}

/// Opens a server stream, hands each message to `each`, and opens it again after a break or a
/// failed open, waiting 1 s and doubling up to `max_delay` (reset by any message).
async fn follow<T, Open, Opening, Each, Handling>(
    name: &str,
    cancel: &CancellationToken,
    max_delay: Duration,
    mut open: Open,
    mut each: Each,
) -> StreamEnd
where
    Open: FnMut() -> Opening,
    Opening: Future<Output = Result<tonic::Streaming<T>, crate::cri::CriError>>,
    Each: FnMut(T) -> Handling,
    Handling: Future<Output = ()>,
{
    const FIRST_DELAY: Duration = Duration::from_secs(1);
    let mut delay = FIRST_DELAY;
    loop {
        let opened = tokio::select! {
            () = cancel.cancelled() => return StreamEnd::Cancelled,
            opened = open() => opened,
        };
        match opened {
            Ok(mut stream) => {
                tracing::debug!(stream = name, "following");
                loop {
                    let message = tokio::select! {
                        () = cancel.cancelled() => return StreamEnd::Cancelled,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(message)) => {
                            delay = FIRST_DELAY;
                            each(message).await;
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(stream = name, %status, "stream broke");
                            break;
                        }
                    }
                }
            }
            Err(error) if error.code() == Some(tonic::Code::Unimplemented) => {
                return StreamEnd::Unimplemented;
            }
            Err(error) => tracing::warn!(stream = name, %error, "cannot open the stream"),
        }
        tokio::select! {
            () = cancel.cancelled() => return StreamEnd::Cancelled,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max_delay);
    }
}

fn event_pod(event: &v1::ContainerEventResponse) -> Option<String> {
    let sandbox = event.pod_sandbox_status.as_ref()?;
    sandbox
        .labels
        .get(labels::POD_UID)
        .cloned()
        .or_else(|| sandbox.metadata.as_ref().map(|m| m.uid.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(entries: &[(&str, &str, i32)]) -> Fingerprint {
        entries
            .iter()
            .map(|(id, uid, s)| ((*id).to_owned(), ((*uid).to_owned(), *s)))
            .collect()
    }

    #[test]
    fn relist_diff_names_pods_with_new_gone_or_changed_objects() {
        let before = fp(&[("c1", "a", 1), ("c2", "b", 1), ("c3", "c", 1)]);
        let after = fp(&[("c1", "a", 1), ("c2", "b", 2), ("c4", "d", 0)]);
        assert_eq!(changed_pods(&before, &after), ["b", "c", "d"]);
        assert!(changed_pods(&after, &after).is_empty());
    }

    #[tokio::test]
    async fn wakers_wake_only_registered_pods() {
        let wakers = Wakers::default();
        let notify = wakers.get("a");
        wakers.wake("b"); // no worker: nothing happens
        wakers.wake("a");
        tokio::time::timeout(Duration::from_secs(1), notify.notified())
            .await
            .unwrap();
        wakers.remove("a");
        assert!(wakers.inner.lock().unwrap().is_empty());
    }
}
