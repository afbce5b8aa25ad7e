//! Resource conversions the upstream kubelet applies when it hands cgroup settings to the runtime,
//! kept free of CRI plumbing where possible so cgroup code can reuse them.
//!
//! - [`milli_cpu_to_shares`] / [`milli_cpu_to_quota`]: `MilliCPUToShares` (`pkg/kubelet/cm`,
//!   clamped to `[2, 262144]`) and `milliCPUToQuota` (`kuberuntime/helpers_linux.go`, 1 ms
//!   minimum).
//! - [`linux_resources`]: `calculateLinuxResources` (`kuberuntime_container_linux.go`): shares
//!   from the request (the limit when there is no request), quota and period when `cpuCFSQuota`,
//!   the memory limit, and `memory.oom.group = 1` (cgroup v2 with `singleProcessOOMKill` unset).
//! - the `QoS` class comes from [`crate::status::qos`] (`GetPodQOS`), shared with the pod status.
//! - [`oom_score_adj`]: `GetContainerOOMScoreAdjust` (`pkg/kubelet/qos/policy.go`): -997 for
//!   node-critical and `Guaranteed` pods, 1000 for `BestEffort`, `1000 - 1000*request/capacity`
//!   clamped to `[3, 999]` for `Burstable`, sidecars no higher than the smallest app container.
//! - [`pod_requests`] / [`pod_limits`]: `AggregateContainerRequests` / `...Limits`
//!   (`k8s.io/component-helpers/resource`): app containers summed, init containers as a maximum,
//!   restartable init containers (sidecars) counted in both.
//!
//! Pod-level `spec.resources` (the `PodLevelResources` gate) and hugepage limits are not applied.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kernlet_cri::v1;

use super::{NodeContext, SpecError, pod_ref, pod_spec};
use crate::config::Quantity;
use crate::pod::defaults::CONFIG_SOURCE_ANNOTATION;
use crate::status::qos::{QosClass, get_pod_qos};

/// The kernel's minimum `cpu.shares` (and what a zero request gets).
pub const MIN_SHARES: i64 = 2;
/// The kernel's maximum `cpu.shares`.
pub const MAX_SHARES: i64 = 262_144;
pub const SHARES_PER_CPU: i64 = 1024;
pub const MILLI_CPU_PER_CPU: i64 = 1000;
/// The default CFS period: 100 ms.
pub const QUOTA_PERIOD_US: i64 = 100_000;
/// The smallest CFS quota upstream sets: 1 ms.
pub const MIN_QUOTA_US: i64 = 1000;
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

/// CPU milli-cores to `cpu.shares`: `milli * 1024 / 1000`, clamped to `[2, 262144]`; 0 gives 2.
#[must_use]
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_CPU_PER_CPU).clamp(MIN_SHARES, MAX_SHARES)
}

/// CPU milli-cores to a CFS quota over `period_us`: `milli * period / 1000`, at least 1 ms; 0
/// (no limit) gives 0, which the runtime reads as unlimited.
#[must_use]
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period_us) / MILLI_CPU_PER_CPU).max(MIN_QUOTA_US)
}

/// cpu (milli-cores), memory and ephemeral-storage (bytes); `None` when the resource is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub ephemeral_storage_bytes: Option<i64>,
}

impl Amounts {
    fn add(&mut self, other: &Self) {
        let sum = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        self.cpu_millis = sum(self.cpu_millis, other.cpu_millis);
        self.memory_bytes = sum(self.memory_bytes, other.memory_bytes);
        self.ephemeral_storage_bytes =
            sum(self.ephemeral_storage_bytes, other.ephemeral_storage_bytes);
    }

    fn max(&mut self, other: &Self) {
        let max = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.cpu_millis = max(self.cpu_millis, other.cpu_millis);
        self.memory_bytes = max(self.memory_bytes, other.memory_bytes);
        self.ephemeral_storage_bytes =
            max(self.ephemeral_storage_bytes, other.ephemeral_storage_bytes);
    }
}

