//! What one collection round knows about one cgroup, in the kernel's own units: the cgroupfs
//! files as read (`Documentation/admin-guide/cgroup-v2.rst`) and the eBPF counters kept per cgroup
//! id (defined in [`crate::ebpf::counters`]). Schema code (`/stats/summary`, the metrics
//! endpoints) converts from these; readers and probes only fill them.
use std::time::SystemTime;

/// `cpu.stat`; the throttling fields exist only where the cpu controller is enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub throttling: Option<Throttling>,
}

/// The CFS bandwidth part of `cpu.stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttling {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

/// `memory.stat` keys kernlet reports (bytes unless the name says otherwise); keys missing on a
/// kernel read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub anon: u64,
    pub file: u64,
    pub kernel: u64,
    pub kernel_stack: u64,
    pub slab: u64,
    pub sock: u64,
    pub shmem: u64,
    pub file_mapped: u64,
    pub file_dirty: u64,
    pub file_writeback: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    /// Events, not bytes.
    pub pgfault: u64,
    pub pgmajfault: u64,
    pub pgscan: u64,
    pub pgsteal: u64,
    pub workingset_refault_anon: u64,
    pub workingset_refault_file: u64,
}

/// `memory.events` (hierarchical counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
}

/// The memory controller's files of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// `memory.current`.
    pub current: u64,
    /// `memory.peak` (kernel >= 5.19).
    pub peak: Option<u64>,
    /// `memory.max`; `None` for `max`.
    pub max: Option<u64>,
    /// `memory.swap.current`, when swap accounting exists.
    pub swap_current: Option<u64>,
    /// `memory.swap.max`; `None` for `max` or when absent.
    pub swap_max: Option<u64>,
    pub stat: MemoryStat,
    pub events: MemoryEvents,
}

impl MemoryStats {
    /// The kubelet's working set: usage minus inactive file pages, never negative (cAdvisor's
    /// `setMemoryStats` for cgroup v2).
    #[must_use]
    pub fn working_set(&self) -> u64 {
        self.current.saturating_sub(self.stat.inactive_file)
    }
}

/// One device line of `io.stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoDeviceStat {
    pub major: u32,
    pub minor: u32,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
    pub dbytes: u64,
    pub dios: u64,
}

/// `pids.current` and `pids.max` (`None` for `max`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    pub max: Option<u64>,
}

/// One line of a PSI file: averages in percent, total stall time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_usec: u64,
}

/// A `*.pressure` file: `some`, and `full` where the kernel writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// `cpu.pressure`, `memory.pressure`, `io.pressure`; `None` where PSI is off or the file absent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

/// Everything cgroupfs says about one cgroup at one instant. A controller that is not enabled
/// for the cgroup leaves its part `None` (or empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupSample {
    pub time: Option<SystemTime>,
    pub cpu: Option<CpuStat>,
    pub memory: Option<MemoryStats>,
    pub io: Vec<IoDeviceStat>,
    pub pids: Option<PidsStats>,
    pub pressure: Pressure,
}

/// The eBPF part of a sample is defined by its producer, [`crate::ebpf`]; re-exported so the
/// schema code reads one model.
pub use crate::ebpf::counters::{
    BlockCounters, EbpfCounters, HISTOGRAM_BUCKETS, LatencyHistogram, NetCounters, OomVictim,
};
