//! What kernlet writes into pod, QoS-tier and node-level cgroups, computed without touching the
//! filesystem (upstream `pkg/kubelet/cm`: `ResourceConfigForPod` in `helpers_linux.go`, the `QoS`
//! manager's tier shares, and `getCgroupConfig` for node allocatable).
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::resources::{
    Amounts, MIN_SHARES, QosClass, ResourceError, container_resources,
    convert::{CpuMax, shares_to_weight},
    get_pod_qos, milli_cpu_to_quota, milli_cpu_to_shares, pod_limits, pod_overhead, pod_requests,
};

/// The settings of one cgroup; `None` leaves a file as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_weight: Option<u64>,
    pub cpu_max: Option<CpuMax>,
    pub memory_max: Option<u64>,
    pub memory_min: Option<u64>,
    pub pids_max: Option<i64>,
}

impl ResourceConfig {
    /// The `(file, value)` writes, in an order the kernel accepts.
    #[must_use]
    pub fn writes(&self) -> Vec<(&'static str, String)> {
        let mut writes = Vec::new();
        if let Some(weight) = self.cpu_weight {
            writes.push(("cpu.weight", weight.to_string()));
        }
        if let Some(max) = self.cpu_max {
            writes.push(("cpu.max", max.to_string()));
        }
        if let Some(min) = self.memory_min {
            writes.push(("memory.min", min.to_string()));
        }
        if let Some(max) = self.memory_max {
            writes.push(("memory.max", max.to_string()));
        }
        if let Some(max) = self.pids_max {
            writes.push(("pids.max", max.to_string()));
        }
        writes
    }
}

/// The node settings pod cgroups depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodSettings {
    /// `cpuCFSQuota`: whether CPU limits become `cpu.max`.
    pub cpu_cfs_quota: bool,
    /// The CFS period in microseconds (`cpuCFSQuotaPeriod`).
    pub cpu_period_us: u64,
    /// `podPidsLimit`; not positive means no limit.
    pub pod_pids_limit: i64,
    /// The `MemoryQoS` gate, when the kernel supports it.
    pub memory_qos: bool,
}

impl Default for PodSettings {
    fn default() -> Self {
        Self {
            cpu_cfs_quota: true,
            cpu_period_us: 100_000,
            pod_pids_limit: -1,
            memory_qos: false,
        }
    }
}

fn declares(container: &Container, resource: &str) -> bool {
    container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(resource))
        .is_some_and(|q| !matches!(q.0.trim(), "" | "0"))
}

/// `ResourceConfigForPod`: `cpu.weight` from the summed requests, `cpu.max` and `memory.max` from
/// the summed limits when every container declares one (always for `Guaranteed`), the minimum
/// weight for `BestEffort`, `pids.max` from `podPidsLimit`, and `memory.min` from the memory
/// requests under `MemoryQoS`. Pod overhead is added as upstream does.
pub fn pod_config(pod: &Pod, settings: &PodSettings) -> Result<ResourceConfig, ResourceError> {
    let mut requests = pod_requests(pod)?;
    let mut limits = pod_limits(pod)?;
    let overhead = pod_overhead(pod)?;
    let add = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, None) => a,
        (None, b) => b,
    };
    requests.cpu_millis = add(requests.cpu_millis, overhead.cpu_millis);
    requests.memory_bytes = add(requests.memory_bytes, overhead.memory_bytes);
    let spec = pod.spec.as_ref();
    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .into_iter()
        .flatten();
    let (mut cpu_declared, mut memory_declared) = (true, true);
    for container in containers {
        // Parsing errors surface here with the container's name.
        container_resources(pod, container)?;
        cpu_declared &= declares(container, "cpu");
        memory_declared &= declares(container, "memory");
    }
    if cpu_declared {
        limits.cpu_millis = add(limits.cpu_millis, overhead.cpu_millis);
    }
    if memory_declared {
        limits.memory_bytes = add(limits.memory_bytes, overhead.memory_bytes);
    }

    let shares = milli_cpu_to_shares(requests.cpu_millis.unwrap_or(0));
    let cpu_max = (settings.cpu_cfs_quota && cpu_declared).then(|| {
        let quota = milli_cpu_to_quota(
            limits.cpu_millis.unwrap_or(0),
            i64::try_from(settings.cpu_period_us).unwrap_or(i64::MAX),
        );
        CpuMax {
            quota_us: u64::try_from(quota).ok().filter(|q| *q > 0),
            period_us: settings.cpu_period_us,
        }
    });
    let memory_max = limits
        .memory_bytes
        .and_then(|m| u64::try_from(m).ok())
        .filter(|_| memory_declared);
    let mut config = match get_pod_qos(pod) {
        QosClass::BestEffort => ResourceConfig {
            cpu_weight: Some(shares_to_weight(MIN_SHARES as u64)),
            ..ResourceConfig::default()
        },
        QosClass::Guaranteed | QosClass::Burstable => ResourceConfig {
            cpu_weight: Some(shares_to_weight(shares as u64)),
            cpu_max,
            memory_max,
            ..ResourceConfig::default()
        },
    };
    if settings.pod_pids_limit > 0 {
        config.pids_max = Some(settings.pod_pids_limit);
    }
    if settings.memory_qos {
        config.memory_min = requests
            .memory_bytes
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0);
    }
    Ok(config)
}

/// `getCgroupConfig` for a node-level cgroup (`kubepods`, or a reserved cgroup): `memory.max`,
/// `cpu.weight` from the CPU as shares, `pids.max`, each where the amount is known (node-level
/// amounts: milli-CPU, memory bytes, pids).
#[must_use]
pub fn node_config(resources: &Amounts) -> ResourceConfig {
    ResourceConfig {
        cpu_weight: resources
            .cpu_millis
            .map(|m| shares_to_weight(milli_cpu_to_shares(m) as u64)),
        memory_max: resources.memory_bytes.and_then(|m| u64::try_from(m).ok()),
        pids_max: resources.pids,
        ..ResourceConfig::default()
    }
}

/// The `burstable` tier's `cpu.weight`: the summed CPU requests of its active pods as shares.
pub fn burstable_weight<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> u64 {
    let millis: i64 = pods
        .into_iter()
        .filter(|pod| get_pod_qos(pod) == QosClass::Burstable)
        .filter_map(|pod| pod_requests(pod).ok()?.cpu_millis)
        .sum();
    shares_to_weight(milli_cpu_to_shares(millis) as u64)
}

/// The `besteffort` tier's `cpu.weight`: always the minimum.
#[must_use]
pub fn best_effort_weight() -> u64 {
    shares_to_weight(MIN_SHARES as u64)
}
