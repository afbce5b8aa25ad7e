//! Keeps one worker per pod UID in step with the pod store: new pods get a worker, changed pods
//! get their new spec, pods being deleted or gone from every source are terminated.
//!
//! Restart safety (design decision 2, upstream's `sourcesReady` gate in `HandlePodCleanups`):
//! desired pods get their workers as soon as a source lists them, and a worker adopts what the
//! runtime already runs for its pod without restarting it. Only once *every* source has delivered
//! a complete list does the manager look for orphans (kubelet-managed pods in the runtime that no
//! source wants) and terminate them, and remove pod cgroups nobody knows. Before that, a pod
//! missing from the store may simply not have been read yet.
//!
//! Workers are supervised: a worker that panics is logged with its pod, counted
//! (`kernlet_task_restarts_total{task="worker"}`) and replaced, after a backoff, by a new worker
//! for the same desired state, so no pod is ever left unmanaged.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::watch,
    task::{self, JoinSet},
};
use tokio_util::sync::CancellationToken;

use super::{
    execute::Executor,
    observe::Observer,
    plan::grace_period,
    pleg::Wakers,
    worker::{self, DesiredState, StatusSink},
};
use crate::{
    pod::{DesiredPod, PodStore},
    supervise::{Faults, TaskRestarts, backoff, panic_message},
};

/// Grace for pods found in the runtime with no spec (upstream's default grace period).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);
/// How long `/pods` waits for the first status of the pods known at start-up.
const FIRST_STATUS_WAIT: Duration = Duration::from_secs(30);
/// How long a worker given an injected panic runs first.
const INJECTED_PANIC_AFTER: Duration = Duration::from_secs(2);

/// What the manager shares with its workers and its supervisor.
pub struct Context {
    pub executor: Arc<Executor>,
    pub status: Arc<dyn StatusSink>,
    pub wakers: Wakers,
    pub restarts: Arc<TaskRestarts>,
    pub faults: Arc<Faults>,
}

struct Workers {
    ctx: Arc<Context>,
    cancel: CancellationToken,
    desired: HashMap<String, watch::Sender<DesiredState>>,
    tasks: JoinSet<String>,
    /// The pod UID of each running worker task.
    ids: HashMap<task::Id, String>,
    /// Panics in a row per UID, for the replacement's backoff.
    panics: HashMap<String, u32>,
    /// Pods whose deletion was carried out while the store still lists them (being deleted):
    /// they get no new worker.
    deleted: HashSet<String>,
}

