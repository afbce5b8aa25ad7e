//! Summary stats from [`crate::stats::model`] samples, with upstream's derivations:
//! cAdvisor's cgroup v2 `setMemoryStats` and kubelet's `pkg/kubelet/stats/helper.go`
//! (`cadvisorInfoToCPUandMemoryStats`, `cadvisorInfoToSwapStats`, `cadvisorInfoToIOStats`,
//! `cadvisorPSIToStatsPSI`, `cadvisorInfoToNetworkStats`).
//!
//! Units: `cpu.stat` microseconds become nanoseconds; memory is in bytes as cgroupfs writes it;
//! PSI totals stay in the kernel's microseconds (see [`PsiData`]).
use std::time::SystemTime;

use super::{
    ContainerStats, CpuStats, InterfaceStats, IoStats, MemoryStats, NetworkStats, ProcessStats,
    PsiData, PsiStats, SwapStats, Time,
};
use crate::stats::model::{self, CgroupSample};

/// The interface whose counters upstream inlines into `NetworkStats`
/// (`defaultNetworkInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Above this a memory or swap limit counts as unlimited (cAdvisor's `maxMemorySize`, 2^62:
/// the kernel rounds `max` to a page multiple below `i64::MAX`).
pub const UNLIMITED_MEMORY: u64 = 1 << 62;

/// The cumulative counters of one network interface (`/proc/net/dev` of the pod's network
/// namespace, or `/sys/class/net/<if>/statistics`). Counts of bytes, packets, errors, drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A limit as upstream sees it: `None` for "max" or anything above [`UNLIMITED_MEMORY`].
#[must_use]
pub fn effective_limit(limit: Option<u64>) -> Option<u64> {
    limit.filter(|&limit| limit <= UNLIMITED_MEMORY)
}

/// `usage_usec` in nanoseconds.
#[must_use]
pub fn usage_core_nanoseconds(cpu: &model::CpuStat) -> u64 {
    cpu.usage_usec.saturating_mul(1_000)
}

/// Average CPU use between two samples in core-nanoseconds per second (cAdvisor's `CpuInst`):
/// `None` without a usable previous sample (none, no time, not earlier, or a counter that went
/// backwards because the cgroup was recreated).
#[must_use]
pub fn usage_nano_cores(current: &CgroupSample, previous: &CgroupSample) -> Option<u64> {
    let (now, then) = (current.time?, previous.time?);
    let elapsed = now.duration_since(then).ok()?.as_nanos();
    if elapsed == 0 {
        return None;
    }
    let used = usage_core_nanoseconds(current.cpu.as_ref()?)
        .checked_sub(usage_core_nanoseconds(previous.cpu.as_ref()?))?;
    u64::try_from(u128::from(used) * 1_000_000_000 / elapsed).ok()
}

impl PsiStats {
    /// One pressure file; a missing `full` line reads as zeros, as upstream's struct does.
    #[must_use]
    pub fn from_model(psi: &model::Psi) -> Self {
        Self {
            full: psi
                .full
                .as_ref()
                .map(PsiData::from_model)
                .unwrap_or_default(),
            some: PsiData::from_model(&psi.some),
        }
    }
}

impl PsiData {
    #[must_use]
    pub fn from_model(line: &model::PsiLine) -> Self {
        Self {
            total: line.total_usec,
            avg10: line.avg10,
            avg60: line.avg60,
            avg300: line.avg300,
        }
    }
}

impl CpuStats {
    /// From a sample with the CPU controller; `previous` (the sample before it of the same
    /// cgroup) gives `usageNanoCores`.
    #[must_use]
    pub fn from_sample(sample: &CgroupSample, previous: Option<&CgroupSample>) -> Option<Self> {
        let cpu = sample.cpu.as_ref()?;
        Some(Self {
            time: Time(sample.time),
            usage_nano_cores: previous.and_then(|previous| usage_nano_cores(sample, previous)),
            usage_core_nano_seconds: Some(usage_core_nanoseconds(cpu)),
            psi: sample.pressure.cpu.as_ref().map(PsiStats::from_model),
        })
    }
}

