//! What kernlet's eBPF programs counted for one cgroup id, summed over CPUs and in the agent's
//! own types (the map layouts are `kernlet_ebpf_common`'s). Defined here, by the producer, so the
//! stats layer above reads them without the probes depending on stats.

/// Number of log2 buckets of an eBPF latency histogram: bucket `i` counts values in
/// `[2^i, 2^(i+1))` nanoseconds (bucket 0 also holds 0), the last bucket everything above.
pub const HISTOGRAM_BUCKETS: usize = 32;

/// A latency histogram in log2 nanosecond buckets, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    /// Sum of all observed values, in nanoseconds.
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; HISTOGRAM_BUCKETS],
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    /// The number of observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Network traffic of the sockets in one cgroup (`cgroup_skb` ingress and egress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// Block I/O issued by one cgroup, attributed through the bio's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounters {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// Issue-to-completion latency of the requests.
    pub latency: LatencyHistogram,
}

/// The last OOM kill seen in a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomVictim {
    pub pid: u32,
    pub comm: String,
}

/// What kernlet's eBPF programs counted for one cgroup id; a part is `None` when its program is
/// not loaded on this kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EbpfCounters {
    /// On-CPU nanoseconds and context switches (`sched_switch`).
    pub on_cpu_ns: Option<u64>,
    pub switches: Option<u64>,
    /// Time runnable tasks of this cgroup waited for a CPU (wakeup to switch-in).
    pub runq_latency: Option<LatencyHistogram>,
    pub net: Option<NetCounters>,
    pub block: Option<BlockCounters>,
    pub oom_kills: Option<u64>,
    pub last_oom_victim: Option<OomVictim>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
}
