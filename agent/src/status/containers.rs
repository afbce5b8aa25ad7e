//! Container statuses, after upstream's `convertToAPIContainerStatuses`
//! (`pkg/kubelet/kubelet_pods.go`) and the prober's `UpdatePodStatus`
//! (`pkg/kubelet/prober/prober_manager.go`), with the v1.34 default gates
//! (`InPlacePodVerticalScaling` and `RecursiveReadOnlyMounts` on).
//!
//! Per spec container, in order:
//! 1. a default status: waiting `ContainerCreating` (`PodInitializing` when the pod has init
//!    containers), or the previous status when that was terminated (its restart count and last
//!    state otherwise);
//! 2. a container that used to run and that the runtime no longer has gets a last state
//!    `ContainerStatusUnknown` (exit 137) and, unless the pod is deleted, one more restart;
//! 3. the newest runtime instance gives the state, the one before it the last state;
//! 4. a container that will be (re)started shows why it waits: `CrashLoopBackOff` while it backs
//!    off, else the worker's reason (image pull and create errors), its terminated state moving
//!    to the last state.
//!
//! App container statuses are sorted by name, init container statuses follow the spec.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, VolumeMountStatus,
};

use super::phase::is_restartable_init;
use super::{StatusInput, time_from_nanos};
use crate::config::format_duration;
use crate::reconcile::state::{Container as Instance, Nanos, RunState};

pub(super) const CONTAINER_CREATING: &str = "ContainerCreating";
pub(super) const POD_INITIALIZING: &str = "PodInitializing";
pub(super) const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
const STATUS_UNKNOWN: &str = "ContainerStatusUnknown";
/// `kubecontainer` reports this exit code for containers it lost track of.
const LOST_EXIT_CODE: i32 = 137;

/// What the container-status code reads from the input.
pub(super) struct Context<'a> {
    pub input: &'a StatusInput<'a>,
    pub has_init_containers: bool,
    /// `pod.metadata.deletionTimestamp` is set.
    pub deleted: bool,
    /// Every runtime instance of the pod, newest first (`SortContainerStatusesByCreationTime`).
    pub instances: Vec<&'a Instance>,
}

impl<'a> Context<'a> {
    pub fn new(input: &'a StatusInput<'a>, has_init_containers: bool, deleted: bool) -> Self {
        let mut instances: Vec<&Instance> = input.runtime.containers.iter().collect();
        instances.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.restart_count)));
        Self {
            input,
            has_init_containers,
            deleted,
            instances,
        }
    }

    /// `FindContainerStatusByName`: the newest instance of `name`.
    fn latest(&self, name: &str) -> Option<&'a Instance> {
        self.instances.iter().copied().find(|c| c.name == name)
    }

    /// `kuberuntime.HasAnyRegularContainerCreated`.
    fn any_regular_container_created(&self, app: &[Container]) -> bool {
        app.iter().any(|spec| {
            self.latest(&spec.name).is_some_and(|c| {
                matches!(
                    c.state,
                    RunState::Created | RunState::Running | RunState::Exited
                )
            })
        })
    }

    /// `ShouldContainerBeRestarted`.
    fn should_restart(&self, latest: Option<&Instance>) -> bool {
        if self.deleted {
            return false;
        }
        let Some(latest) = latest else {
            return true;
        };
        match latest.state {
            RunState::Running => false,
            RunState::Unknown | RunState::Created => true,
            RunState::Exited => match self.restart_policy() {
                "Never" => false,
                "OnFailure" => latest.exit_code != 0,
                _ => true,
            },
        }
    }

    fn restart_policy(&self) -> &'a str {
        self.input
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// The reason-cache entry of upstream: `CrashLoopBackOff` while backing off, else the reason
    /// the worker recorded.
    fn waiting_reason(&self, name: &str) -> Option<(String, String)> {
        if let Some(backing_off) = self.input.backing_off.iter().find(|b| b.name == name) {
            // doBackOff measures from the newest exited instance: until = finished_at + delay.
            let from = self
                .instances
                .iter()
                .find(|c| c.name == name && c.state == RunState::Exited)
                .map_or_else(|| self.input_now(), |c| c.finished_at);
            let delay = u64::try_from(backing_off.until.saturating_sub(from)).unwrap_or(0);
            let message = format!(
                "back-off {} restarting failed container={name} pod={}",
                format_duration(Duration::from_nanos(delay)),
                pod_desc(self.input.pod),
            );
            return Some((CRASH_LOOP_BACK_OFF.to_owned(), message));
        }
        self.input
            .waiting
            .get(name)
            .map(|w| (w.reason.clone(), w.message.clone()))
    }

    fn input_now(&self) -> Nanos {
        let ts = self.input.now.0;
        Nanos::try_from(ts.as_nanosecond()).unwrap_or(0)
    }
}

/// `format.Pod`: `<name>_<namespace>(<uid>)`.
fn pod_desc(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let meta = &pod.metadata;
    format!(
        "{}_{}({})",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
    )
}

