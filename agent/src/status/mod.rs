//! The API status of a pod, computed from its spec and what the runtime holds, the way upstream's
//! kubelet computes it (v1.34 with default feature gates), so the API server and users see what
//! an upstream node would show.
//!
//! [`pod_status`] follows `generateAPIPodStatus` and `convertStatusToAPIStatus`
//! (`pkg/kubelet/kubelet_pods.go`), then the parts of the status manager's `SetPodStatus` /
//! `updateStatusInternal` / `normalizeStatus` (`pkg/kubelet/status/status_manager.go`) that shape
//! the stored status: observed generation, stable transition times, start time, timestamps
//! truncated to seconds, sorted container statuses.
//!
//! - container statuses: `containers` (`convertToAPIContainerStatuses`, the prober's
//!   `UpdatePodStatus`);
//! - phase: `phase` (`getPhase`) plus the terminal-phase rules of `generateAPIPodStatus`;
//! - conditions: `conditions` (`pkg/kubelet/status/generate.go`);
//! - quality-of-service class: [`crate::resources::qos`] (`GetPodQOS`);
//! - pod and host IPs: `sortPodIPs` and the host-network rules of `generateAPIPodStatus`.

mod conditions;
mod containers;
mod phase;
pub mod store;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, HostIP, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pod::defaults::CONFIG_SOURCE_ANNOTATION;
use crate::reconcile::plan::BackingOff;
use crate::reconcile::state::{Nanos, PodRuntime, Waiting};
use crate::resources::get_pod_qos;

pub use crate::probe::ProbeResults;

/// Everything [`pod_status`] reads.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The API-defaulted pod; its `status` is the source's (for static pods: phase `Pending`).
    pub pod: &'a Pod,
    /// What the runtime holds for the pod.
    pub runtime: &'a PodRuntime,
    /// The CRI runtime name (`containerd`), the scheme of container IDs: `containerd://<id>`.
    pub runtime_name: &'a str,
    /// Why a container that should run has no running instance, by container name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// Containers in CrashLoopBackOff.
    pub backing_off: &'a [BackingOff],
    /// Probe results by container ID (the runtime's ID, without the `<runtime>://` scheme).
    pub probes: &'a HashMap<String, ProbeResults>,
    /// The node's IPs, primary first (at most two are used: one per family).
    pub host_ips: &'a [IpAddr],
    /// When kernlet first saw the pod; `now` when `None` and `previous` has no start time.
    pub start_time: Option<Time>,
    /// The pod is being torn down (upstream's `podIsTerminal`): once nothing runs, a pod that is
    /// not static gets a terminal phase whatever its restart policy.
    pub terminating: bool,
    /// The status this function last returned for the pod (upstream's status-manager cache);
    /// `None` on the first call, when the pod's own `status` stands in.
    pub previous: Option<&'a PodStatus>,
    pub now: Time,
}

/// `generateAPIPodStatus` plus the status manager's normalisation: the status to report.
#[must_use]
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let no_status = PodStatus::default();
    let api = pod.status.as_ref().unwrap_or(&no_status);
    let old = input.previous.unwrap_or(api);
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();

    let mut status = PodStatus {
        qos_class: Some(get_pod_qos(pod).as_str().to_owned()),
        ..Default::default()
    };
    let pod_ips = sandbox_ips(input.runtime, input.host_ips);

    // convertStatusToAPIStatus
    let ctx = containers::Context::new(
        input,
        !init_specs.is_empty(),
        pod.metadata.deletion_timestamp.is_some(),
    );
    let old_app = old.container_statuses.as_deref().unwrap_or_default();
    let old_init = old.init_container_statuses.as_deref().unwrap_or_default();
    let mut app = containers::statuses(&ctx, &spec.containers, &spec.containers, old_app, false);
    let mut init = containers::statuses(&ctx, init_specs, &spec.containers, old_init, true);

    // Phase, then the terminal-phase rules.
    let all: Vec<&ContainerStatus> = app.iter().chain(&init).collect();
    let has_initialized = any_active_regular_container(spec, input.runtime);
    let mut phase = phase::get_phase(pod, spec, &all, input.terminating, has_initialized);
    if !phase::is_terminal(Some(phase))
        && let Some(terminal) = [old.phase.as_deref(), api.phase.as_deref()]
            .into_iter()
            .find(|p| phase::is_terminal(*p))
            .flatten()
    {
        phase = terminal_str(terminal);
    }
    if old.phase.as_deref() == Some(phase) {
        status.reason = old.reason.clone().or_else(|| api.reason.clone());
        status.message = old.message.clone().or_else(|| api.message.clone());
    }
    if let Some(terminal) = api.phase.as_deref().filter(|p| phase::is_terminal(Some(p))) {
        phase = terminal_str(terminal);
    }
    status.phase = Some(phase.to_owned());

    containers::apply_probes(input, &spec.containers, &mut app, false);
    containers::apply_probes(input, init_specs, &mut init, true);

    // Conditions: init statuses first, as upstream appends them.
    let all: Vec<&ContainerStatus> = init.iter().chain(&app).collect();
    let generation = pod.metadata.generation.filter(|g| *g != 0);
    let inputs = conditions::Inputs {
        spec,
        statuses: &all,
        phase,
        new_sandbox_needed: new_sandbox_needed(spec, input.runtime),
        generation,
    };
    let mut conds = conditions::generate(&inputs, api, old);

    set_ips(&mut status, spec, pod_ips, input.host_ips);

    // The status manager: observed generation, transition times, start time, normalisation.
    status.observed_generation = match (generation, old.observed_generation) {
        (Some(g), Some(o)) => Some(g.max(o)),
        (g, o) => g.or(o),
    };
    let now = truncate(&input.now);
    conditions::set_transition_times(&mut conds, old, &now);
    status.start_time = old
        .start_time
        .clone()
        .or_else(|| input.start_time.clone())
        .or_else(|| Some(now.clone()))
        .map(|t| truncate(&t));
    for condition in &mut conds {
        condition.last_probe_time = condition.last_probe_time.as_ref().map(truncate);
        condition.last_transition_time = condition.last_transition_time.as_ref().map(truncate);
    }
    status.conditions = Some(conds);
    for container in app.iter_mut().chain(init.iter_mut()) {
        normalize_state(container.state.as_mut());
        normalize_state(container.last_state.as_mut());
    }
    status.container_statuses = Some(app);
    status.init_container_statuses = (!init.is_empty()).then_some(init);
    status
}

