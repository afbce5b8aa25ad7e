//! Executing [`Action`]s through CRI: sandbox creation (volumes, log directory, config), image
//! presence, container creation and start, stop with the preStop exec hook and the grace period
//! (upstream's `killContainer`: the hook's whole seconds count against the grace, at least 2 s
//! remain for SIGTERM; consecutive stops run in parallel, as `killContainersWithSyncResult`), and
//! removal; the plan's garbage last, its failures holding up nothing (`execute::garbage`). Failures become the container's waiting reason, as upstream reports them.
use std::{path::Path, sync::Arc};

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod};
use kernlet_cri::v1;
use tokio_util::sync::CancellationToken;

use super::{
    backoff::Memory,
    hooks::{self, HookTarget},
    images::{ImageOutcome, ensure_image},
    plan::{Action, Plan, StopReason, Target, grace_period},
    spec::{self, NodeContext, ResolvConf},
    state::{PodRuntime, Waiting},
};
use crate::cgroup::CgroupManager;
use crate::clock::{self, Clock};
use crate::cri::{CallFuture, Cri, CriError};
use crate::event::{Involved, Recorder, Scoped, reason};
use crate::probe::{PodProbes, ProbeMetrics, Prober};

/// Something an action could not do; the worker pauses and retries.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("pod {uid}: {action}: {source}")]
    Runtime {
        uid: String,
        action: &'static str,
        #[source]
        source: CriError,
    },
    #[error("pod {uid}: container {name} is waiting: {reason}")]
    Waiting {
        uid: String,
        name: String,
        reason: String,
    },
    #[error("pod {uid}: {message}")]
    Spec { uid: String, message: String },
}

/// Shared by all workers: the runtime, the wall clock and what the node looks like.
pub struct Executor {
    runtime: Arc<dyn Cri>,
    clock: Arc<dyn Clock>,
    node: NodeContext,
    resolv: ResolvConf,
    /// Pod cgroups (`cgroupsPerQOS`); `None` lets the runtime place pods.
    cgroups: Option<Arc<CgroupManager>>,
    /// What every worker's probes share.
    prober: Arc<Prober>,
    probe_metrics: Arc<ProbeMetrics>,
    events: Recorder,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// The sandbox containers of this round go into.
struct Current {
    id: String,
    config: v1::PodSandboxConfig,
    ip: Option<String>,
}

impl Executor {
    #[must_use]
    pub fn new(
        runtime: Arc<dyn Cri>,
        node: NodeContext,
        resolv: ResolvConf,
        cgroups: Option<Arc<CgroupManager>>,
    ) -> Self {
        let clock = clock::system();
        let probe_metrics = Arc::new(ProbeMetrics::new());
        let prober = Arc::new(Prober::new(
            runtime.clone(),
            clock.clone(),
            probe_metrics.clone(),
        ));
        Self {
            runtime,
            clock,
            node,
            resolv,
            cgroups,
            prober,
            probe_metrics,
            events: Recorder::default(),
        }
    }

    /// This executor reading wall time from `clock` (unit tests: a clock on paused time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.rebuild_prober()
    }

    /// This executor's probes counting into `metrics` (served at `/metrics/probes`).
    #[must_use]
    pub fn with_probe_metrics(mut self, metrics: Arc<ProbeMetrics>) -> Self {
        self.probe_metrics = metrics;
        self.rebuild_prober()
    }

    /// This executor and its probes recording events through `events`.
    #[must_use]
    pub fn with_events(mut self, events: Recorder) -> Self {
        self.events = events;
        self.rebuild_prober()
    }

    fn rebuild_prober(mut self) -> Self {
        let prober = Prober::new(
            self.runtime.clone(),
            self.clock.clone(),
            self.probe_metrics.clone(),
        );
        self.prober = Arc::new(prober.with_events(self.events.clone()));
        self
    }

    /// Where pod workers record events.
    #[must_use]
    pub fn events(&self) -> &Recorder {
        &self.events
    }

    /// Probes for one pod's worker: a result change wakes it through `wake`; they stop with
    /// `cancel`.
    #[must_use]
    pub fn pod_probes(
        &self,
        wake: &Arc<tokio::sync::Notify>,
        cancel: &CancellationToken,
    ) -> PodProbes {
        PodProbes::new(self.prober.clone(), wake.clone(), cancel.child_token())
    }

