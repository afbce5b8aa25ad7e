//! One task per pod UID: observe the runtime, [`plan`], publish the pod's
//! status, execute the plan through CRI, and sleep until something can change the answer — a
//! PLEG wake-up, a new desired state, or the earliest backoff expiry. No periodic sync.
//!
//! Stopping the worker (kernlet shutting down) never touches the pod: it belongs to the runtime.
use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    backoff::{Backoff, Memory},
    execute::{ExecuteError, Executor, defer_failed_garbage},
    hooks,
    observe::Observer,
    plan::{BackingOff, Desired, Plan, backoff_key, plan},
    spec::NodeContext,
    state::{Nanos, PodRuntime, RunState, Waiting},
};
use crate::cri::Cri;
use crate::event::{EventType, Recorder, reason};
use crate::probe::{Instance, PodProbes};

/// What a worker is told to make of its pod.
#[derive(Debug, Clone)]
pub enum DesiredState {
    /// Run the pod as specified.
    Run(Arc<Pod>),
    /// Stop and remove everything of the pod within `grace`; `pod` is the last known spec, if any
    /// (pods adopted from the runtime without a source have none).
    Terminate {
        pod: Option<Arc<Pod>>,
        grace: Duration,
    },
}

impl DesiredState {
    /// The pod spec wanted, if any.
    #[must_use]
    pub fn pod(&self) -> Option<&Arc<Pod>> {
        match self {
            Self::Run(pod) => Some(pod),
            Self::Terminate { pod, .. } => pod.as_ref(),
        }
    }
}

/// Something that wants to know each pod's latest status (the status store).
pub trait StatusSink: Send + Sync {
    /// The pod as last observed; `None` when the pod is gone.
    fn publish(&self, uid: &str, report: Option<PodReport>);

    /// Every pod source has listed its pods; `uids` are the pods desired then. The node's pod
    /// list is complete once each of them has been published.
    fn sources_ready(&self, _uids: &[String]) {}

    /// The pods named in [`StatusSink::sources_ready`] took too long to report: stop waiting.
    fn first_status_overdue(&self) {}
}

/// One pod's state for status computation.
#[derive(Debug, Clone)]
pub struct PodReport {
    pub pod: Arc<Pod>,
    pub runtime: PodRuntime,
    pub waiting: HashMap<String, Waiting>,
    pub backing_off: Vec<BackingOff>,
    pub terminating: bool,
}