impl MemoryStats {
    /// From a sample with the memory controller. `limit` is what `availableBytes` is measured
    /// against: the cgroup's `memory.max` for pods and containers ([`Self::from_sample`]), the
    /// machine's memory for the node (cAdvisor's root container spec).
    #[must_use]
    pub fn from_sample_with_limit(sample: &CgroupSample, limit: Option<u64>) -> Option<Self> {
        let memory = sample.memory.as_ref()?;
        let working_set = memory.working_set();
        Some(Self {
            time: Time(sample.time),
            available_bytes: effective_limit(limit).map(|limit| limit.saturating_sub(working_set)),
            usage_bytes: Some(memory.current),
            working_set_bytes: Some(working_set),
            rss_bytes: Some(memory.stat.anon),
            page_faults: Some(memory.stat.pgfault),
            major_page_faults: Some(memory.stat.pgmajfault),
            psi: sample.pressure.memory.as_ref().map(PsiStats::from_model),
        })
    }

    /// [`Self::from_sample_with_limit`] against the cgroup's own `memory.max`.
    #[must_use]
    pub fn from_sample(sample: &CgroupSample) -> Option<Self> {
        Self::from_sample_with_limit(sample, sample.memory.as_ref().and_then(|m| m.max))
    }
}

impl SwapStats {
    /// From a sample with the memory controller: usage is `memory.swap.current` (0 without swap
    /// accounting, as cAdvisor reports), available is `memory.swap.max` minus usage when
    /// limited.
    #[must_use]
    pub fn from_sample(sample: &CgroupSample) -> Option<Self> {
        let memory = sample.memory.as_ref()?;
        let usage = memory.swap_current.unwrap_or(0);
        Some(Self {
            time: Time(sample.time),
            swap_available_bytes: effective_limit(memory.swap_max)
                .map(|limit| limit.saturating_sub(usage)),
            swap_usage_bytes: Some(usage),
        })
    }
}

impl IoStats {
    /// The I/O pressure of a sample; `None` where `io.pressure` was not read.
    #[must_use]
    pub fn from_sample(sample: &CgroupSample) -> Option<Self> {
        let psi = sample.pressure.io.as_ref()?;
        Some(Self {
            time: Time(sample.time),
            psi: Some(PsiStats::from_model(psi)),
        })
    }
}

impl ProcessStats {
    #[must_use]
    pub fn new(process_count: u64) -> Self {
        Self {
            process_count: Some(process_count),
        }
    }
}

impl InterfaceStats {
    #[must_use]
    pub fn from_counters(counters: &InterfaceCounters) -> Self {
        Self {
            name: counters.name.clone(),
            rx_bytes: Some(counters.rx_bytes),
            rx_errors: Some(counters.rx_errors),
            tx_bytes: Some(counters.tx_bytes),
            tx_errors: Some(counters.tx_errors),
        }
    }
}

impl NetworkStats {
    /// Every interface, with [`DEFAULT_INTERFACE`]'s counters inlined when it is among them.
    #[must_use]
    pub fn from_interfaces(time: Option<SystemTime>, interfaces: &[InterfaceCounters]) -> Self {
        let mut stats = Self {
            time: Time(time),
            interfaces: interfaces
                .iter()
                .map(InterfaceStats::from_counters)
                .collect(),
            ..Self::default()
        };
        if let Some(default) = stats
            .interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .cloned()
        {
            stats.set_default_interface(default);
        }
        stats
    }
}

impl ContainerStats {
    /// A container's CPU, memory, swap and I/O from its cgroup's latest sample and the one
    /// before it.
    #[must_use]
    pub fn from_sample(
        name: String,
        start_time: Option<SystemTime>,
        sample: &CgroupSample,
        previous: Option<&CgroupSample>,
    ) -> Self {
        Self {
            name,
            start_time: Time(start_time),
            cpu: CpuStats::from_sample(sample, previous),
            memory: MemoryStats::from_sample(sample),
            io: IoStats::from_sample(sample),
            swap: SwapStats::from_sample(sample),
            ..Self::default()
        }
    }
}
