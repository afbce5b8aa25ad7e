//! Map names, keys and values shared by kernlet's eBPF programs (`ebpf/programs` in Rust,
//! `ebpf/c` in C) and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into BPF maps and the
//! agent reads the same bytes back through aya. Keys are cgroup ids, which are the inode numbers of
//! cgroup v2 directories (`bpf_get_current_cgroup_id`, kernel >= 4.18). The C programs declare the
//! same layouts in `ebpf/c/kernlet.h`; the size constants below are checked against both.
#![no_std]

/// Entries of every map keyed by cgroup id, Rust and C alike (`agent/build.rs` passes it to clang
/// as `KERNLET_CGROUP_ENTRIES`); a node with more live cgroups than this loses the newest ones
/// until old ones are pruned by the agent. The maps are preallocated (see `ebpf/c/kernlet.h`), so
/// this is memory held from load on.
pub const CGROUP_ENTRIES: u32 = 4_096;

/// Kept for the CPU map's declaration.
pub const CPU_MAP_ENTRIES: u32 = CGROUP_ENTRIES;

/// Per-CPU hash map of [`CpuCounters`] (Rust, `sched_switch`).
pub const CPU_MAP: &str = "CGROUP_CPU";
/// Per-CPU hash map of [`NetCounters`] (Rust, `cgroup_skb` ingress and egress).
pub const NET_MAP: &str = "CGROUP_NET";
/// Per-CPU hash map of `u64` user page faults (Rust, `exceptions:page_fault_user`).
pub const FAULT_MAP: &str = "CGROUP_FAULTS";
/// Hash map of [`Histogram`] run-queue latency (C, `runqlat.bpf.c`).
pub const RUNQ_MAP: &str = "CGROUP_RUNQ";
/// Hash map of [`BlockCounters`] (C, `block.bpf.c`).
pub const BLOCK_MAP: &str = "CGROUP_BLOCK";
/// Hash map of [`OomCounters`] keyed by the id of the memory cgroup whose limit was hit (C,
/// `oom.bpf.c`).
pub const OOM_MAP: &str = "CGROUP_OOM";

/// Number of log2 buckets of a [`Histogram`]: bucket `i` counts values in `[2^i, 2^(i+1))`
/// nanoseconds, bucket 0 also holds 0 and the last bucket everything above.
pub const HISTOGRAM_BUCKETS: usize = 32;

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

/// Traffic of the sockets of one cgroup on one CPU. Bytes are `skb->len` at the cgroup hook: the
/// IP packet, without the link-layer header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl NetCounters {
    /// Adds another CPU's counters to these.
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            rx_bytes: self.rx_bytes.wrapping_add(other.rx_bytes),
            rx_packets: self.rx_packets.wrapping_add(other.rx_packets),
            tx_bytes: self.tx_bytes.wrapping_add(other.tx_bytes),
            tx_packets: self.tx_packets.wrapping_add(other.tx_packets),
        }
    }
}

/// A log2 latency histogram (`struct hist` in `kernlet.h`), updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    /// Sum of all observed values, in nanoseconds.
    pub sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; HISTOGRAM_BUCKETS],
            sum_ns: 0,
        }
    }
}

/// Block I/O issued by one cgroup (`struct block_counters` in `kernlet.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCounters {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// Issue-to-completion latency of the requests.
    pub latency: Histogram,
}

/// OOM kills charged to one memory cgroup and the last victim (`struct oom_counters` in
/// `kernlet.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomCounters {
    pub kills: u64,
    /// Thread-group id (the process id) of the last victim.
    pub pid: u32,
    /// Padding the C struct has implicitly; always 0.
    pub pad: u32,
    /// The last victim's `comm`, NUL-padded.
    pub comm: [u8; 16],
}

/// Sizes `kernlet.h` declares for the C structs, checked at compile time here and with
/// `_Static_assert` there.
pub const HISTOGRAM_SIZE: usize = 264;
pub const BLOCK_COUNTERS_SIZE: usize = 296;
pub const OOM_COUNTERS_SIZE: usize = 32;

const _: () = assert!(size_of::<Histogram>() == HISTOGRAM_SIZE);
const _: () = assert!(size_of::<BlockCounters>() == BLOCK_COUNTERS_SIZE);
const _: () = assert!(size_of::<OomCounters>() == OOM_COUNTERS_SIZE);

// SAFETY (all impls below): each type is `repr(C)`, `Copy`, made of `u64`/`u32`/`u8` fields laid
// out without implicit padding (explicit `pad` where needed), and every bit pattern is a valid
// value, which is what `aya::Pod` requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    unsafe impl aya::Pod for super::CpuCounters {}
    unsafe impl aya::Pod for super::NetCounters {}
    unsafe impl aya::Pod for super::Histogram {}
    unsafe impl aya::Pod for super::BlockCounters {}
    unsafe impl aya::Pod for super::OomCounters {}
}
