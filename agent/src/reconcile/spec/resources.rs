//! The CRI side of resource handling: what the upstream kubelet puts in
//! `LinuxContainerResources` for containers and sandboxes, and the OOM score. The resource maths
//! itself (requests, limits, `QoS`, shares, quota, `memory.high`) lives in [`crate::resources`];
//! the items re-exported here keep the builders' imports short.
//!
//! - [`linux_resources`]: `calculateLinuxResources` (`kuberuntime_container_linux.go`): shares
//!   from the request (the limit when there is no request), quota and period when `cpuCFSQuota`,
//!   the memory limit, and `memory.oom.group = 1` (cgroup v2 with `singleProcessOOMKill` unset).
//! - [`oom_score_adj`]: `GetContainerOOMScoreAdjust` (`pkg/kubelet/qos/policy.go`): -997 for
//!   node-critical and `Guaranteed` pods, 1000 for `BestEffort`, `1000 - 1000*request/capacity`
//!   clamped to `[3, 999]` for `Burstable`, sidecars no higher than the smallest app container.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kernlet_cri::v1;

use super::{NodeContext, SpecError, pod_spec};
use crate::config::Quantity;
use crate::pod::defaults::CONFIG_SOURCE_ANNOTATION;
pub use crate::resources::{QUOTA_PERIOD_US, container_resources, pod_limits, pod_overhead};
use crate::resources::{
    QosClass, ResourceError, Resources, convert::memory_high, get_pod_qos, milli_cpu_to_quota,
    milli_cpu_to_shares, pod_requests,
};

/// OOM score adjustment of `Guaranteed` and node-critical containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// OOM score adjustment of `BestEffort` containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// `memory.oom.group`: kill the whole container cgroup on OOM.
const OOM_GROUP: &str = "memory.oom.group";
/// `memory.min` and `memory.high` (`MemoryQoS`).
const MEMORY_MIN: &str = "memory.min";
const MEMORY_HIGH: &str = "memory.high";
/// `memory.swap.max`: the swap a cgroup may use.
const SWAP_MAX: &str = "memory.swap.max";
/// `scheduling.SystemCriticalPriority`.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The same failure as the CRI builders report it: a container's quantity is a container config
/// error, a bad overhead or a missing spec a sandbox error (upstream's reasons follow from that).
impl From<ResourceError> for SpecError {
    fn from(error: ResourceError) -> Self {
        match error {
            ResourceError::Container {
                pod,
                container,
                resource,
                value,
                reason,
            } => Self::Resource {
                pod,
                container,
                resource,
                value,
                reason,
            },
            ResourceError::Overhead {
                pod,
                resource,
                value,
                reason,
            } => Self::Sandbox {
                pod,
                reason: format!("overhead {resource} {value:?}: {reason}"),
            },
            ResourceError::NoSpec { pod } => Self::Sandbox {
                pod,
                reason: "the pod has no spec".to_owned(),
            },
        }
    }
}

/// A parsed quantity in whole units (bytes), for callers outside container resources.
pub(super) fn quantity_value(quantity: &ApiQuantity) -> Result<Quantity, String> {
    quantity
        .0
        .parse::<Quantity>()
        .map_err(|e| format!("invalid quantity {:?}: {e}", quantity.0))
}

/// `IsNodeCriticalPod`: a critical pod (static, or priority at least system-cluster-critical)
/// in the `system-node-critical` priority class.
#[must_use]
pub fn is_node_critical(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let is_static = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|source| source != "api");
    let high_priority = spec
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    (is_static || high_priority)
        && spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical")
}

/// The `Burstable` formula, `1000 - 1000 * request / capacity`, in wide arithmetic.
fn burstable_score(memory_request: i64, memory_capacity: u64) -> i64 {
    let capacity = i128::from(memory_capacity.max(1));
    let score = 1000 - (1000 * i128::from(memory_request.max(0))) / capacity;
    i64::try_from(score).unwrap_or(i64::MIN)
}

/// `GetContainerOOMScoreAdjust` for `container` of `pod` on a node with `memory_capacity` bytes.
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    sidecar: bool,
    memory_capacity: u64,
) -> Result<i64, SpecError> {
    if is_node_critical(pod) {
        return Ok(GUARANTEED_OOM_SCORE_ADJ);
    }
    // The QoS class is the one the pod's status reports (`GetPodQOS`).
    match get_pod_qos(pod) {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ),
        QosClass::BestEffort => return Ok(BEST_EFFORT_OOM_SCORE_ADJ),
        QosClass::Burstable => {}
    }
    let request = container_resources(pod, container)?
        .requests
        .memory_bytes
        .unwrap_or(0);
    let mut score = burstable_score(request, memory_capacity);
    if sidecar {
        let spec = pod_spec(pod)?;
        let mut smallest: Option<i64> = None;
        for app in &spec.containers {
            let request = container_resources(pod, app)?
                .requests
                .memory_bytes
                .unwrap_or(0);
            smallest = Some(smallest.map_or(request, |s| s.min(request)));
        }
        score = score.min(burstable_score(smallest.unwrap_or(0), memory_capacity));
    }
    Ok(clamp_burstable(score))
}

