//! Keeps one worker per pod UID in step with the desired pods: new pods get a worker, changed pods
//! get their new spec, pods gone from every source are terminated. At start-up it adopts what the
//! runtime already runs (design decision 2): desired pods are picked up by their workers without
//! restarting anything healthy, and kubelet-managed pods nobody wants any more are terminated.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    execute::Executor,
    observe::Observer,
    plan::grace_period,
    pleg::Wakers,
    worker::{self, DesiredState, StatusSink},
};
use crate::pod::Snapshot;

/// Grace for pods found in the runtime with no spec (upstream's default grace period).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);

struct Workers {
    executor: Arc<Executor>,
    status: Arc<dyn StatusSink>,
    wakers: Wakers,
    cancel: CancellationToken,
    desired: HashMap<String, watch::Sender<DesiredState>>,
    tasks: JoinSet<String>,
}

impl Workers {
    fn spawn(&mut self, uid: &str, state: DesiredState) {
        let (tx, rx) = watch::channel(state);
        self.desired.insert(uid.to_owned(), tx);
        let wake = self.wakers.get(uid);
        let (uid, executor, status, cancel) = (
            uid.to_owned(),
            self.executor.clone(),
            self.status.clone(),
            self.cancel.clone(),
        );
        self.tasks.spawn(async move {
            worker::run(uid.clone(), rx, executor, status, wake, cancel).await;
            uid
        });
    }

    /// Brings the workers in line with `pods` (by UID).
    fn apply(&mut self, pods: &HashMap<String, Arc<Pod>>) {
        for (uid, pod) in pods {
            match self.desired.get(uid) {
                Some(tx) => {
                    tx.send_if_modified(|state| match state {
                        DesiredState::Run(current) if current == pod => false,
                        _ => {
                            *state = DesiredState::Run(pod.clone());
                            true
                        }
                    });
                }
                None => self.spawn(uid, DesiredState::Run(pod.clone())),
            }
        }
        for (uid, tx) in &self.desired {
            if pods.contains_key(uid) {
                continue;
            }
            tx.send_if_modified(|state| match state {
                DesiredState::Run(pod) => {
                    let grace = grace_period(pod);
                    tracing::info!(%uid, ?grace, "pod no longer desired: terminating");
                    *state = DesiredState::Terminate {
                        pod: Some(pod.clone()),
                        grace,
                    };
                    true
                }
                DesiredState::Terminate { .. } => false,
            });
        }
    }
}

fn by_uid(snapshot: &Snapshot) -> HashMap<String, Arc<Pod>> {
    snapshot
        .pods
        .iter()
        .filter_map(|pod| Some((pod.metadata.uid.clone()?, Arc::new(pod.clone()))))
        .collect()
}

/// Runs until `cancel`; returns after every worker has stopped.
pub async fn run(
    mut source: watch::Receiver<Snapshot>,
    executor: Arc<Executor>,
    status: Arc<dyn StatusSink>,
    wakers: Wakers,
    cancel: CancellationToken,
) {
    let mut workers = Workers {
        executor: executor.clone(),
        status,
        wakers: wakers.clone(),
        cancel: cancel.clone(),
        desired: HashMap::new(),
        tasks: JoinSet::new(),
    };
    let mut pods = by_uid(&source.borrow_and_update());
    update_tiers(&executor, &pods);
    workers.apply(&pods);
    if let Some(in_runtime) = adopt_orphans(&mut workers, &executor, &pods).await {
        remove_orphan_cgroups(&executor, &pods, &in_runtime).await;
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = source.changed() => {
                if changed.is_err() {
                    break;
                }
                pods = by_uid(&source.borrow_and_update());
                update_tiers(&executor, &pods);
                workers.apply(&pods);
            }
            Some(done) = workers.tasks.join_next() => {
                let Ok(uid) = done else { continue };
                workers.desired.remove(&uid);
                wakers.remove(&uid);
                // Re-added while it was being terminated: start it again.
                if let Some(pod) = pods.get(&uid) {
                    workers.spawn(&uid, DesiredState::Run(pod.clone()));
                }
            }
        }
    }
    while workers.tasks.join_next().await.is_some() {}
}

/// Re-weights the `QoS` tiers for the desired pods (upstream's `UpdateQOSCgroups`).
fn update_tiers(executor: &Executor, pods: &HashMap<String, Arc<Pod>>) {
    if let Some(cgroups) = executor.cgroups()
        && let Err(error) = cgroups.update_tiers(pods.values().map(AsRef::as_ref))
    {
        tracing::warn!(%error, "cannot update the QoS tier cgroups");
    }
}

/// Removes pod cgroups neither a source nor the runtime knows (left by a previous run whose pods
/// are gone); pods still in the runtime keep theirs until their worker has stopped them.
async fn remove_orphan_cgroups(
    executor: &Executor,
    pods: &HashMap<String, Arc<Pod>>,
    in_runtime: &HashSet<String>,
) {
    let Some(cgroups) = executor.cgroups().cloned() else {
        return;
    };
    let keep: HashSet<String> = pods.keys().chain(in_runtime).cloned().collect();
    match tokio::task::spawn_blocking(move || cgroups.remove_orphans(&keep)).await {
        Ok(Ok(removed)) if !removed.is_empty() => {
            tracing::info!(?removed, "removed orphaned pod cgroups");
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot list pod cgroups"),
        Err(error) => tracing::warn!(%error, "orphaned pod cgroup task failed"),
    }
}

/// Terminates kubelet-managed pods in the runtime that no source wants (a manifest removed while
/// kernlet was down). Pods that are wanted were given workers already and are adopted by them.
/// Returns the UIDs the runtime has, `None` when it cannot be listed.
async fn adopt_orphans(
    workers: &mut Workers,
    executor: &Executor,
    pods: &HashMap<String, Arc<Pod>>,
) -> Option<HashSet<String>> {
    let mut observer = Observer::default();
    let existing = match observer.observe(executor.runtime(), None).await {
        Ok(existing) => existing,
        Err(error) => {
            tracing::warn!(%error, "cannot list the runtime's pods at start-up; orphans stay until the next start");
            return None;
        }
    };
    let in_runtime = existing.keys().cloned().collect();
    for (uid, runtime) in existing {
        if pods.contains_key(&uid) || workers.desired.contains_key(&uid) {
            continue;
        }
        tracing::info!(%uid, sandboxes = runtime.sandboxes.len(), containers = runtime.containers.len(),
            "terminating pod no source wants");
        workers.spawn(
            &uid,
            DesiredState::Terminate {
                pod: None,
                grace: ORPHAN_GRACE,
            },
        );
    }
    Some(in_runtime)
}
