//! Keeps one worker per pod UID in step with the desired pods: new pods get a worker, changed pods
//! get their new spec, pods gone from every source are terminated. At start-up it adopts what the
//! runtime already runs (design decision 2): desired pods are picked up by their workers without
//! restarting anything healthy, and kubelet-managed pods nobody wants any more are terminated.
use std::{collections::HashMap, sync::Arc, time::Duration};

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
    workers.apply(&pods);
    adopt_orphans(&mut workers, &executor, &pods).await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = source.changed() => {
                if changed.is_err() {
                    break;
                }
                pods = by_uid(&source.borrow_and_update());
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

/// Terminates kubelet-managed pods in the runtime that no source wants (a manifest removed while
/// kernlet was down). Pods that are wanted were given workers already and are adopted by them.
async fn adopt_orphans(
    workers: &mut Workers,
    executor: &Executor,
    pods: &HashMap<String, Arc<Pod>>,
) {
    let mut observer = Observer::default();
    let existing = match observer.observe(executor.runtime(), None).await {
        Ok(existing) => existing,
        Err(error) => {
            tracing::warn!(%error, "cannot list the runtime's pods at start-up; orphans stay until the next start");
            return;
        }
    };
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
}