    #[must_use]
    pub fn runtime(&self) -> &dyn Cri {
        self.runtime.as_ref()
    }

    /// The wall clock plans and backoff are computed against.
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    #[must_use]
    pub fn node(&self) -> &NodeContext {
        &self.node
    }

    /// Executes `plan` in order; stops at the first failure (the next round re-plans), except
    /// that an app container that cannot start does not keep its siblings from starting: each
    /// records its own waiting reason, as upstream's `SyncPod` starts every app container it can.
    pub async fn execute(
        &self,
        uid: &str,
        pod: Option<&Pod>,
        plan: &Plan,
        observed: &PodRuntime,
        memory: &mut Memory,
        cancel: &CancellationToken,
    ) -> Result<(), ExecuteError> {
        let mut current: Option<Current> = None;
        // The first app container that could not start; the others are still tried.
        let mut blocked: Option<ExecuteError> = None;
        memory.retry_at = None;
        let is_stop = |action: &Action| matches!(action, Action::StopContainer { .. });
        // Consecutive container stops form one group; every other action is alone in its own.
        for group in plan.actions.chunk_by(|a, b| is_stop(a) && is_stop(b)) {
            let Some(action) = group.first() else {
                continue;
            };
            if cancel.is_cancelled() {
                return Ok(());
            }
            match action {
                Action::StopContainer { .. } => {
                    let sandbox_ip = observed.newest_sandbox().and_then(|s| s.ip.as_deref());
                    let ip = pod.and_then(|p| hooks::pod_ip(p, sandbox_ip, &self.node));
                    self.stop_containers(uid, pod, ip, group).await?;
                }
                Action::StopSandbox { id } => {
                    let request = v1::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    };
                    self.tolerate_missing(
                        uid,
                        "StopPodSandbox",
                        self.runtime.stop_pod_sandbox(request),
                    )
                    .await?;
                }
                Action::RemoveContainer { id } => {
                    let request = v1::RemoveContainerRequest {
                        container_id: id.clone(),
                    };
                    self.tolerate_missing(
                        uid,
                        "RemoveContainer",
                        self.runtime.remove_container(request),
                    )
                    .await?;
                }
                Action::RemoveSandbox { id } => {
                    let request = v1::RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    };
                    self.tolerate_missing(
                        uid,
                        "RemovePodSandbox",
                        self.runtime.remove_pod_sandbox(request),
                    )
                    .await?;
                }
                Action::CreateSandbox { attempt } => {
                    let pod =
                        pod.ok_or_else(|| spec_error(uid, "no pod spec to create a sandbox from"))?;
                    current = Some(self.create_sandbox(uid, pod, *attempt).await?);
                }
                Action::StartContainer {
                    target,
                    restart_count,
                    backoff_key,
                } => {
                    let pod = pod
                        .ok_or_else(|| spec_error(uid, "no pod spec to start a container from"))?;
                    if current.is_none() {
                        current = Some(self.current_sandbox(uid, pod, observed)?);
                    }
                    let Some(sandbox) = current.as_ref() else {
                        continue;
                    };
                    // Advanced before the start, as upstream's `doBackOff`: a restart that
                    // fails (a postStart hook) still counts towards CrashLoopBackOff.
                    if let Some(key) = backoff_key {
                        memory.restarts.next(key, self.clock.wall_nanos());
                    }
                    let started = self
                        .start_container(uid, pod, sandbox, *target, *restart_count, memory)
                        .await;
                    match started {
                        Err(error @ ExecuteError::Waiting { .. })
                            if matches!(target, Target::App(_)) =>
                        {
                            blocked.get_or_insert(error);
                        }
                        other => other?,
                    }
                }
            }
        }
        self.collect_garbage(uid, &plan.garbage, memory, cancel)
            .await;
        blocked.map_or(Ok(()), Err)
    }

    #[must_use]
    pub fn cgroups(&self) -> Option<&Arc<CgroupManager>> {
        self.cgroups.as_ref()
    }

    /// Removes the pod's cgroup, volumes and state directory once its sandboxes are gone.
    pub async fn cleanup_pod(&self, uid: &str) {
        if let Some(cgroups) = self.cgroups.clone() {
            let owned = uid.to_owned();
            let result = tokio::task::spawn_blocking(move || cgroups.remove_pod(&owned)).await;
            if let Ok(Err(error)) = result {
                tracing::warn!(%uid, %error, "removing the pod cgroup failed");
            }
        }
        let root = self.node.root_dir.clone();
        let uid = uid.to_owned();
        let result = tokio::task::spawn_blocking(move || spec::cleanup_volumes(&root, &uid)).await;
        if let Ok(Err(error)) = result {
            tracing::warn!(%error, "removing pod volumes failed");
        }
    }

    async fn start_container(
        &self,
        uid: &str,
        pod: &Pod,
        sandbox: &Current,
        target: Target,
        restart_count: u32,
        memory: &mut Memory,
    ) -> Result<(), ExecuteError> {
        let spec = target_spec(pod, target)
            .ok_or_else(|| spec_error(uid, "container index out of range"))?;
        let name = spec.name.clone();
        let events = self.events.about(Involved::container(pod, &name));
        let policy = spec.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        let image = spec.image.as_deref().unwrap_or_default();
        let now = self.clock.wall_nanos();
        let pulls = &mut memory.pulls;
        let image_ref =
            match ensure_image(self.runtime(), pulls, (uid, image, policy), now, &events).await {
                ImageOutcome::Ready(reference) => reference,
                ImageOutcome::Waiting { waiting, retry_at } => {
                    // With several containers waiting, the pod is retried at the first one's time.
                    memory.retry_at = match (memory.retry_at, retry_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    return Err(Self::wait(uid, &name, waiting, memory, &events));
                }
            };
        let pod_ips: Vec<String> = sandbox.ip.iter().cloned().collect();
        let files = spec::plan_container_files(pod, target, restart_count, &pod_ips, &self.node);
        let prepared = match files {
            Ok(files) => prepare(files).await,
            Err(error) => Err(Waiting {
                reason: error.reason().to_owned(),
                message: error.to_string(),
            }),
        };
        if let Err(mut waiting) = prepared {
            if self.failed_mount(pod, &waiting) {
                waiting = Waiting {
                    reason: CONTAINER_CREATING.to_owned(),
                    message: String::new(),
                };
            }
            return Err(Self::wait(uid, &name, waiting, memory, &events));
        }
        let config = match spec::container_config(
            pod,
            target,
            restart_count,
            &pod_ips,
            &self.node,
            &image_ref,
        ) {
            Ok(config) => config,
            Err(error) => {
                let waiting = Waiting {
                    reason: error.reason().to_owned(),
                    message: error.to_string(),
                };
                return Err(Self::wait(uid, &name, waiting, memory, &events));
            }
        };
        let request = v1::CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox.config.clone()),
        };
        let id = match self.runtime.create_container(request).await {
            Ok(response) => response.container_id,
            Err(error) => {
                let waiting = Waiting {
                    reason: "CreateContainerError".into(),
                    message: error.to_string(),
                };
                return Err(Self::wait(uid, &name, waiting, memory, &events));
            }
        };
        events.normal(reason::CREATED, format!("Created container: {name}"));
        let request = v1::StartContainerRequest {
            container_id: id.clone(),
        };
        if let Err(error) = self.runtime.start_container(request).await {
            let waiting = Waiting {
                reason: "RunContainerError".into(),
                message: error.to_string(),
            };
            return Err(Self::wait(uid, &name, waiting, memory, &events));
        }
        tracing::info!(%uid, container = %name, id = %id, restart_count, "container started");
        events.normal(reason::STARTED, format!("Started container {name}"));
        if let Err(waiting) = self.post_start(uid, pod, spec, sandbox, &id).await {
            return Err(Self::wait(uid, &name, waiting, memory, &events));
        }
        memory.waiting.remove(&name);
        Ok(())
    }

    /// Runs the container's postStart hook; when it fails, kills the container (upstream's
    /// `FailedPostStartHook`) and says why it waits.
    async fn post_start(
        &self,
        uid: &str,
        pod: &Pod,
        spec: &ContainerSpec,
        sandbox: &Current,
        id: &str,
    ) -> Result<(), Waiting> {
        let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        let name = &spec.name;
        let pod_ip = hooks::pod_ip(pod, sandbox.ip.as_deref(), &self.node);
        let target = HookTarget {
            pod,
            container: spec,
            container_id: id,
            pod_ip,
        };
        // No timeout, as upstream; the worker reports nothing of the pod until it returns.
        let Err(message) = hooks::run(self.runtime(), hook, target, None).await else {
            return Ok(());
        };
        tracing::warn!(%uid, container = %name, %message, "FailedPostStartHook: PostStartHook failed");
        let events = self.events.about(Involved::container(pod, name));
        events.warning(reason::FAILED_POST_START_HOOK, message.clone());
        let reason = StopReason::PostStartHookFailed;
        let stopped = self
            .stop_container(
                uid,
                id,
                Some((pod, spec)),
                pod_ip,
                grace_period(pod),
                reason,
            )
            .await;
        if let Err(error) = stopped {
            tracing::warn!(%uid, container = %name, %error, "failed to kill the container");
        }
        Err(Waiting {
            reason: "PostStartHookError".into(),
            message,
        })
    }

    /// When `waiting` is a volume failure: records upstream's `FailedMount` event about the pod
    /// (its containers then wait in `ContainerCreating`, as upstream's volume manager leaves
    /// them) and says so.
    fn failed_mount(&self, pod: &Pod, waiting: &Waiting) -> bool {
        if waiting.reason != spec::FAILED_MOUNT {
            return false;
        }
        let message = format!("MountVolume.SetUp failed: {}", waiting.message);
        self.events
            .about(Involved::pod(pod))
            .warning(reason::FAILED_MOUNT, message);
        true
    }

    /// Records why container `name` waits and returns the matching error; the `Failed` event
    /// says `Error: ` and, as upstream's error values read, the reason for image failures and
    /// the message otherwise (a failed postStart hook has had its own event).
    fn wait(
        uid: &str,
        name: &str,
        waiting: Waiting,
        memory: &mut Memory,
        events: &Scoped<'_>,
    ) -> ExecuteError {
        tracing::warn!(%uid, container = %name, reason = %waiting.reason, message = %waiting.message,
            "container cannot start");
        match waiting.reason.as_str() {
            // Their own events: the hook's, the pod's FailedMount.
            "PostStartHookError" | CONTAINER_CREATING => {}
            r @ ("ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "ErrImageInspect") => {
                events.warning(reason::FAILED, format!("Error: {r}"));
            }
            _ => events.warning(reason::FAILED, format!("Error: {}", waiting.message)),
        }
        let reason = waiting.reason.clone();
        memory.waiting.insert(name.to_owned(), waiting);
        ExecuteError::Waiting {
            uid: uid.into(),
            name: name.into(),
            reason,
        }
    }

    /// Runs a call whose object may already be gone (not an error).
    async fn tolerate_missing<T: Send>(
        &self,
        uid: &str,
        action: &'static str,
        call: CallFuture<'_, T>,
    ) -> Result<(), ExecuteError> {
        match call.await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(source) => Err(ExecuteError::Runtime {
                uid: uid.into(),
                action,
                source,
            }),
        }
    }
}