/// A container's parsed requests and limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub requests: Amounts,
    pub limits: Amounts,
}

/// Parses the cpu, memory and ephemeral-storage requests and limits of `container`; other
/// resources (hugepages, extended resources) are ignored.
pub fn container_resources(pod: &Pod, container: &Container) -> Result<Resources, SpecError> {
    let parse = |map: Option<&BTreeMap<String, ApiQuantity>>, kind: &str| {
        parse_amounts(map, |resource, value, reason| SpecError::Resource {
            pod: pod_ref(pod),
            container: container.name.clone(),
            resource: format!("{kind}.{resource}"),
            value: value.to_owned(),
            reason,
        })
    };
    let resources = container.resources.as_ref();
    Ok(Resources {
        requests: parse(resources.and_then(|r| r.requests.as_ref()), "requests")?,
        limits: parse(resources.and_then(|r| r.limits.as_ref()), "limits")?,
    })
}

fn parse_amounts(
    map: Option<&BTreeMap<String, ApiQuantity>>,
    error: impl Fn(&str, &str, String) -> SpecError,
) -> Result<Amounts, SpecError> {
    let mut amounts = Amounts::default();
    for (name, quantity) in map.into_iter().flatten() {
        let slot = match name.as_str() {
            "cpu" => &mut amounts.cpu_millis,
            "memory" => &mut amounts.memory_bytes,
            "ephemeral-storage" => &mut amounts.ephemeral_storage_bytes,
            _ => continue,
        };
        let parsed: Quantity = quantity
            .0
            .parse()
            .map_err(|e| error(name, &quantity.0, format!("invalid quantity: {e}")))?;
        *slot = Some(if name == "cpu" {
            parsed.milli_value()
        } else {
            parsed.value()
        });
    }
    Ok(amounts)
}

/// A parsed quantity in whole units (bytes), for callers outside container resources.
pub(super) fn quantity_value(quantity: &ApiQuantity) -> Result<Quantity, String> {
    quantity
        .0
        .parse::<Quantity>()
        .map_err(|e| format!("invalid quantity {:?}: {e}", quantity.0))
}

fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// `AggregateContainerRequests` / `AggregateContainerLimits` for one side (requests or limits).
fn aggregate(pod: &Pod, side: fn(&Resources) -> Amounts) -> Result<Amounts, SpecError> {
    let spec = pod_spec(pod)?;
    let mut total = Amounts::default();
    for container in &spec.containers {
        total.add(&side(&container_resources(pod, container)?));
    }
    let mut sidecars = Amounts::default();
    let mut init_peak = Amounts::default();
    for container in spec.init_containers.iter().flatten() {
        let own = side(&container_resources(pod, container)?);
        let in_use = if is_sidecar(container) {
            total.add(&own);
            sidecars.add(&own);
            sidecars
        } else {
            let mut in_use = own;
            in_use.add(&sidecars);
            in_use
        };
        init_peak.max(&in_use);
    }
    total.max(&init_peak);
    Ok(total)
}

/// The pod's effective requests, without overhead.
pub fn pod_requests(pod: &Pod) -> Result<Amounts, SpecError> {
    aggregate(pod, |r| r.requests)
}

/// The pod's effective limits, without overhead; a resource no container limits is absent.
pub fn pod_limits(pod: &Pod) -> Result<Amounts, SpecError> {
    aggregate(pod, |r| r.limits)
}

/// `spec.overhead`, parsed.
pub fn pod_overhead(pod: &Pod) -> Result<Amounts, SpecError> {
    let spec = pod_spec(pod)?;
    parse_amounts(spec.overhead.as_ref(), |resource, value, reason| {
        SpecError::Sandbox {
            pod: pod_ref(pod),
            reason: format!("overhead {resource} {value:?}: {reason}"),
        }
    })
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
        node.allocatable.memory_bytes
    };
    if ceiling <= 0 {
        return;
    }
    let high = crate::cgroup::convert::memory_high(
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
