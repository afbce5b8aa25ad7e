//! `plan(desired, observed, now) -> Plan`: what to do next for one pod. Pure: no I/O, no clock.
//!
//! One round decides everything that can be decided from what is observed; the worker executes it,
//! observes again (after events or the earliest backoff expiry) and plans again. Rules, after
//! upstream's `computePodActions`:
//! - no ready sandbox: stop what runs, create sandbox `attempt + 1`, then start the first init
//!   container (or every app container) — except for `Never` pods that already ran, and for
//!   `OnFailure` pods whose containers all succeeded (the pod is complete);
//! - init containers run one at a time, in order; a failed one restarts (with backoff) unless the
//!   policy is `Never`, which fails the pod; app containers start only after every init succeeded;
//!   sidecars (restartable init containers) keep running beside them (`plan::sidecars`);
//! - an app container that exited restarts per `restartPolicy` (Always; OnFailure when the exit
//!   code is not 0; Never) after its CrashLoopBackOff delay; a running one whose spec hash changed
//!   is replaced at once; containers no longer in the spec are stopped;
//! - a running app container whose liveness or startup probe failed is stopped (with the
//!   probe's grace period when it has one) and, unless the policy is `Never`, restarted like
//!   any exited container, through CrashLoopBackOff;
//! - a pod that can do nothing more (complete or failed) has its sandbox stopped;
//! - only the newest dead instance of each container and the newest sandbox are kept; the rest is
//!   the plan's garbage, removed after its actions, and a removal that fails holds up nothing
//!   (upstream's container GC runs beside the pod sync);
//! - a container left `Created` (its start failed or timed out, or kernlet stopped in between)
//!   is not started again: a new instance is, and the old one becomes garbage, as upstream's
//!   `computePodActions` does; a start that timed out may still be running in the runtime;
//! - termination stops containers (preStop and grace are the worker's), the sandbox, then
//!   removes everything.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod};

use crate::probe::{Kill, Kind};

use super::{
    backoff::Backoff,
    state::{Container, Nanos, PodRuntime, RunState},
};

/// What should become of the pod.
#[derive(Debug, Clone, Copy)]
pub enum Desired<'a> {
    /// The pod should run as its spec says.
    Run(&'a Pod),
    /// The pod is gone from its source: stop everything within `grace`, then remove it; `pod`
    /// (when known) says which containers are sidecars, stopped after the others.
    Terminate {
        grace: Duration,
        pod: Option<&'a Pod>,
    },
}

/// Which container of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Init(usize),
    App(usize),
}

/// Why a container is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its spec hash changed; a new instance follows.
    SpecChanged,
    /// The spec no longer has a container of that name.
    NotInSpec,
    /// The sandbox is being replaced.
    SandboxChanged,
    /// An init container failed under restartPolicy Never: the pod failed.
    PodFailed,
    /// The pod is being deleted.
    Terminating,
    /// The pod's app containers are done: its sidecars stop, last first.
    AppsDone,
    /// Its postStart hook failed (upstream kills it with the message `FailedPostStartHook`).
    PostStartHookFailed,
    /// Its liveness or startup probe failed; `restart` when the restart policy starts it again.
    ProbeFailed { kind: Kind, restart: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    StopContainer {
        id: String,
        name: String,
        grace: Duration,
        reason: StopReason,
    },
    StopSandbox {
        id: String,
    },
    RemoveContainer {
        id: String,
    },
    RemoveSandbox {
        id: String,
    },
    CreateSandbox {
        attempt: u32,
    },
    /// Create and start `target` in the current sandbox (the one just created, else the newest).
    StartContainer {
        target: Target,
        restart_count: u32,
        /// Set when this start is a restart after an exit: the worker advances this backoff key.
        backoff_key: Option<String>,
    },
}

/// One container waiting out its CrashLoopBackOff delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingOff {
    pub name: String,
    pub until: Nanos,
}

/// An object the pod no longer needs: a dead container instance or an old sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbage {
    Container(String),
    Sandbox(String),
}

impl Garbage {
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Self::Container(id) | Self::Sandbox(id) => id,
        }
    }
}

