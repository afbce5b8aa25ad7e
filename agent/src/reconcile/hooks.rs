//! Container lifecycle hooks, as upstream's handler runner runs them
//! (`pkg/kubelet/lifecycle/handlers.go`): exec through CRI `ExecSync`, httpGet against the pod
//! IP (any answer passes, as upstream; only no answer fails), and sleep. postStart runs right after `StartContainer` and the
//! worker reports nothing of the pod until it returns; preStop runs before `StopContainer`,
//! bounded by the grace period. The messages are upstream's, so logs read the same.
use std::{net::IpAddr, time::Duration};

use k8s_openapi::api::core::v1::{Container as ContainerSpec, LifecycleHandler, Pod};

use super::spec::NodeContext;
use crate::{
    cri::Cri,
    probe::{
        Outcome,
        handler::{self, Target},
    },
};

/// The longest an httpGet postStart hook may take (upstream's hook client has no timeout; a
/// hook that never answers would hold the pod's worker forever).
const HTTP_HOOK_LIMIT: Duration = Duration::from_hours(1);

/// Where a hook runs.
#[derive(Debug, Clone, Copy)]
pub struct HookTarget<'a> {
    pub pod: &'a Pod,
    pub container: &'a ContainerSpec,
    pub container_id: &'a str,
    /// The pod IP (the node's for hostNetwork pods): httpGet's default host.
    pub pod_ip: Option<IpAddr>,
}

/// `namespace/name`, as upstream's `format.Pod` names a pod in hook messages.
fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Runs `hook` against `target`, within `timeout` when there is one; `Err` with upstream's
/// message when it failed.
pub async fn run(
    runtime: &dyn Cri,
    hook: &LifecycleHandler,
    target: HookTarget<'_>,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let name = &target.container.name;
    let pod = pod_name(target.pod);
    if let Some(exec) = &hook.exec {
        let command = exec.command.clone().unwrap_or_default();
        let shown = format!("{command:?}");
        return match handler::exec(runtime, target.container_id, command, timeout).await {
            Outcome::Success | Outcome::Warning(_) => Ok(()),
            Outcome::Failure(output) | Outcome::Error(output) => Err(format!(
                "Exec lifecycle hook ({shown}) for Container {name:?} in Pod {pod:?} failed - error: {output}"
            )),
        };
    }
    if let Some(action) = &hook.http_get {
        let probe_target = Target {
            container_id: target.container_id.to_owned(),
            ports: target.container.ports.clone().unwrap_or_default(),
            pod_ip: target.pod_ip,
        };
        let limit = timeout.unwrap_or(HTTP_HOOK_LIMIT);
        let path = action.path.as_deref().unwrap_or_default();
        return handler::http_hook(action, &probe_target, limit)
            .await
            .map_err(|error| {
                format!(
                    "HTTP lifecycle hook ({path}) for Container {name:?} in Pod {pod:?} failed - error: {error}"
                )
            });
    }
    if let Some(sleep) = &hook.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(timeout.map_or(wanted, |t| wanted.min(t))).await;
        return Ok(());
    }
    Err(format!(
        "lifecycle hook for Container {name:?} in Pod {pod:?} has no handler (exec, httpGet or sleep)"
    ))
}

/// The pod's IP for hooks and probes: the node's first IP for hostNetwork pods, else the
/// sandbox's.
#[must_use]
pub fn pod_ip(pod: &Pod, sandbox_ip: Option<&str>, node: &NodeContext) -> Option<IpAddr> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        node.host_ips.first().copied()
    } else {
        sandbox_ip?.parse().ok()
    }
}