/// Keeps a `Burstable` score above `Guaranteed` (at least 3) and below `BestEffort` (at most 999).
#[must_use]
pub fn clamp_burstable(score: i64) -> i64 {
    if score < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        1000 + GUARANTEED_OOM_SCORE_ADJ
    } else if score >= BEST_EFFORT_OOM_SCORE_ADJ {
        BEST_EFFORT_OOM_SCORE_ADJ - 1
    } else {
        score
    }
}

/// `calculateLinuxResources`: shares from `cpu_request` (from `cpu_limit` when there is no
/// request), a CFS quota and period when `cpuCFSQuota` is on, the memory limit when non-zero,
/// and `memory.oom.group = 1`.
#[must_use]
pub fn linux_resources(
    cpu_request_millis: Option<i64>,
    cpu_limit_millis: Option<i64>,
    memory_limit_bytes: Option<i64>,
    node: &NodeContext,
) -> v1::LinuxContainerResources {
    let shares_from = cpu_request_millis.unwrap_or_else(|| cpu_limit_millis.unwrap_or(0));
    let mut resources = v1::LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(shares_from),
        memory_limit_in_bytes: memory_limit_bytes.unwrap_or(0),
        ..Default::default()
    };
    if node.cpu_cfs_quota {
        let period = node.cpu_cfs_quota_period_us;
        resources.cpu_quota = milli_cpu_to_quota(cpu_limit_millis.unwrap_or(0), period);
        resources.cpu_period = period;
    }
    // runc refuses `unified` entries on a v1 or hybrid host; upstream sets this only on v2.
    if node.cgroup_v2 {
        resources
            .unified
            .insert(OOM_GROUP.to_owned(), "1".to_owned());
    }
    resources
}

/// `generateLinuxContainerResources`: the container's cgroup settings, OOM score included, and
/// `memory.swap.max = 0` where the host has a swap controller (`NoSwap`).
pub fn container_linux_resources(
    pod: &Pod,
    container: &Container,
    sidecar: bool,
    node: &NodeContext,
) -> Result<v1::LinuxContainerResources, SpecError> {
    let parsed = container_resources(pod, container)?;
    let mut resources = linux_resources(
        parsed.requests.cpu_millis,
        parsed.limits.cpu_millis,
        parsed.limits.memory_bytes,
        node,
    );
    resources.oom_score_adj = oom_score_adj(pod, container, sidecar, node.memory_capacity_bytes)?;
    if node.swap_controller {
        resources
            .unified
            .insert(SWAP_MAX.to_owned(), "0".to_owned());
    }
    if node.memory_qos && node.cgroup_v2 {
        memory_qos(&mut resources, &parsed, node);
    }
    Ok(resources)
}

/// `MemoryQoS` for one container (`generateLinuxContainerResources`): `memory.min` from the
/// memory request, and `memory.high` when request and limit differ, between the request and the
/// limit (node allocatable memory when there is none) at `memoryThrottlingFactor`.
fn memory_qos(resources: &mut v1::LinuxContainerResources, parsed: &Resources, node: &NodeContext) {
    let request = parsed.requests.memory_bytes.unwrap_or(0).max(0);
    let limit = parsed.limits.memory_bytes.unwrap_or(0).max(0);
    if request != 0 {
        resources
            .unified
            .insert(MEMORY_MIN.to_owned(), request.to_string());
    }
    if request == limit {
        return;
    }
    let ceiling = if limit != 0 {
        limit
    } else {
        node.allocatable.memory_bytes.unwrap_or(0)
    };
    if ceiling <= 0 {
        return;
    }
    let high = memory_high(
        request as u64,
        ceiling as u64,
        node.memory_throttling_factor,
    );
    if let Some(high) = high {
        resources
            .unified
            .insert(MEMORY_HIGH.to_owned(), high.to_string());
    }
}

/// `calculateSandboxResources` and `convertOverheadToLinuxResources`: the sandbox's share of the
/// pod's requests and limits, and its overhead (requests equal to limits), as
/// `(resources, overhead)`.
pub fn sandbox_linux_resources(
    pod: &Pod,
    node: &NodeContext,
) -> Result<(v1::LinuxContainerResources, v1::LinuxContainerResources), SpecError> {
    let requests = pod_requests(pod)?;
    let limits = pod_limits(pod)?;
    let resources = linux_resources(
        requests.cpu_millis,
        limits.cpu_millis,
        limits.memory_bytes,
        node,
    );
    let has_overhead = pod.spec.as_ref().is_some_and(|s| s.overhead.is_some());
    let overhead = if has_overhead {
        let overhead = pod_overhead(pod)?;
        let cpu = Some(overhead.cpu_millis.unwrap_or(0));
        linux_resources(cpu, cpu, overhead.memory_bytes, node)
    } else {
        v1::LinuxContainerResources::default()
    };
    Ok((resources, overhead))
}