fn terminal_str(phase: &str) -> &'static str {
    if phase == phase::SUCCEEDED {
        phase::SUCCEEDED
    } else {
        phase::FAILED
    }
}

/// `kubetypes.IsStaticPod`: the pod came from a source other than the API server.
pub(crate) fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|source| source != "api")
}

/// A CRI timestamp as an API time, truncated to seconds like `metav1.Time.Rfc3339Copy`.
pub(crate) fn time_from_nanos(nanos: Nanos) -> Time {
    let seconds = nanos.div_euclid(1_000_000_000);
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn truncate(time: &Time) -> Time {
    Time(Timestamp::from_second(time.0.as_second()).unwrap_or(time.0))
}

fn normalize_state(state: Option<&mut ContainerState>) {
    let Some(state) = state else {
        return;
    };
    if let Some(running) = state.running.as_mut() {
        running.started_at = running.started_at.as_ref().map(truncate);
    }
    if let Some(terminated) = state.terminated.as_mut() {
        terminated.started_at = terminated.started_at.as_ref().map(truncate);
        terminated.finished_at = terminated.finished_at.as_ref().map(truncate);
    }
}

/// The sandbox whose containers are current: the newest one, when ready (`GetPodStatus`).
fn active_sandbox(runtime: &PodRuntime) -> Option<&crate::reconcile::state::Sandbox> {
    runtime.newest_sandbox().filter(|s| s.ready)
}

/// `HasAnyActiveRegularContainerStarted`: an app container exists in the active sandbox.
fn any_active_regular_container(spec: &PodSpec, runtime: &PodRuntime) -> bool {
    let Some(sandbox) = active_sandbox(runtime) else {
        return false;
    };
    runtime
        .containers
        .iter()
        .any(|c| c.sandbox_id == sandbox.id && spec.containers.iter().any(|s| s.name == c.name))
}

/// `PodSandboxChanged`: no sandbox, several ready ones, a newest one that is not ready, or (off
/// the host network) a newest one without an IP.
fn new_sandbox_needed(spec: &PodSpec, runtime: &PodRuntime) -> bool {
    let Some(newest) = runtime.newest_sandbox() else {
        return true;
    };
    if runtime.sandboxes.iter().filter(|s| s.ready).count() > 1 || !newest.ready {
        return true;
    }
    spec.host_network != Some(true) && newest.ip.as_deref().is_none_or(str::is_empty)
}

/// Parses an IP the way Go's `ParseIPSloppy` does: IPv4 octets may carry leading zeros.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let octets: Vec<u8> = text
        .split('.')
        .map(|part| {
            (!part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u8>().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let [a, b, c, d] = octets.as_slice() else {
        return None;
    };
    Some(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)))
}

/// The active sandbox's IP, ordered by `sortPodIPs`: the first IP of the node's primary family,
/// then the first of the other family.
fn sandbox_ips(runtime: &PodRuntime, host_ips: &[IpAddr]) -> Vec<String> {
    let ips: Vec<IpAddr> = active_sandbox(runtime)
        .and_then(|s| s.ip.as_deref())
        .into_iter()
        .flat_map(|list| list.split(','))
        .filter_map(|ip| parse_ip(ip.trim()))
        .collect();
    let primary_v4 = host_ips
        .first()
        .is_none_or(|ip| ip.to_canonical().is_ipv4());
    let primary = ips.iter().find(|ip| ip.is_ipv4() == primary_v4);
    let secondary = ips.iter().find(|ip| ip.is_ipv4() != primary_v4);
    primary
        .into_iter()
        .chain(secondary)
        .map(ToString::to_string)
        .collect()
}

/// Pod IPs, and the node's IPs as `hostIP(s)`; host-network pods inherit the node's IPs.
fn set_ips(status: &mut PodStatus, spec: &PodSpec, mut pod_ips: Vec<String>, host_ips: &[IpAddr]) {
    if let Some(primary) = host_ips.first().map(IpAddr::to_canonical) {
        let mut hosts = vec![HostIP {
            ip: primary.to_string(),
        }];
        hosts.extend(host_ips.get(1).map(|ip| HostIP {
            ip: ip.to_canonical().to_string(),
        }));
        status.host_ip = Some(primary.to_string());
        status.host_ips = Some(hosts);
        if spec.host_network == Some(true) {
            if pod_ips.is_empty() {
                pod_ips.push(primary.to_string());
            }
            if let (Some(second), [only]) = (host_ips.get(1), pod_ips.as_slice()) {
                let second = second.to_canonical();
                if parse_ip(only).map(|ip| ip.is_ipv4()) != Some(second.is_ipv4()) {
                    pod_ips.push(second.to_string());
                }
            }
        }
    }
    status.pod_ip = pod_ips.first().cloned();
    status.pod_ips =
        (!pod_ips.is_empty()).then(|| pod_ips.into_iter().map(|ip| PodIP { ip }).collect());
}