fn waiting(reason: Option<&str>, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.filter(|r| !r.is_empty()).map(str::to_owned),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        }),
        ..Default::default()
    }
}

fn terminated(reason: &str, message: &str, exit_code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            exit_code,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn is_running(status: &ContainerStatus) -> bool {
    status.state.as_ref().is_some_and(|s| s.running.is_some())
}

pub(super) fn is_terminated(state: Option<&ContainerState>) -> bool {
    state.is_some_and(|s| s.terminated.is_some())
}

fn waiting_reason_of(status: &ContainerStatus) -> Option<&str> {
    status
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .map(|w| w.reason.as_deref().unwrap_or_default())
}

/// `status.volumeMounts` from the spec (`RecursiveReadOnlyMounts`): read-only mounts report
/// `recursiveReadOnly: Disabled`, as the runtime's recursive read-only support is not known here.
fn volume_mounts(spec: &Container) -> Option<Vec<VolumeMountStatus>> {
    let mounts = spec.volume_mounts.as_deref().unwrap_or_default();
    (!mounts.is_empty()).then(|| {
        mounts
            .iter()
            .map(|m| {
                let read_only = m.read_only == Some(true);
                VolumeMountStatus {
                    name: m.name.clone(),
                    mount_path: m.mount_path.clone(),
                    read_only: read_only.then_some(true),
                    recursive_read_only: read_only.then(|| "Disabled".to_owned()),
                }
            })
            .collect()
    })
}

/// `convertContainerStatus`: one runtime instance as an API status.
fn convert(
    ctx: &Context<'_>,
    instance: &Instance,
    old: Option<&ContainerStatus>,
    spec: &Container,
) -> ContainerStatus {
    let container_id = format!("{}://{}", ctx.input.runtime_name, instance.id);
    let mut status = ContainerStatus {
        name: instance.name.clone(),
        restart_count: i32::try_from(instance.restart_count).unwrap_or(i32::MAX),
        image: instance.image.clone(),
        image_id: instance.image_ref.clone(),
        container_id: Some(container_id.clone()),
        volume_mounts: old.and_then(|o| o.volume_mounts.clone()),
        last_state: Some(ContainerState::default()),
        ..Default::default()
    };
    status.state = Some(match instance.state {
        RunState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time_from_nanos(instance.started_at)),
            }),
            ..Default::default()
        },
        RunState::Exited => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: instance.exit_code,
                reason: Some(exit_reason(instance)).filter(|r| !r.is_empty()),
                message: Some(instance.message.clone()).filter(|m| !m.is_empty()),
                started_at: Some(time_from_nanos(instance.started_at)),
                finished_at: Some(time_from_nanos(instance.finished_at)),
                container_id: Some(container_id),
                signal: None,
            }),
            ..Default::default()
        },
        RunState::Unknown if old.is_some_and(is_running) => {
            let old_count = old.map_or(0, |o| o.restart_count);
            status.restart_count = old_count.saturating_add(1);
            terminated(
                STATUS_UNKNOWN,
                "The container could not be located when the pod was terminated",
                LOST_EXIT_CODE,
            )
        }
        // Created (and unknown without a running past) is "waiting to be running".
        RunState::Created | RunState::Unknown => waiting(None, None),
    });
    if instance.state == RunState::Running
        && let Some(started) = old.and_then(|o| o.started)
    {
        status.started = Some(started);
    }
    // InPlacePodVerticalScaling: the allocated resources (no resize support: the spec's).
    let resources = spec.resources.clone().unwrap_or_default();
    status.allocated_resources = resources.requests.clone().filter(|r| !r.is_empty());
    status.resources = Some(resources);
    status
}

/// The runtime's reason; when it gives none, containerd's: `Completed` for exit 0, else `Error`.
fn exit_reason(instance: &Instance) -> String {
    if !instance.reason.is_empty() {
        return instance.reason.clone();
    }
    if instance.exit_code == 0 {
        "Completed".to_owned()
    } else {
        "Error".to_owned()
    }
}

