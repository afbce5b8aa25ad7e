//! Resource enforcement through cgroup v2, written directly (`docs/architecture.md`, decision 5):
//! the node-level hierarchy with node allocatable, `QoS` tiers, pod cgroups, and what is written
//! into them (`Documentation/admin-guide/cgroup-v2.rst`; upstream `pkg/kubelet/cm`). The
//! arithmetic from Kubernetes resources to cgroup values is [`crate::resources`]'.
//!
//! The mount point is a parameter ([`Cgroupfs::new`]): unit tests write into a temp dir laid out
//! like cgroupfs, the node-VM tests use the real `/sys/fs/cgroup`.
//!
//! # Why not `cgroups-rs`
//! `cgroups-rs` 0.5 was read and measured against this module (`cargo xtask bench cgroups`,
//! numbers in `docs/perf.md`). Creating, limiting and removing 200 pod cgroups in the node VM
//! took 3.3x the CPU with the crate (5.6 ms against 1.7 ms per cgroup under TCG), and for
//! 1024 CPU shares it wrote `cpu.weight` 1024 — no v1-to-v2 conversion at all, where runc writes
//! 39 for the container cgroups below — so pod weights would be off by 26x against their own
//! containers. It also reports missing v2 memory stats as 0, opens a v1 file for v2 OOM
//! notification, has no `memory.events`, PSI or `cgroup.kill`, and its errors do not carry the
//! value written. The hand-written layer is a few hundred lines, names file, value and errno on
//! every failure, and does no syscalls beyond the writes themselves.
pub mod fs;
pub mod manager;
pub mod resources;

use std::path::PathBuf;

pub use fs::{Cgroupfs, Setup};
pub use manager::{CgroupManager, NodeSettings, REQUIRED_CONTROLLERS};
pub use resources::{PodSettings, ResourceConfig};

use crate::config::{EvictionSignal, EvictionThreshold, KubeletConfig, Quantity, ReservedResource};
use crate::resources::{Amounts, ResourceError};
use std::collections::BTreeMap;

/// The first kernel upstream enables `MemoryQoS` on: older ones can livelock a cgroup at
/// `memory.high` (KEP-2570).
pub const MEMORY_QOS_MIN_KERNEL: (u32, u32) = (5, 9);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "cgroupsPerQOS needs the cgroup v2 controllers {missing}, but {mount} is {setup}; boot \
         with the unified hierarchy (systemd.unified_cgroup_hierarchy=1), or set \
         cgroupsPerQOS: false (and enforceNodeAllocatable: []) to run pods without kernlet's \
         cgroup hierarchy",
        mount = mount.display()
    )]
    Unsupported {
        mount: PathBuf,
        setup: String,
        missing: String,
    },
    #[error("creating cgroup {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "writing {value:?} to {}: the file does not exist (is its controller enabled in the \
         parent's cgroup.subtree_control?)",
        path.display()
    )]
    MissingFile { path: PathBuf, value: String },
    #[error("removing cgroup {}: {source}", dir.display())]
    Remove {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {} still has processes {waited:?} after cgroup.kill", dir.display())]
    Busy {
        dir: PathBuf,
        waited: std::time::Duration,
    },
    #[error(
        "reserved cgroup {name} does not exist ({}): create it, or drop it from \
         enforceNodeAllocatable",
        dir.display()
    )]
    MissingReserved { name: String, dir: PathBuf },
    #[error("pod cgroup {name}: {source}")]
    Spec {
        name: String,
        #[source]
        source: Box<ResourceError>,
    },
}

fn reservation(map: &BTreeMap<ReservedResource, Quantity>) -> Amounts {
    Amounts {
        cpu_millis: map.get(&ReservedResource::Cpu).map(Quantity::milli_value),
        memory_bytes: map.get(&ReservedResource::Memory).map(Quantity::value),
        pids: map.get(&ReservedResource::Pid).map(Quantity::value),
        ..Amounts::default()
    }
}

/// The hard eviction threshold on `memory.available`, in bytes of a node with `memory` bytes.
fn eviction_memory(config: &KubeletConfig, memory: i64) -> i64 {
    match config.eviction_hard.get(&EvictionSignal::MemoryAvailable) {
        Some(EvictionThreshold::Quantity(quantity)) => quantity.value(),
        Some(EvictionThreshold::Percentage(fraction)) => (memory as f64 * fraction) as i64,
        None => 0,
    }
}

/// Node allocatable: capacity minus `kubeReserved`, `systemReserved` and the hard eviction
/// threshold (memory), never below zero.
#[must_use]
pub fn allocatable(config: &KubeletConfig, capacity: &Amounts) -> Amounts {
    let eviction = Amounts {
        memory_bytes: Some(eviction_memory(config, capacity.memory_bytes.unwrap_or(0))),
        ..Amounts::default()
    };
    capacity
        .minus(&reservation(&config.kube_reserved))
        .minus(&reservation(&config.system_reserved))
        .minus(&eviction)
}

/// Whether kernel `release` (`uname -r`, e.g. `6.1.0-27-amd64`) is new enough for `MemoryQoS`.
#[must_use]
pub fn kernel_supports_memory_qos(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= MEMORY_QOS_MIN_KERNEL
}

/// The cgroup manager's settings from the configuration, the node's `capacity` and its kernel.
#[must_use]
pub fn node_settings(
    config: &KubeletConfig,
    capacity: &Amounts,
    kernel_release: &str,
) -> NodeSettings {
    let enforce = &config.enforce_node_allocatable;
    let kubepods = if enforce.pods {
        allocatable(config, capacity)
    } else {
        *capacity
    };
    let mut reserved = Vec::new();
    if enforce.kube_reserved
        && let Some(cgroup) = &config.kube_reserved_cgroup
    {
        reserved.push((cgroup.clone(), reservation(&config.kube_reserved)));
    }
    if enforce.system_reserved
        && let Some(cgroup) = &config.system_reserved_cgroup
    {
        reserved.push((cgroup.clone(), reservation(&config.system_reserved)));
    }
    let memory_qos = config.feature_gates.memory_qos && kernel_supports_memory_qos(kernel_release);
    if config.feature_gates.memory_qos && !memory_qos {
        tracing::warn!(
            kernel = kernel_release,
            "MemoryQoS needs kernel 5.9 or newer (memory.high \
            can livelock older kernels); memory.min and memory.high are not set"
        );
    }
    let period = if config.feature_gates.custom_cpu_cfs_quota_period {
        u64::try_from(config.cpu_cfs_quota_period.as_micros()).unwrap_or(100_000)
    } else {
        100_000
    };
    NodeSettings {
        cgroup_root: if config.cgroup_root.is_empty() {
            "/".to_owned()
        } else {
            config.cgroup_root.clone()
        },
        kubepods,
        reserved,
        pods: PodSettings {
            cpu_cfs_quota: config.cpu_cfs_quota,
            cpu_period_us: period,
            pod_pids_limit: config.pod_pids_limit,
            memory_qos,
        },
    }
}

#[cfg(test)]
mod tests;
