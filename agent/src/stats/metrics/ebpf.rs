//! kernlet's eBPF extras on `/metrics/cadvisor`: `kernlet_*` families from
//! [`EbpfCounters`], on the same six container labels as the cAdvisor families and stamped
//! with the same sample time. A family is written only where its program is loaded (its part
//! of the counters is `Some`).
//!
//! Latency histograms come from log2 nanosecond buckets (bucket `i` holds `[2^i, 2^(i+1))` ns,
//! the last everything above): bucket `i` becomes the cumulative Prometheus bucket
//! `le = 2^(i+1) ns` in seconds, and the last one is only counted in `+Inf`. Because the
//! kernel's buckets exclude their upper bound, a bucket counts observations `< le`; the
//! difference from Prometheus' `<=` is only the single value `2^(i+1)` ns.
use std::time::SystemTime;

use super::{Desc, Families, HistogramValue, Labels};
use crate::stats::model::{EbpfCounters, HISTOGRAM_BUCKETS, LatencyHistogram};

const RUNQ_LATENCY: Desc = Desc::histogram(
    "kernlet_cpu_runqueue_latency_seconds",
    "Time the container's runnable tasks waited for a CPU, from wakeup to running (eBPF sched tracepoints).",
);
const ON_CPU: Desc = Desc::counter(
    "kernlet_cpu_on_cpu_seconds_total",
    "Cumulative time the container's tasks ran on a CPU in seconds, timed between context switches, so including time a hypervisor stole (eBPF sched_switch).",
);
const SWITCHES: Desc = Desc::counter(
    "kernlet_cpu_context_switches_total",
    "Cumulative count of context switches away from the container's tasks (eBPF sched_switch).",
);
const BLOCK_LATENCY: Desc = Desc::histogram(
    "kernlet_block_io_latency_seconds",
    "Block I/O request latency from issue to completion, attributed to the bio's cgroup (eBPF block tracepoints).",
);
const BLOCK_READ_BYTES: Desc = Desc::counter(
    "kernlet_block_read_bytes_total",
    "Cumulative count of bytes read from block devices (eBPF block tracepoints).",
);
const BLOCK_WRITE_BYTES: Desc = Desc::counter(
    "kernlet_block_write_bytes_total",
    "Cumulative count of bytes written to block devices (eBPF block tracepoints).",
);
const BLOCK_READS: Desc = Desc::counter(
    "kernlet_block_reads_total",
    "Cumulative count of block read requests completed (eBPF block tracepoints).",
);
const BLOCK_WRITES: Desc = Desc::counter(
    "kernlet_block_writes_total",
    "Cumulative count of block write requests completed (eBPF block tracepoints).",
);
const OOM_KILLS: Desc = Desc::counter(
    "kernlet_oom_kills_total",
    "Cumulative count of processes of the container killed by the OOM killer (eBPF oom tracepoint).",
);
const PAGE_FAULTS: Desc = Desc::counter(
    "kernlet_memory_page_faults_total",
    "Cumulative count of page faults taken by the container's tasks (eBPF).",
);
const MAJOR_PAGE_FAULTS: Desc = Desc::counter(
    "kernlet_memory_major_page_faults_total",
    "Cumulative count of major page faults taken by the container's tasks (eBPF).",
);
const NET_RX_BYTES: Desc = Desc::counter(
    "kernlet_network_receive_bytes_total",
    "Cumulative count of bytes received by the container's sockets (eBPF cgroup_skb ingress).",
);
const NET_RX_PACKETS: Desc = Desc::counter(
    "kernlet_network_receive_packets_total",
    "Cumulative count of packets received by the container's sockets (eBPF cgroup_skb ingress).",
);
const NET_TX_BYTES: Desc = Desc::counter(
    "kernlet_network_transmit_bytes_total",
    "Cumulative count of bytes sent by the container's sockets (eBPF cgroup_skb egress).",
);
const NET_TX_PACKETS: Desc = Desc::counter(
    "kernlet_network_transmit_packets_total",
    "Cumulative count of packets sent by the container's sockets (eBPF cgroup_skb egress).",
);

fn float(value: u64) -> f64 {
    value as f64
}

/// A log2-nanosecond histogram as cumulative Prometheus buckets in seconds (see the module
/// doc).
#[must_use]
pub fn histogram(latency: &LatencyHistogram) -> HistogramValue {
    let mut cumulative = 0_u64;
    let buckets = latency.buckets[..HISTOGRAM_BUCKETS - 1]
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            cumulative = cumulative.saturating_add(count);
            let upper_ns = 2_f64.powi(i32::try_from(i).unwrap_or(i32::MAX).saturating_add(1));
            (upper_ns / 1e9, cumulative)
        })
        .collect();
    HistogramValue {
        buckets,
        sum: float(latency.sum_ns) / 1e9,
        count: latency.count(),
    }
}

/// Writes the extras of one cgroup.
pub fn render(
    out: &mut Families,
    base: &Labels,
    counters: &EbpfCounters,
    time: Option<SystemTime>,
) {
    if let Some(on_cpu) = counters.on_cpu_ns {
        out.sample(&ON_CPU, base.clone(), float(on_cpu) / 1e9, time);
    }
    render_counts(out, base, counters, time);
    if let Some(runq) = &counters.runq_latency {
        out.histogram(&RUNQ_LATENCY, base.clone(), &histogram(runq), time);
    }
    if let Some(block) = &counters.block {
        out.histogram(
            &BLOCK_LATENCY,
            base.clone(),
            &histogram(&block.latency),
            time,
        );
    }
}

fn render_counts(
    out: &mut Families,
    base: &Labels,
    counters: &EbpfCounters,
    time: Option<SystemTime>,
) {
    let mut counts: Vec<(&Desc, u64)> = Vec::new();
    counts.extend(counters.switches.map(|v| (&SWITCHES, v)));
    counts.extend(counters.oom_kills.map(|v| (&OOM_KILLS, v)));
    counts.extend(counters.page_faults.map(|v| (&PAGE_FAULTS, v)));
    counts.extend(counters.major_page_faults.map(|v| (&MAJOR_PAGE_FAULTS, v)));
    if let Some(net) = &counters.net {
        counts.extend([
            (&NET_RX_BYTES, net.rx_bytes),
            (&NET_RX_PACKETS, net.rx_packets),
            (&NET_TX_BYTES, net.tx_bytes),
            (&NET_TX_PACKETS, net.tx_packets),
        ]);
    }
    if let Some(block) = &counters.block {
        counts.extend([
            (&BLOCK_READ_BYTES, block.read_bytes),
            (&BLOCK_WRITE_BYTES, block.write_bytes),
            (&BLOCK_READS, block.reads),
            (&BLOCK_WRITES, block.writes),
        ]);
    }
    for (desc, value) in counts {
        out.sample(desc, base.clone(), float(value), time);
    }
}