/// `convertToAPIContainerStatuses` for `specs` (the app or the init containers).
pub(super) fn statuses(
    ctx: &Context<'_>,
    specs: &[Container],
    app_specs: &[Container],
    previous: &[ContainerStatus],
    is_init: bool,
) -> Vec<ContainerStatus> {
    let default_reason = if ctx.has_init_containers {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let old: HashMap<&str, &ContainerStatus> =
        previous.iter().map(|s| (s.name.as_str(), s)).collect();

    // 1. Defaults, carrying the previous status forward.
    let mut out: Vec<ContainerStatus> = specs
        .iter()
        .map(|spec| match old.get(spec.name.as_str()) {
            Some(old) if is_terminated(old.state.as_ref()) => (*old).clone(),
            found => ContainerStatus {
                name: spec.name.clone(),
                image: spec.image.clone().unwrap_or_default(),
                state: Some(waiting(Some(default_reason), None)),
                volume_mounts: volume_mounts(spec),
                restart_count: found.map_or(0, |o| o.restart_count),
                last_state: found.and_then(|o| o.last_state.clone()),
                ..Default::default()
            },
        })
        .collect();
    mark_lost(ctx, specs, &old, default_reason, &mut out);
    apply_instances(ctx, specs, &old, &mut out);
    apply_waiting(ctx, specs, app_specs, is_init, &mut out);

    for status in &mut out {
        if status.last_state.is_none() {
            status.last_state = Some(ContainerState::default());
        }
    }
    if !is_init {
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// 2. Containers that used to run and that the runtime no longer has.
fn mark_lost(
    ctx: &Context<'_>,
    specs: &[Container],
    old: &HashMap<&str, &ContainerStatus>,
    default_reason: &str,
    out: &mut [ContainerStatus],
) {
    for (i, spec) in specs.iter().enumerate() {
        if ctx.instances.iter().any(|c| c.name == spec.name) {
            continue;
        }
        let Some(old) = old.get(spec.name.as_str()) else {
            continue;
        };
        if is_terminated(old.state.as_ref()) || !is_running(old) {
            continue;
        }
        let status = &mut out[i];
        if waiting_reason_of(status) != Some(default_reason)
            || is_terminated(status.last_state.as_ref())
        {
            continue;
        }
        status.last_state = Some(terminated(
            STATUS_UNKNOWN,
            "The container could not be located when the pod was deleted.  The container used \
             to be Running",
            LOST_EXIT_CODE,
        ));
        if !ctx.deleted {
            status.restart_count = status.restart_count.saturating_add(1);
        }
    }
}

/// 3. The newest instance gives the state, the one before it the last state.
fn apply_instances(
    ctx: &Context<'_>,
    specs: &[Container],
    old: &HashMap<&str, &ContainerStatus>,
    out: &mut [ContainerStatus],
) {
    let mut seen: HashMap<&str, u8> = HashMap::new();
    for instance in &ctx.instances {
        let Some(i) = specs.iter().position(|s| s.name == instance.name) else {
            continue;
        };
        let count = seen.entry(instance.name.as_str()).or_default();
        if *count >= 2 {
            continue;
        }
        let previous = old.get(instance.name.as_str()).copied();
        let converted = convert(ctx, instance, previous, &specs[i]);
        if *count == 0 {
            out[i] = converted;
        } else {
            out[i].last_state = converted.state;
        }
        *count += 1;
    }
}

/// 4. Containers that will be (re)started show why they wait.
fn apply_waiting(
    ctx: &Context<'_>,
    specs: &[Container],
    app_specs: &[Container],
    is_init: bool,
    out: &mut [ContainerStatus],
) {
    for (i, spec) in specs.iter().enumerate() {
        let latest = ctx.latest(&spec.name);
        if is_init {
            if latest.is_some_and(|c| c.state == RunState::Exited && c.exit_code == 0) {
                continue;
            }
            if latest.is_none()
                && ctx.any_regular_container_created(app_specs)
                && !is_restartable_init(spec)
                && out[i].state.as_ref().is_some_and(|s| s.waiting.is_some())
            {
                out[i].state = Some(terminated(
                    "Completed",
                    "Unable to get init container status from container runtime and pod has \
                     been initialized, treat it as exited normally",
                    0,
                ));
                continue;
            }
        }
        if !ctx.should_restart(latest) {
            continue;
        }
        let Some((reason, message)) = ctx.waiting_reason(&spec.name) else {
            continue;
        };
        let status = &mut out[i];
        if is_terminated(status.state.as_ref()) {
            status.last_state = status.state.clone();
        }
        status.state = Some(waiting(Some(&reason), Some(&message)));
    }
}

/// The prober's `UpdatePodStatus`: `started` for every status, `ready` for started app containers
/// and sidecars (by readiness result, or true without a readiness probe) and for init containers
/// that exited 0. Without a startup probe a running container has started.
pub(super) fn apply_probes(
    input: &StatusInput<'_>,
    specs: &[Container],
    statuses: &mut [ContainerStatus],
    is_init: bool,
) {
    for status in statuses {
        let Some(spec) = specs.iter().find(|s| s.name == status.name) else {
            continue;
        };
        let results = status
            .container_id
            .as_deref()
            .and_then(|id| id.split_once("://").map_or(Some(id), |(_, raw)| Some(raw)))
            .and_then(|id| input.probes.get(id));
        let started = is_running(status)
            && results
                .and_then(|r| r.startup)
                .unwrap_or(spec.startup_probe.is_none());
        status.started = Some(started);
        if is_init && !is_restartable_init(spec) {
            let succeeded = status
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            if succeeded {
                status.ready = true;
            }
            continue;
        }
        if !started {
            continue;
        }
        status.ready =
            results.and_then(|r| r.readiness) == Some(true) || spec.readiness_probe.is_none();
    }
}