/// The result of one planning round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order.
    pub actions: Vec<Action>,
    /// Removed after the actions; a failure is logged and holds up nothing.
    pub garbage: Vec<Garbage>,
    /// Containers in CrashLoopBackOff; the worker plans again at the earliest `until`.
    pub backing_off: Vec<BackingOff>,
}

impl Plan {
    /// When to plan again without an event.
    #[must_use]
    pub fn wake_at(&self) -> Option<Nanos> {
        self.backing_off.iter().map(|b| b.until).min()
    }
}

/// The grace period of a pod: `terminationGracePeriodSeconds`, 30 s when unset (the API default).
#[must_use]
pub fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// A stable hash of a container's spec (FNV-1a 64 over its JSON form), stored in the
/// `io.kubernetes.container.hash` annotation; a different hash means the spec changed.
#[must_use]
pub fn container_hash(container: &ContainerSpec) -> String {
    let json = serde_json::to_vec(container).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The CrashLoopBackOff key of a container: pod, name and spec, as upstream keys it.
#[must_use]
pub fn backoff_key(uid: &str, name: &str, hash: &str) -> String {
    format!("{uid}_{name}_{hash}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Always,
    OnFailure,
    Never,
}

impl Policy {
    fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// Plans the next round for pod `uid`.
#[must_use]
pub fn plan(
    uid: &str,
    desired: Desired<'_>,
    observed: &PodRuntime,
    backoff: &Backoff,
    now: Nanos,
) -> Plan {
    match desired {
        Desired::Terminate { grace, pod } => terminate(observed, grace, pod),
        Desired::Run(pod) => Planner {
            uid,
            pod,
            observed,
            backoff,
            now,
            plan: Plan::default(),
        }
        .run(),
    }
}

fn terminate(observed: &PodRuntime, grace: Duration, pod: Option<&Pod>) -> Plan {
    if let Some(stops) = sidecars::terminate_in_order(observed, grace, pod) {
        return Plan {
            actions: stops,
            ..Plan::default()
        };
    }
    let mut actions = stop_running(observed, grace, StopReason::Terminating);
    actions.extend(
        observed
            .sandboxes
            .iter()
            .filter(|s| s.ready)
            .map(|s| Action::StopSandbox { id: s.id.clone() }),
    );
    actions.extend(
        observed
            .containers
            .iter()
            .map(|c| Action::RemoveContainer { id: c.id.clone() }),
    );
    actions.extend(
        observed
            .sandboxes
            .iter()
            .map(|s| Action::RemoveSandbox { id: s.id.clone() }),
    );
    Plan {
        actions,
        ..Plan::default()
    }
}

fn stop_running(observed: &PodRuntime, grace: Duration, reason: StopReason) -> Vec<Action> {
    observed
        .containers
        .iter()
        .filter(|c| c.state == RunState::Running)
        .map(|c| Action::StopContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            grace,
            reason,
        })
        .collect()
}

mod sidecars;

struct Planner<'a> {
    uid: &'a str,
    pod: &'a Pod,
    observed: &'a PodRuntime,
    backoff: &'a Backoff,
    now: Nanos,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn run(mut self) -> Plan {
        let policy = Policy::of(self.pod);
        let grace = grace_period(self.pod);
        let sandbox = self.observed.newest_sandbox();
        match sandbox {
            Some(sandbox) if sandbox.ready => {
                let id = sandbox.id.clone();
                self.collect_garbage(&id);
                self.stop_unknown(&id, grace);
                if self.run_init_containers(&id, policy, grace) {
                    self.run_app_containers(&id, policy, grace);
                }
            }
            _ => self.new_sandbox(policy, grace),
        }
        self.plan
    }

    fn init_specs(&self) -> &'a [ContainerSpec] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
    }

    fn app_specs(&self) -> &'a [ContainerSpec] {
        self.pod
            .spec
            .as_ref()
            .map_or(&[], |s| s.containers.as_slice())
    }

    /// No ready sandbox: replace it, unless the pod is done.
    fn new_sandbox(&mut self, policy: Policy, grace: Duration) {
        let previous = self.observed.newest_sandbox();
        self.plan.actions = stop_running(self.observed, grace, StopReason::SandboxChanged);
        let ran_before = previous.is_some() && !self.observed.containers.is_empty();
        let to_start: Vec<usize> = (0..self.app_specs().len())
            .filter(|&i| {
                let name = &self.app_specs()[i].name;
                let succeeded = self
                    .observed
                    .latest_anywhere(name)
                    .is_some_and(|c| c.state == RunState::Exited && c.exit_code == 0);
                !(policy == Policy::OnFailure && succeeded)
            })
            .collect();
        if (policy == Policy::Never && ran_before) || to_start.is_empty() {
            return;
        }
        self.plan.actions.push(Action::CreateSandbox {
            attempt: previous.map_or(0, |s| s.attempt + 1),
        });
        if self.init_specs().is_empty() {
            for index in to_start {
                self.start(Target::App(index), None);
            }
        } else {
            self.start(Target::Init(0), None);
        }
    }

    fn start(&mut self, target: Target, backoff_key: Option<String>) {
        let name = match target {
            Target::Init(i) => &self.init_specs()[i].name,
            Target::App(i) => &self.app_specs()[i].name,
        };
        let restart_count = self
            .observed
            .latest_anywhere(name)
            .map_or(0, |c| c.restart_count + 1);
        self.plan.actions.push(Action::StartContainer {
            target,
            restart_count,
            backoff_key,
        });
    }

    /// Starts `target` again after it exited, unless it is still backing off.
    fn restart_after_exit(&mut self, target: Target, exited: &Container, hash: &str) {
        let key = backoff_key(self.uid, &exited.name, hash);
        match self
            .backoff
            .blocked_until(&key, exited.finished_at, self.now)
        {
            Some(until) => self.plan.backing_off.push(BackingOff {
                name: exited.name.clone(),
                until,
            }),
            None => self.start(target, Some(key)),
        }
    }

    /// Returns true when app containers may run: every regular init container has succeeded
    /// and every sidecar has started (or app containers already run). Sidecars are kept running
    /// (restarted whatever the policy) until the app containers are done.
    fn run_init_containers(&mut self, sandbox: &str, policy: Policy, grace: Duration) -> bool {
        let apps_started = self
            .app_specs()
            .iter()
            .any(|c| self.observed.latest(sandbox, &c.name).is_some());
        let apps_done = apps_started && self.apps_finished(sandbox, policy);
        for (index, spec) in self.init_specs().iter().enumerate() {
            if sidecars::is_sidecar(spec) {
                let started = apps_done || self.keep_sidecar(sandbox, index, spec, grace);
                if !started && !apps_started {
                    return false;
                }
                continue;
            }
            if apps_started {
                continue;
            }
            let Some(latest) = self.observed.latest(sandbox, &spec.name) else {
                self.start(Target::Init(index), None);
                return false;
            };
            match latest.state {
                RunState::Running => return false,
                RunState::Exited if latest.exit_code == 0 => {}
                RunState::Created => {
                    self.start(Target::Init(index), None);
                    return false;
                }
                RunState::Exited | RunState::Unknown => {
                    if policy == Policy::Never {
                        self.plan.actions.extend(stop_running(
                            self.observed,
                            grace,
                            StopReason::PodFailed,
                        ));
                        self.plan.actions.push(Action::StopSandbox {
                            id: sandbox.to_owned(),
                        });
                    } else {
                        let latest = latest.clone();
                        self.restart_after_exit(
                            Target::Init(index),
                            &latest,
                            &container_hash(spec),
                        );
                    }
                    return false;
                }
            }
        }
        true
    }

    fn run_app_containers(&mut self, sandbox: &str, policy: Policy, grace: Duration) {
        let mut active = false;
        for (index, spec) in self.app_specs().iter().enumerate() {
            let hash = container_hash(spec);
            let Some(latest) = self.observed.latest(sandbox, &spec.name).cloned() else {
                self.start(Target::App(index), None);
                active = true;
                continue;
            };
            let kill = self.observed.probes.get(&latest.id).and_then(|r| r.kill);
            match latest.state {
                RunState::Running if latest.hash == hash => {
                    if let Some(kill) = kill {
                        self.kill_unhealthy(&latest, kill, policy, grace);
                    }
                    active = true;
                }
                RunState::Running => {
                    self.plan.actions.push(Action::StopContainer {
                        id: latest.id.clone(),
                        name: latest.name.clone(),
                        grace,
                        reason: StopReason::SpecChanged,
                    });
                    self.start(Target::App(index), None);
                    active = true;
                }
                RunState::Created => {
                    self.start(Target::App(index), None);
                    active = true;
                }
                RunState::Exited | RunState::Unknown => {
                    // An unknown state is treated as a failure so that Always/OnFailure recover.
                    let code = if latest.state == RunState::Unknown {
                        -1
                    } else {
                        latest.exit_code
                    };
                    if policy.restarts(code) {
                        self.restart_after_exit(Target::App(index), &latest, &hash);
                        active = true;
                    }
                }
            }
        }
        if !active && !self.stop_last_sidecar(sandbox, grace) {
            // Complete (or failed under Never): free the sandbox's network and processes.
            self.plan.actions.push(Action::StopSandbox {
                id: sandbox.to_owned(),
            });
        }
    }

    /// Upstream kills a container that failed liveness or startup; unless the policy is
    /// `Never`, the next round restarts it as any exited container, through CrashLoopBackOff
    /// (upstream's `doBackOff` on the start that follows the kill), so a container that keeps
    /// failing its probe backs off.
    fn kill_unhealthy(&mut self, latest: &Container, kill: Kill, policy: Policy, grace: Duration) {
        let restart = policy != Policy::Never;
        self.plan.actions.push(Action::StopContainer {
            id: latest.id.clone(),
            name: latest.name.clone(),
            grace: kill.grace.unwrap_or(grace),
            reason: StopReason::ProbeFailed {
                kind: kill.kind,
                restart,
            },
        });
    }

    /// Stops running containers of the current sandbox whose name the spec no longer has.
    fn stop_unknown(&mut self, sandbox: &str, grace: Duration) {
        let known = |name: &str| {
            self.app_specs()
                .iter()
                .chain(self.init_specs())
                .any(|c| c.name == name)
        };
        let stops: Vec<Action> = self
            .observed
            .containers
            .iter()
            .filter(|c| c.sandbox_id == sandbox && c.state == RunState::Running && !known(&c.name))
            .map(|c| Action::StopContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                grace,
                reason: StopReason::NotInSpec,
            })
            .collect();
        self.plan.actions.extend(stops);
    }

    /// Keeps the newest dead instance per container name (beside a running one: it is the
    /// status's `lastState`) and the newest sandbox; the rest is garbage (upstream's container GC
    /// keeps `MaxPerPodContainer` = 1 dead container per pod container by default). A `Created`
    /// instance that is not the newest never ran and never will: garbage too.
    fn collect_garbage(&mut self, sandbox: &str) {
        let is_dead = |c: &Container| matches!(c.state, RunState::Exited | RunState::Unknown);
        let newest_dead = |name: &str| {
            self.observed
                .containers
                .iter()
                .filter(|c| c.name == name && is_dead(c))
                .max_by_key(|c| (c.created_at, c.restart_count))
        };
        let newest = |c: &Container| {
            self.observed
                .latest_anywhere(&c.name)
                .is_some_and(|n| n.id == c.id)
        };
        for container in &self.observed.containers {
            let garbage = if container.state == RunState::Created {
                !newest(container)
            } else {
                is_dead(container)
                    && newest_dead(&container.name).is_some_and(|n| n.id != container.id)
            };
            if garbage {
                self.plan
                    .garbage
                    .push(Garbage::Container(container.id.clone()));
            }
        }
        for old in self.observed.sandboxes.iter().filter(|s| s.id != sandbox) {
            let busy = self
                .observed
                .containers
                .iter()
                .any(|c| c.sandbox_id == old.id && c.state == RunState::Running);
            if old.ready {
                self.plan
                    .actions
                    .push(Action::StopSandbox { id: old.id.clone() });
            }
            let keeps_latest = self.observed.containers.iter().any(|c| {
                c.sandbox_id == old.id
                    && (self
                        .observed
                        .latest_anywhere(&c.name)
                        .is_some_and(|n| n.id == c.id)
                        || newest_dead(&c.name).is_some_and(|n| n.id == c.id))
            });
            if !busy && !keeps_latest {
                self.plan.garbage.push(Garbage::Sandbox(old.id.clone()));
            }
        }
    }
}