/// Shortest and longest pause after a round whose actions failed.
const ERROR_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Runs pod `uid` until it is fully removed (after `Terminate`) or `cancel` fires.
pub async fn run(
    uid: String,
    mut desired: watch::Receiver<DesiredState>,
    executor: Arc<Executor>,
    status: Arc<dyn StatusSink>,
    wake: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let mut runtime_view = Observer::default();
    let mut memory = Memory::default();
    let mut error_pause = ERROR_BACKOFF.0;
    let mut adopted = false;
    let runtime: &dyn Cri = executor.runtime();
    let mut probes = executor.pod_probes(&wake, &cancel);
    // The runtime as last observed, while nothing has acted on it since (the worker paused).
    let mut quiet: Option<PodRuntime> = None;
    // The CrashLoopBackOff each container's `BackOff` event was recorded for (its end).
    let mut announced: HashMap<String, Nanos> = HashMap::new();
    loop {
        let want = desired.borrow_and_update().clone();
        // Woken by an exit the runtime's events reported: the status says so now, from the
        // quiet view, before the two CRI round trips of the observation below.
        if let Some(view) = quiet.take() {
            let sink = status.as_ref();
            publish_recorded_exits(&uid, &want, &view, &mut probes, &executor, &memory, sink);
        }
        // Cancellable: a loaded runtime answers slowly, and observing changes nothing.
        let observation = cancel.run_until_cancelled(runtime_view.observe_pod(runtime, &uid));
        let mut observed = match observation.await {
            None => return,
            Some(Ok(observed)) => observed,
            Some(Err(error)) => {
                tracing::warn!(%uid, %error, "observing pod failed");
                if pause(&mut desired, &wake, &cancel, Some(error_pause)).await {
                    return;
                }
                error_pause = (error_pause * 2).min(ERROR_BACKOFF.1);
                continue;
            }
        };
        sync_probes(&mut probes, &want, &mut observed, executor.node());
        if !adopted {
            adopted = true;
            recover_backoff(&uid, &observed, &mut memory.restarts);
        }
        let now = executor.clock().wall_nanos();
        let mut round = plan_and_publish(&uid, &want, &observed, &memory, status.as_ref(), now);
        defer_failed_garbage(&mut round.garbage, &mut memory, now);
        let pod = want.pod().cloned();
        if let Some(pod) = &pod {
            announce_backoff(executor.events(), pod, &round.backing_off, &mut announced);
        }
        if round.actions.is_empty() && round.garbage.is_empty() {
            if matches!(want, DesiredState::Terminate { .. }) {
                finish(
                    &uid,
                    &executor,
                    &mut runtime_view,
                    &observed,
                    status.as_ref(),
                )
                .await;
                return;
            }
            let garbage_retry = memory.garbage_retry.values().min().copied();
            let wake_at = earliest(earliest(round.wake_at(), memory.retry_at), garbage_retry);
            let timeout = wake_at.map(|at| nanos_until(at, now));
            if pause(&mut desired, &wake, &cancel, timeout).await {
                return;
            }
            quiet = Some(observed);
            continue;
        }
        tracing::debug!(%uid, actions = ?round.actions, "executing plan");
        // Shutdown does not wait for the runtime: a stop in flight may take its whole grace
        // period (a process that ignores SIGTERM), and upstream's kubelet exits at once too.
        // The next kernlet finds what the runtime did from its labels and goes on from there.
        let execution = executor.execute(
            &uid,
            pod.as_deref(),
            &round,
            &observed,
            &mut memory,
            &cancel,
        );
        let Some(outcome) = cancel.run_until_cancelled(execution).await else {
            return;
        };
        let error = match outcome {
            Ok(()) => {
                error_pause = ERROR_BACKOFF.0;
                continue;
            }
            Err(error) => error,
        };
        // Something failed: the waiting reasons are recorded; try again after a pause, sooner
        // if the runtime or the desired state changes.
        let until_retry = memory.retry_at.map_or(error_pause, |at| {
            nanos_until(at, executor.clock().wall_nanos())
        });
        // A container's waiting reason is logged where it is recorded; a failed runtime call
        // or a spec the runtime cannot be given would otherwise leave no trace.
        if !matches!(error, ExecuteError::Waiting { .. }) {
            tracing::warn!(%error, retry_in = ?until_retry.min(error_pause), "pod action failed");
        }
        if pause(
            &mut desired,
            &wake,
            &cancel,
            Some(until_retry.min(error_pause)),
        )
        .await
        {
            return;
        }
        error_pause = (error_pause * 2).min(ERROR_BACKOFF.1);
    }
}

/// Plans on `observed` and publishes the pod's status from it (when there is a pod to show).
fn plan_and_publish(
    uid: &str,
    want: &DesiredState,
    observed: &PodRuntime,
    memory: &Memory,
    status: &dyn StatusSink,
    now: Nanos,
) -> Plan {
    let desired = match want {
        DesiredState::Run(pod) => Desired::Run(pod),
        DesiredState::Terminate { grace, pod } => Desired::Terminate {
            grace: *grace,
            pod: pod.as_deref(),
        },
    };
    let round = plan(uid, desired, observed, &memory.restarts, now);
    if let Some(pod) = want.pod() {
        status.publish(
            uid,
            Some(PodReport {
                pod: pod.clone(),
                runtime: observed.clone(),
                waiting: memory.waiting.clone(),
                backing_off: round.backing_off.clone(),
                terminating: matches!(want, DesiredState::Terminate { .. }),
            }),
        );
    }
    round
}

