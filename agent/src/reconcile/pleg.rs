//! Pod lifecycle events: wake the worker of a pod whose containers or sandboxes changed.
//!
//! Two sources (design decision 4): CRI `GetContainerEvents` (containerd >= 1.7), which wakes a
//! worker within milliseconds, and a cheap relist (`ListPodSandbox` + `ListContainers`, no status
//! calls) diffed against the previous one, which repairs missed events. The relist runs every
//! `relist_period` (5 s) while events flow and every second when the runtime has no event stream,
//! as upstream's generic PLEG does.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use kernlet_cri::v1;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cri::{Runtime, labels};

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

/// Runs until `cancel`: the event stream (when the runtime has one) and the relist.
pub async fn run(runtime: Runtime, wakers: Wakers, cancel: CancellationToken) {
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
    let mut period = RELIST_WITHOUT_EVENTS;
    let mut previous = Fingerprint::new();
    loop {
        match relist(&runtime).await {
            Ok(current) => {
                for uid in changed_pods(&previous, &current) {
                    wakers.wake(&uid);
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
}

async fn relist(runtime: &Runtime) -> Result<Fingerprint, crate::cri::CriError> {
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
    for container in containers {
        if let Some(uid) = container.labels.get(labels::POD_UID) {
            fingerprint.insert(container.id, (uid.clone(), container.state));
        }
    }
    Ok(fingerprint)
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
    let mut delay = Duration::from_secs(1);
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            stream = runtime.container_events() => stream,
        };
        match stream {
            Ok(mut stream) => {
                flowing.notify_one();
                loop {
                    let message = tokio::select! {
                        () = cancel.cancelled() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(event)) => {
                            delay = Duration::from_secs(1);
                            if let Some(uid) = event_pod(&event) {
                                wakers.wake(&uid);
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(%status, "container event stream broke");
                            break;
                        }
                    }
                }
            }
            Err(error) if error.code() == Some(tonic::Code::Unimplemented) => {
                tracing::info!(
                    "runtime has no container event stream; the relist alone drives pod updates"
                );
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot open the container event stream"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
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
