//! Stopping containers: the preStop hook (exec, httpGet or sleep), then `StopContainer` with
//! what is left of the grace period (upstream's `killContainer`: the hook's whole seconds count
//! against the grace, at least 2 s remain for SIGTERM); consecutive stops run in parallel, as
//! `killContainersWithSyncResult`.
use std::{net::IpAddr, pin::Pin, task::Poll, time::Duration};

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod};
use kernlet_cri::v1;
use tokio::time::Instant;

use super::{ExecuteError, Executor, find_container};
use crate::event::{Involved, reason as event};
use crate::reconcile::{
    hooks::{self, HookTarget},
    plan::{Action, StopReason},
};

/// Upstream's `minimumGracePeriodInSeconds`: what is left for SIGTERM after a slow preStop hook.
pub(super) const MINIMUM_GRACE: Duration = Duration::from_secs(2);

impl Executor {
    /// Stops containers concurrently, as upstream's `killContainersWithSyncResult` kills a pod's
    /// containers in parallel: each gets the whole grace period, so a pod with several
    /// containers that ignore SIGTERM stops in one grace period, not one per container. Every
    /// stop runs to its end; the first failure is returned.
    pub(super) async fn stop_containers(
        &self,
        uid: &str,
        pod: Option<&Pod>,
        pod_ip: Option<IpAddr>,
        stops: &[Action],
    ) -> Result<(), ExecuteError> {
        let calls: Vec<_> = stops
            .iter()
            .filter_map(|action| match action {
                Action::StopContainer {
                    id,
                    name,
                    grace,
                    reason,
                } => {
                    let hook = pod.and_then(|p| Some((p, find_container(p, name)?)));
                    Some(self.stop_container(uid, id, hook, pod_ip, *grace, *reason))
                }
                _ => None,
            })
            .collect();
        join_all(calls).await.into_iter().collect()
    }

    pub(super) async fn stop_container(
        &self,
        uid: &str,
        id: &str,
        spec: Option<(&Pod, &ContainerSpec)>,
        pod_ip: Option<IpAddr>,
        grace: Duration,
        reason: StopReason,
    ) -> Result<(), ExecuteError> {
        let started = Instant::now();
        let events = spec.map(|(pod, c)| self.events().about(Involved::container(pod, &c.name)));
        if let (Some(events), Some((_, container))) = (&events, spec) {
            events.normal(event::KILLING, killing_message(&container.name, reason));
        }
        let pre_stop = spec.and_then(|(_, c)| c.lifecycle.as_ref()?.pre_stop.as_ref());
        if let (Some(hook), Some((pod, container))) = (pre_stop, spec) {
            let target = HookTarget {
                pod,
                container,
                container_id: id,
                pod_ip,
            };
            // Bounded by the grace period, as upstream's `executePreStopHook`.
            if let Err(message) = hooks::run(self.runtime(), hook, target, Some(grace)).await {
                tracing::warn!(%uid, container = id, %message, "FailedPreStopHook");
                if let Some(events) = &events {
                    events.warning(event::FAILED_PRE_STOP_HOOK, message);
                }
            }
        }
        let left = grace_after_hook(grace, started.elapsed());
        tracing::info!(%uid, container = id, ?reason, grace = ?left, "stopping container");
        let request = v1::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        };
        match self.runtime.stop_container(request).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(source) => Err(ExecuteError::Runtime {
                uid: uid.into(),
                action: "StopContainer",
                source,
            }),
        }
    }
}

/// Upstream's `Killing` event message for stopping container `name` because of `reason`.
fn killing_message(name: &str, reason: StopReason) -> String {
    match reason {
        StopReason::ProbeFailed { kind, restart } => {
            let then = if restart { ", will be restarted" } else { "" };
            format!("Container {name} failed {} probe{then}", kind.lower())
        }
        StopReason::SpecChanged => {
            format!("Container {name} definition changed, will be restarted")
        }
        StopReason::PostStartHookFailed => "FailedPostStartHook".to_owned(),
        _ => format!("Stopping container {name}"),
    }
}

/// Polls `futures` together on the current task until all are done; their outputs in order.
/// (No spawning: the futures borrow the executor and the plan.)
pub(super) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(&mut outputs) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// What is left of `grace` for SIGTERM after a preStop hook that took `hook`, in whole seconds
/// as upstream's `killContainer` counts it: the hook's time truncated to seconds, at least
/// [`MINIMUM_GRACE`] left (none when the grace period is zero). CRI's `StopContainer` timeout is
/// whole seconds too, so a sub-second remainder would be truncated away there.
pub(super) fn grace_after_hook(grace: Duration, hook: Duration) -> Duration {
    if grace.is_zero() {
        return Duration::ZERO;
    }
    let left = grace.as_secs().saturating_sub(hook.as_secs());
    Duration::from_secs(left).max(MINIMUM_GRACE)
}