impl Workers {
    fn spawn(&mut self, uid: &str, state: DesiredState, delay: Duration) {
        let name = match &state {
            DesiredState::Run(pod) => pod.metadata.name.clone(),
            DesiredState::Terminate { pod, .. } => {
                pod.as_ref().and_then(|p| p.metadata.name.clone())
            }
        };
        let (tx, rx) = watch::channel(state);
        self.desired.insert(uid.to_owned(), tx);
        let wake = self.ctx.wakers.get(uid);
        let inject_panic = self.ctx.faults.take_worker_panic(name.as_deref());
        let key = uid.to_owned();
        let (uid, ctx, cancel) = (uid.to_owned(), self.ctx.clone(), self.cancel.clone());
        let handle = self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => return uid,
                () = tokio::time::sleep(delay) => {}
            }
            let run = worker::run(
                uid.clone(),
                rx,
                ctx.executor.clone(),
                ctx.status.clone(),
                wake,
                cancel,
            );
            if inject_panic {
                tokio::select! {
                    () = run => {}
                    () = tokio::time::sleep(INJECTED_PANIC_AFTER) => {
                        panic!("injected fault: worker of pod {uid} panics (KERNLET_FAULT_INJECT)");
                    }
                }
            } else {
                run.await;
            }
            uid
        });
        self.ids.insert(handle.id(), key);
    }

    /// Brings the workers in line with the store's `pods` (by UID).
    fn apply(&mut self, pods: &HashMap<String, DesiredPod>) {
        self.deleted.retain(|uid| {
            pods.get(uid)
                .is_some_and(|desired| desired.deletion.is_some())
        });
        for (uid, desired) in pods {
            let target = match desired.deletion {
                Some(deletion) => DesiredState::Terminate {
                    pod: Some(desired.pod.clone()),
                    grace: deletion.grace,
                },
                None => DesiredState::Run(desired.pod.clone()),
            };
            match self.desired.get(uid) {
                Some(tx) => {
                    tx.send_if_modified(|state| update(uid, state, target));
                }
                None if self.deleted.contains(uid) => {}
                None => self.spawn(uid, target, Duration::ZERO),
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

    /// A worker task ended: replace it if it failed, start it again if its pod is wanted again.
    fn finished(
        &mut self,
        done: Result<(task::Id, String), task::JoinError>,
        pods: &HashMap<String, DesiredPod>,
    ) {
        let (id, failure) = match done {
            Ok((id, _)) => (id, None),
            Err(error) => {
                let id = error.id();
                let why = if error.is_panic() {
                    panic_message(&*error.into_panic())
                } else {
                    error.to_string()
                };
                (id, Some(why))
            }
        };
        let Some(uid) = self.ids.remove(&id) else {
            return;
        };
        if let Some(why) = failure {
            if self.cancel.is_cancelled() {
                return;
            }
            let state = self.desired.get(&uid).map(|tx| tx.borrow().clone());
            self.ctx.restarts.record("worker");
            let failures = self.panics.entry(uid.clone()).or_default();
            *failures += 1;
            let delay = backoff(*failures);
            tracing::error!(%uid, panic = %why, restart_in = ?delay, "pod worker failed; replacing it");
            if let Some(state) = state {
                self.spawn(&uid, state, delay);
            }
            return;
        }
        self.panics.remove(&uid);
        self.desired.remove(&uid);
        self.ctx.wakers.remove(&uid);
        match pods.get(&uid) {
            Some(desired) if desired.deletion.is_some() => {
                self.deleted.insert(uid);
            }
            // Re-added while it was being terminated: start it again.
            Some(desired) => {
                self.spawn(&uid, DesiredState::Run(desired.pod.clone()), Duration::ZERO);
            }
            None => {}
        }
    }
}

/// The new desired state of a worker, if it changes.
fn update(uid: &str, state: &mut DesiredState, target: DesiredState) -> bool {
    match (&*state, &target) {
        (DesiredState::Run(current), DesiredState::Run(pod)) if current == pod => false,
        // A later deletion may shorten the grace, never lengthen it (as upstream).
        (DesiredState::Terminate { grace: current, .. }, DesiredState::Terminate { grace, .. })
            if grace >= current =>
        {
            false
        }
        (_, DesiredState::Terminate { grace, .. }) => {
            tracing::info!(%uid, ?grace, "pod is being deleted: terminating");
            *state = target;
            true
        }
        _ => {
            *state = target;
            true
        }
    }
}

/// Runs until `cancel`; returns after every worker has stopped.
pub async fn run(store: Arc<PodStore>, ctx: Arc<Context>, cancel: CancellationToken) {
    let mut feed = store.subscribe();
    let mut workers = Workers {
        ctx: ctx.clone(),
        cancel: cancel.clone(),
        desired: HashMap::new(),
        tasks: JoinSet::new(),
        ids: HashMap::new(),
        panics: HashMap::new(),
        deleted: HashSet::new(),
    };
    let mut pods = HashMap::new();
    let mut cleaned = false;
    let mut changed = true;
    let mut awaiting_status = false;
    let first_status = tokio::time::sleep(FIRST_STATUS_WAIT);
    tokio::pin!(first_status);
    loop {
        if changed {
            feed.borrow_and_update();
            pods = store.snapshot();
            update_tiers(&ctx.executor, &pods);
            workers.apply(&pods);
            if !cleaned && store.sources_ready() {
                cleaned = true;
                let uids: Vec<String> = pods.keys().cloned().collect();
                tracing::info!(
                    pods = uids.len(),
                    "every pod source is listed: cleaning up orphans"
                );
                ctx.status.sources_ready(&uids);
                awaiting_status = true;
                first_status
                    .as_mut()
                    .reset(tokio::time::Instant::now() + FIRST_STATUS_WAIT);
                if let Some(in_runtime) = adopt_orphans(&mut workers, &ctx.executor, &pods).await {
                    remove_orphan_cgroups(&ctx.executor, &pods, &in_runtime).await;
                }
            }
        }
        changed = false;
        tokio::select! {
            () = cancel.cancelled() => break,
            result = feed.changed() => {
                if result.is_err() {
                    break;
                }
                changed = true;
            }
            Some(done) = workers.tasks.join_next_with_id() => workers.finished(done, &pods),
            () = &mut first_status, if awaiting_status => {
                awaiting_status = false;
                ctx.status.first_status_overdue();
            }
        }
    }
    while workers.tasks.join_next().await.is_some() {}
}

/// Re-weights the `QoS` tiers for the pods that are to run (upstream's `UpdateQOSCgroups`).
fn update_tiers(executor: &Executor, pods: &HashMap<String, DesiredPod>) {
    if let Some(cgroups) = executor.cgroups()
        && let Err(error) = cgroups.update_tiers(
            pods.values()
                .filter(|p| p.deletion.is_none())
                .map(|p| p.pod.as_ref()),
        )
    {
        tracing::warn!(%error, "cannot update the QoS tier cgroups");
    }
}

/// Removes pod cgroups neither a source nor the runtime knows (left by a previous run whose pods
/// are gone); pods still in the runtime keep theirs until their worker has stopped them.
async fn remove_orphan_cgroups(
    executor: &Executor,
    pods: &HashMap<String, DesiredPod>,
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
    pods: &HashMap<String, DesiredPod>,
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
            Duration::ZERO,
        );
    }
    Some(in_runtime)
}