/// Records upstream's `BackOff` event once for each new CrashLoopBackOff period.
fn announce_backoff(
    events: &Recorder,
    pod: &Pod,
    backing_off: &[BackingOff],
    announced: &mut HashMap<String, Nanos>,
) {
    for BackingOff { name, until } in backing_off {
        if announced.insert(name.clone(), *until) == Some(*until) {
            continue;
        }
        let meta = &pod.metadata;
        let (pod_name, namespace) = (meta.name.as_deref(), meta.namespace.as_deref());
        let uid = meta.uid.as_deref().unwrap_or_default();
        let formatted = format!(
            "{}_{}({uid})",
            pod_name.unwrap_or_default(),
            namespace.unwrap_or_default()
        );
        let message = format!("Back-off restarting failed container {name} in pod {formatted}");
        events.container(pod, name, EventType::Warning, reason::BACK_OFF, message);
    }
}

/// Publishes the quiet view with the exits the runtime's events recorded since, if any.
fn publish_recorded_exits(
    uid: &str,
    want: &DesiredState,
    quiet: &PodRuntime,
    probes: &mut PodProbes,
    executor: &Executor,
    memory: &Memory,
    status: &dyn StatusSink,
) {
    let Some(mut view) = Observer::with_recorded_exits(executor.runtime(), quiet) else {
        return;
    };
    sync_probes(probes, want, &mut view, executor.node());
    let now = executor.clock().wall_nanos();
    plan_and_publish(uid, want, &view, memory, status, now);
}

/// Keeps the pod's probes in step with its running containers (those of the newest sandbox;
/// none once the pod is being terminated) and puts their results into `observed`.
fn sync_probes(
    probes: &mut PodProbes,
    want: &DesiredState,
    observed: &mut PodRuntime,
    node: &NodeContext,
) {
    let sandbox = observed.newest_sandbox();
    let (Some(pod), DesiredState::Run(_)) = (want.pod(), want) else {
        probes.stop_all();
        observed.probes.clear();
        return;
    };
    let pod_ip = hooks::pod_ip(pod, sandbox.and_then(|s| s.ip.as_deref()), node);
    let running: Vec<Instance<'_>> = observed
        .containers
        .iter()
        .filter(|c| c.state == RunState::Running)
        .filter(|c| sandbox.is_some_and(|s| s.id == c.sandbox_id))
        .map(|c| Instance {
            id: &c.id,
            name: &c.name,
            started_at: c.started_at,
        })
        .collect();
    probes.sync(pod, &running, pod_ip);
    observed.probes = probes.results();
}

/// Continues the crash-loop backoff of containers found in the runtime (a kernlet restart):
/// each container's newest instance says how often it was restarted and when last.
fn recover_backoff(uid: &str, observed: &PodRuntime, backoff: &mut Backoff) {
    let names: std::collections::BTreeSet<&str> = observed
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for name in names {
        if let Some(latest) = observed.latest_anywhere(name) {
            let key = backoff_key(uid, name, &latest.hash);
            backoff.recover(&key, latest.restart_count, latest.created_at);
        }
    }
}

/// Removes what is left of a terminated pod on the node and reports it gone.
async fn finish(
    uid: &str,
    executor: &Executor,
    runtime_view: &mut Observer,
    observed: &PodRuntime,
    status: &dyn StatusSink,
) {
    runtime_view.forget(observed);
    executor.cleanup_pod(uid).await;
    status.publish(uid, None);
    tracing::info!(%uid, "pod removed");
}

fn earliest(a: Option<Nanos>, b: Option<Nanos>) -> Option<Nanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn nanos_until(at: Nanos, now: Nanos) -> Duration {
    Duration::from_nanos(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// Waits for a reason to plan again; returns true when the worker must stop.
async fn pause(
    desired: &mut watch::Receiver<DesiredState>,
    wake: &tokio::sync::Notify,
    cancel: &CancellationToken,
    timeout: Option<Duration>,
) -> bool {
    let sleep = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = cancel.cancelled() => true,
        changed = desired.changed() => changed.is_err(),
        () = wake.notified() => false,
        () = sleep => false,
    }
}
