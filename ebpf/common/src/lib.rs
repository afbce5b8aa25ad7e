//! Map keys and values shared by kernlet's eBPF programs (`ebpf/programs`) and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into BPF maps and the
//! agent reads the same bytes back through aya. Keys are cgroup ids, which are the inode numbers of
//! cgroup v2 directories (`bpf_get_current_cgroup_id`, kernel >= 4.18).
#![no_std]

/// Name of the per-CPU hash map of [`CpuCounters`] keyed by cgroup id.
pub const CPU_MAP: &str = "CGROUP_CPU";

/// Entries kept in [`CPU_MAP`]; a node with more live cgroups than this loses the newest ones until
/// old ones are pruned by the agent.
pub const CPU_MAP_ENTRIES: u32 = 16_384;

/// CPU activity of one cgroup on one CPU, as seen by the `sched/sched_switch` tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Times a task of this cgroup was switched out.
    pub switches: u64,
    /// Nanoseconds tasks of this cgroup spent on CPU, measured between consecutive switches.
    pub on_cpu_ns: u64,
}

impl CpuCounters {
    /// Adds another CPU's counters to these (user space sums the per-CPU values).
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            switches: self.switches.wrapping_add(other.switches),
            on_cpu_ns: self.on_cpu_ns.wrapping_add(other.on_cpu_ns),
        }
    }
}

// SAFETY: `CpuCounters` is `repr(C)`, `Copy`, has no padding (two u64 fields) and every bit pattern
// is a valid value, which is what `aya::Pod` requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for CpuCounters {}