/// Creates a volume plan's directories, files and mounts on the host (blocking work, off the
/// async threads).
/// Sets up the host side of the volumes; a failure keeps its reason (`FailedMount`).
async fn prepare(plan: spec::VolumePlan) -> Result<(), Waiting> {
    tokio::task::spawn_blocking(move || {
        spec::prepare_volumes(&plan, Path::new("/")).map_err(|e| Waiting {
            reason: e.reason().to_owned(),
            message: e.to_string(),
        })
    })
    .await
    .map_err(|e| Waiting {
        reason: spec::CREATE_CONTAINER_CONFIG_ERROR.to_owned(),
        message: format!("volume preparation task failed: {e}"),
    })?
}

/// The waiting reason of a container whose pod's volumes are not set up (upstream's default
/// waiting state).
const CONTAINER_CREATING: &str = "ContainerCreating";

fn spec_error(uid: &str, message: &str) -> ExecuteError {
    ExecuteError::Spec {
        uid: uid.into(),
        message: message.into(),
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerSpec> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

fn target_spec(pod: &Pod, target: Target) -> Option<&ContainerSpec> {
    let spec = pod.spec.as_ref()?;
    match target {
        Target::Init(i) => spec.init_containers.as_ref()?.get(i),
        Target::App(i) => spec.containers.get(i),
    }
}

mod garbage;
mod sandbox;
mod stop;

pub use garbage::{GARBAGE_RETRY, defer_failed as defer_failed_garbage};

#[cfg(test)]
#[path = "execute_tests.rs"]
mod tests;
