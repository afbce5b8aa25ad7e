//! The pod phase, after upstream's `getPhase` (`pkg/kubelet/kubelet_pods.go`) with the v1.34
//! default gates (`ContainerRestartRules` off: only `spec.restartPolicy` decides).

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec};

use super::is_static_pod;

pub(super) const PENDING: &str = "Pending";
pub(super) const RUNNING: &str = "Running";
pub(super) const SUCCEEDED: &str = "Succeeded";
pub(super) const FAILED: &str = "Failed";

/// True for `Succeeded` and `Failed`.
pub(super) fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some(SUCCEEDED | FAILED))
}

/// An init container with `restartPolicy: Always` (a sidecar).
pub(super) fn is_restartable_init(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// What a container status says, as `getPhase` reads it.
enum Seen<'a> {
    Missing,
    Running(&'a ContainerStatus),
    Terminated(i32),
    /// Waiting, with the exit code of its last termination if it has one.
    Waiting(Option<i32>),
    Other,
}

fn seen<'a>(statuses: &[&'a ContainerStatus], name: &str) -> Seen<'a> {
    let Some(status) = statuses.iter().copied().find(|s| s.name == name) else {
        return Seen::Missing;
    };
    let state = status.state.as_ref();
    if state.is_some_and(|s| s.running.is_some()) {
        return Seen::Running(status);
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        return Seen::Terminated(t.exit_code);
    }
    if state.is_some_and(|s| s.waiting.is_some()) {
        let last = status
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(|t| t.exit_code);
        return Seen::Waiting(last);
    }
    Seen::Other
}

#[derive(Default)]
struct Counts {
    pending_regular_init: u32,
    pending_restartable_init: u32,
    failed_init: u32,
    unknown: u32,
    running: u32,
    waiting: u32,
    stopped: u32,
    succeeded: u32,
}

impl Counts {
    fn of(spec: &PodSpec, statuses: &[&ContainerStatus]) -> Self {
        let init = spec.init_containers.as_deref().unwrap_or_default();
        let mut n = Self::default();
        for container in init.iter().filter(|c| !is_restartable_init(c)) {
            match seen(statuses, &container.name) {
                Seen::Missing | Seen::Running(_) | Seen::Waiting(None) | Seen::Other => {
                    n.pending_regular_init += 1;
                }
                Seen::Terminated(code) | Seen::Waiting(Some(code)) => {
                    if code != 0 {
                        n.failed_init += 1;
                    }
                }
            }
        }
        for container in init.iter().filter(|c| is_restartable_init(c)) {
            match seen(statuses, &container.name) {
                Seen::Missing => n.unknown += 1,
                Seen::Running(status) => {
                    if status.started != Some(true) {
                        n.pending_restartable_init += 1;
                    }
                    n.running += 1;
                }
                // Exited sidecars do not count for the phase.
                Seen::Terminated(_) | Seen::Waiting(Some(_)) => {}
                Seen::Waiting(None) => {
                    n.pending_restartable_init += 1;
                    n.waiting += 1;
                }
                Seen::Other => {
                    n.pending_restartable_init += 1;
                    n.unknown += 1;
                }
            }
        }
        for container in &spec.containers {
            match seen(statuses, &container.name) {
                Seen::Missing | Seen::Other => n.unknown += 1,
                Seen::Running(_) => n.running += 1,
                Seen::Terminated(code) => {
                    n.stopped += 1;
                    if code == 0 {
                        n.succeeded += 1;
                    }
                }
                Seen::Waiting(Some(_)) => n.stopped += 1,
                Seen::Waiting(None) => n.waiting += 1,
            }
        }
        n
    }
}

/// `getPhase`. `statuses` holds app and init container statuses; `pod_is_terminal` is set once
/// the pod is being torn down; `has_initialized` is `HasAnyActiveRegularContainerStarted`.
pub(super) fn get_phase(
    pod: &Pod,
    spec: &PodSpec,
    statuses: &[&ContainerStatus],
    pod_is_terminal: bool,
    has_initialized: bool,
) -> &'static str {
    let n = Counts::of(spec, statuses);
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if n.failed_init > 0 && policy == "Never" {
        return FAILED;
    }
    if n.pending_regular_init > 0
        || (n.pending_restartable_init > 0 && !has_initialized)
        || n.waiting > 0
    {
        return PENDING;
    }
    if n.running > 0 && n.unknown == 0 {
        return RUNNING;
    }
    if n.running == 0 && n.stopped > 0 && n.unknown == 0 {
        if pod_is_terminal && !is_static_pod(pod) {
            return if n.stopped == n.succeeded {
                SUCCEEDED
            } else {
                FAILED
            };
        }
        return match policy {
            "Always" => RUNNING,
            _ if n.stopped == n.succeeded => SUCCEEDED,
            "Never" => FAILED,
            _ => RUNNING,
        };
    }
    PENDING
}
