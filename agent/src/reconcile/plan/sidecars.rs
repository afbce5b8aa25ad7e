//! Sidecar containers (restartable init containers, `restartPolicy: Always` on an init
//! container; GA upstream since v1.33), after upstream's `computeInitContainerActions`:
//! - started in order with the other init containers; the next init container starts once the
//!   sidecar has started (running, and its startupProbe passed when it has one);
//! - restarted (with back-off) whenever it exits, whatever the pod's restart policy, and killed
//!   and restarted when its liveness or startup probe fails;
//! - not holding the pod open: once the app containers are done, the sidecars stop, the last
//!   one first, then the sandbox; a deleted pod stops its app containers first, then its
//!   sidecars in reverse order.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod};

use super::{Action, Planner, Policy, StopReason, Target, container_hash};
use crate::reconcile::state::{PodRuntime, RunState};

/// An init container that runs beside the app containers.
pub(super) fn is_sidecar(spec: &ContainerSpec) -> bool {
    spec.restart_policy.as_deref() == Some("Always")
}

/// The pod's sidecar names in spec order.
fn sidecar_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| is_sidecar(c))
        .map(|c| c.name.as_str())
        .collect()
}

/// A deleted pod with sidecars running: this round's stops (the other containers first, then
/// the last running sidecar alone); `None` when no sidecar runs (the plain termination).
pub(super) fn terminate_in_order(
    observed: &PodRuntime,
    grace: Duration,
    pod: Option<&Pod>,
) -> Option<Vec<Action>> {
    let sidecars = sidecar_names(pod?);
    let running: Vec<_> = observed
        .containers
        .iter()
        .filter(|c| c.state == RunState::Running)
        .collect();
    let last_sidecar = sidecars
        .iter()
        .rev()
        .find_map(|name| running.iter().find(|c| c.name == *name))?;
    let others: Vec<Action> = running
        .iter()
        .filter(|c| !sidecars.contains(&c.name.as_str()))
        .map(|c| stop(c.id.clone(), c.name.clone(), grace, StopReason::Terminating))
        .collect();
    if !others.is_empty() {
        return Some(others);
    }
    Some(vec![stop(
        last_sidecar.id.clone(),
        last_sidecar.name.clone(),
        grace,
        StopReason::Terminating,
    )])
}

fn stop(id: String, name: String, grace: Duration, reason: StopReason) -> Action {
    Action::StopContainer {
        id,
        name,
        grace,
        reason,
    }
}

impl Planner<'_> {
    /// Keeps sidecar `index` running; true once it has started.
    pub(super) fn keep_sidecar(
        &mut self,
        sandbox: &str,
        index: usize,
        spec: &ContainerSpec,
        grace: Duration,
    ) -> bool {
        let hash = container_hash(spec);
        let Some(latest) = self.observed.latest(sandbox, &spec.name).cloned() else {
            self.start(Target::Init(index), None);
            return false;
        };
        match latest.state {
            RunState::Running if latest.hash == hash => {
                let results = self.observed.probes.get(&latest.id);
                if let Some(kill) = results.and_then(|r| r.kill) {
                    self.kill_unhealthy(&latest, kill, Policy::Always, grace);
                    return false;
                }
                spec.startup_probe.is_none() || results.and_then(|r| r.startup) == Some(true)
            }
            RunState::Running => {
                let action = stop(latest.id, latest.name, grace, StopReason::SpecChanged);
                self.plan.actions.push(action);
                self.start(Target::Init(index), None);
                false
            }
            RunState::Created => {
                self.start(Target::Init(index), None);
                false
            }
            RunState::Exited | RunState::Unknown => {
                self.restart_after_exit(Target::Init(index), &latest, &hash);
                false
            }
        }
    }

    /// True when every app container ran and will not run again under `policy`.
    pub(super) fn apps_finished(&self, sandbox: &str, policy: Policy) -> bool {
        self.app_specs().iter().all(|spec| {
            self.observed
                .latest(sandbox, &spec.name)
                .is_some_and(|c| match c.state {
                    RunState::Exited => !policy.restarts(c.exit_code),
                    RunState::Unknown => !policy.restarts(-1),
                    RunState::Running | RunState::Created => false,
                })
        })
    }

    /// The app containers are done: stops the last running sidecar; false when none runs.
    pub(super) fn stop_last_sidecar(&mut self, sandbox: &str, grace: Duration) -> bool {
        let running = self
            .init_specs()
            .iter()
            .rev()
            .filter(|spec| is_sidecar(spec))
            .find_map(|spec| {
                self.observed
                    .latest(sandbox, &spec.name)
                    .filter(|c| c.state == RunState::Running)
            })
            .cloned();
        let Some(sidecar) = running else {
            return false;
        };
        let action = stop(sidecar.id, sidecar.name, grace, StopReason::AppsDone);
        self.plan.actions.push(action);
        true
    }
}
