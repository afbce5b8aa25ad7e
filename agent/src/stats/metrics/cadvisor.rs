//! `GET /metrics/cadvisor`: the container metrics the kubelet's embedded cAdvisor serves, after
//! cAdvisor's `metrics/prometheus.go` (names, HELP texts, types, extra labels, units) with the
//! metric sets upstream's kubelet enables (`pkg/kubelet/server/server.go`: CPU usage, CPU load,
//! memory, disk usage, disk I/O, network, processes, OOM, pressure) and its label function
//! (`containerPrometheusLabelsFunc`: `container`, `id`, `image`, `name`, `namespace`, `pod` on
//! every sample). Golden reference: `pkg/kubelet/server/testdata/expected-cadvisor-metrics.txt`.
//!
//! As cAdvisor: usage samples carry the sample's time in milliseconds; spec samples
//! (`container_start_time_seconds`, `container_spec_*`) carry none; `container_last_seen` is the
//! scrape time; the CFS metrics appear only for a container with a CPU quota;
//! `container_cpu_usage_seconds_total` is one `cpu="total"` sample (cgroup v2 has no per-CPU
//! usage) and only once the usage is above zero; an unlimited memory limit reads 0; the load
//! and task-state gauges read 0 (cAdvisor's load reader is off in the kubelet); PSI totals are
//! microseconds turned into seconds. kernlet's eBPF extras follow on the same labels
//! ([`super::ebpf`]).
//!
//! Not written: `cadvisor_version_info`, `machine_*`, and the families kernlet has no source
//! for (`container_fs_*_seconds_total`, `container_fs_io_current`, sector and merge counts).
use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{Desc, Families, Labels, MetricsError, unix_seconds};
use crate::stats::model::{CgroupSample, EbpfCounters, Psi};
use crate::stats::summary::StatsError;
use crate::stats::summary::convert::{InterfaceCounters, UNLIMITED_MEMORY};

/// The six labels kubelet puts on every cAdvisor sample; empty where unknown (the node's and
/// the QoS cgroups have no pod, for instance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    /// The Kubernetes container name (`io.kubernetes.container.name`).
    pub container: String,
    /// The cgroup path relative to the cgroup root, starting with `/` (`/` for the node).
    pub id: String,
    /// The image reference the runtime reports.
    pub image: String,
    /// The runtime's container id.
    pub name: String,
    pub namespace: String,
    pub pod: String,
}

impl ContainerLabels {
    fn labels(&self) -> Labels {
        vec![
            ("container", self.container.clone()),
            ("id", self.id.clone()),
            ("image", self.image.clone()),
            ("name", self.name.clone()),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
        ]
    }
}

/// The limits configured on the cgroup (what cAdvisor calls the container spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// `cpu.max` period in microseconds.
    pub cpu_period_us: Option<u64>,
    /// `cpu.max` quota in microseconds; `None` for `max`.
    pub cpu_quota_us: Option<u64>,
    /// `cpu.weight` expressed as cgroup v1 shares (2..262144), as cAdvisor reports it.
    pub cpu_shares: Option<u64>,
    /// `memory.max` in bytes; `None` for `max`.
    pub memory_limit: Option<u64>,
    /// `memory.swap.max` in bytes; `None` for `max` or no swap accounting.
    pub memory_swap_limit: Option<u64>,
    /// `memory.low` in bytes; `None` when unset.
    pub memory_reservation: Option<u64>,
}

/// Counts over the processes of a cgroup (`cgroup.procs` and their `/proc/<pid>/fd`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    pub processes: u64,
    pub file_descriptors: u64,
    pub sockets: u64,
}

/// Usage of one filesystem by a container (its writable layer, or the node's filesystem).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// The block device, as `/dev/<name>`.
    pub device: String,
    /// Bytes the container may use on it (the filesystem's capacity when unbounded).
    pub limit_bytes: u64,
    /// Bytes the container uses on it.
    pub usage_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// Everything `/metrics/cadvisor` says about one cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CadvisorContainer {
    pub labels: ContainerLabels,
    /// When the cgroup (container) was created.
    pub start_time: Option<SystemTime>,
    /// The latest cgroupfs read; its `time` stamps the usage samples.
    pub sample: CgroupSample,
    pub spec: ContainerSpec,
    /// The interfaces of the container's network namespace (empty for host-network cgroups).
    pub interfaces: Vec<InterfaceCounters>,
    pub filesystems: Vec<FsUsage>,
    pub processes: Option<ProcessCounts>,
    /// The eBPF counters of the cgroup id, for the `kernlet_*` extras.
    pub ebpf: Option<EbpfCounters>,
}

/// One scrape's input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CadvisorSnapshot {
    pub containers: Vec<CadvisorContainer>,
    /// Block device names by `(major, minor)` for the `device` label of `io.stat` lines; an
    /// unknown device is labelled `major:minor`.
    pub devices: BTreeMap<(u32, u32), String>,
}

macro_rules! counter {
    ($name:literal, $help:literal) => {
        Desc::counter($name, $help)
    };
}
macro_rules! gauge {
    ($name:literal, $help:literal) => {
        Desc::gauge($name, $help)
    };
}

const SCRAPE_ERROR: Desc = gauge!(
    "container_scrape_error",
    "1 if there was an error while getting container metrics, 0 otherwise"
);
const LAST_SEEN: Desc = gauge!(
    "container_last_seen",
    "Last time a container was seen by the exporter"
);
const START_TIME: Desc = gauge!(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds."
);
const SPEC_CPU_PERIOD: Desc = gauge!("container_spec_cpu_period", "CPU period of the container.");
const SPEC_CPU_QUOTA: Desc = gauge!("container_spec_cpu_quota", "CPU quota of the container.");
const SPEC_CPU_SHARES: Desc = gauge!("container_spec_cpu_shares", "CPU share of the container.");
const SPEC_MEMORY_LIMIT: Desc = gauge!(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container."
);
const SPEC_SWAP_LIMIT: Desc = gauge!(
    "container_spec_memory_swap_limit_bytes",
    "Memory swap limit for the container."
);
const SPEC_MEMORY_RESERVATION: Desc = gauge!(
    "container_spec_memory_reservation_limit_bytes",
    "Memory reservation limit for the container."
);

const CPU_USER: Desc = counter!(
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds."
);
const CPU_SYSTEM: Desc = counter!(
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds."
);
const CPU_USAGE: Desc = counter!(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds."
);
const CFS_PERIODS: Desc = counter!(
    "container_cpu_cfs_periods_total",
    "Number of elapsed enforcement period intervals."
);
const CFS_THROTTLED_PERIODS: Desc = counter!(
    "container_cpu_cfs_throttled_periods_total",
    "Number of throttled period intervals."
);
const CFS_THROTTLED_SECONDS: Desc = counter!(
    "container_cpu_cfs_throttled_seconds_total",
    "Total time duration the container has been throttled."
);
const LOAD_AVERAGE: Desc = gauge!(
    "container_cpu_load_average_10s",
    "Value of container cpu load average over the last 10 seconds."
);
const TASKS_STATE: Desc = gauge!("container_tasks_state", "Number of tasks in given state");

const MEMORY_CACHE: Desc = gauge!(
    "container_memory_cache",
    "Number of bytes of page cache memory."
);
const MEMORY_RSS: Desc = gauge!("container_memory_rss", "Size of RSS in bytes.");
const MEMORY_KERNEL: Desc = gauge!(
    "container_memory_kernel_usage",
    "Size of kernel memory allocated in bytes."
);
const MEMORY_MAPPED: Desc = gauge!(
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes."
);
const MEMORY_SWAP: Desc = gauge!("container_memory_swap", "Container swap usage in bytes.");
const MEMORY_FAILCNT: Desc = counter!(
    "container_memory_failcnt",
    "Number of memory usage hits limits"
);
const MEMORY_USAGE: Desc = gauge!(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed"
);
const MEMORY_MAX_USAGE: Desc = gauge!(
    "container_memory_max_usage_bytes",
    "Maximum memory usage recorded in bytes"
);
const MEMORY_WORKING_SET: Desc = gauge!(
    "container_memory_working_set_bytes",
    "Current working set in bytes."
);
const MEMORY_ACTIVE_FILE: Desc = gauge!(
    "container_memory_total_active_file_bytes",
    "Current total active file in bytes."
);
const MEMORY_INACTIVE_FILE: Desc = gauge!(
    "container_memory_total_inactive_file_bytes",
    "Current total inactive file in bytes."
);
const MEMORY_FAILURES: Desc = counter!(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures."
);
// The next six are recent cAdvisor families (names as served by current kubelets); their HELP
// texts are kernlet's own wording.
const MEMORY_FILE_DIRTY: Desc = gauge!(
    "container_memory_file_dirty_bytes",
    "Size of file-backed memory waiting to be written back to disk in bytes."
);
const MEMORY_FILE_WRITEBACK: Desc = gauge!(
    "container_memory_file_writeback_bytes",
    "Size of file-backed memory being written back to disk in bytes."
);
const MEMORY_PGSCAN: Desc = counter!(
    "container_memory_pgscan_total",
    "Cumulative count of pages scanned by memory reclaim."
);
const MEMORY_PGSTEAL: Desc = counter!(
    "container_memory_pgsteal_total",
    "Cumulative count of pages reclaimed."
);
const MEMORY_REFAULT_FILE: Desc = counter!(
    "container_memory_workingset_refault_file_total",
    "Cumulative count of refaults of previously evicted file pages."
);
const MEMORY_REFAULT_ANON: Desc = counter!(
    "container_memory_workingset_refault_anon_total",
    "Cumulative count of refaults of previously evicted anonymous pages."
);
const OOM_EVENTS: Desc = counter!(
    "container_oom_events_total",
    "Count of out of memory events observed for the container"
);

const NET_RX_BYTES: Desc = counter!(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received"
);
const NET_RX_PACKETS: Desc = counter!(
    "container_network_receive_packets_total",
    "Cumulative count of packets received"
);
const NET_RX_DROPPED: Desc = counter!(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving"
);
const NET_RX_ERRORS: Desc = counter!(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving"
);
const NET_TX_BYTES: Desc = counter!(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted"
);
const NET_TX_PACKETS: Desc = counter!(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted"
);
const NET_TX_DROPPED: Desc = counter!(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting"
);
const NET_TX_ERRORS: Desc = counter!(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting"
);

const FS_INODES_FREE: Desc = gauge!("container_fs_inodes_free", "Number of available Inodes");
const FS_INODES: Desc = gauge!("container_fs_inodes_total", "Number of Inodes");
const FS_LIMIT: Desc = gauge!(
    "container_fs_limit_bytes",
    "Number of bytes that can be consumed by the container on this filesystem."
);
const FS_USAGE: Desc = gauge!(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem."
);
const FS_READ_BYTES: Desc = counter!(
    "container_fs_reads_bytes_total",
    "Cumulative count of bytes read"
);
const FS_READS: Desc = counter!(
    "container_fs_reads_total",
    "Cumulative count of reads completed"
);
const FS_WRITE_BYTES: Desc = counter!(
    "container_fs_writes_bytes_total",
    "Cumulative count of bytes written"
);
const FS_WRITES: Desc = counter!(
    "container_fs_writes_total",
    "Cumulative count of writes completed"
);
const BLKIO_USAGE: Desc = counter!(
    "container_blkio_device_usage_total",
    "Blkio Device bytes usage"
);

const PROCESSES: Desc = gauge!(
    "container_processes",
    "Number of processes running inside the container."
);
const FILE_DESCRIPTORS: Desc = gauge!(
    "container_file_descriptors",
    "Number of open file descriptors for the container."
);
const SOCKETS: Desc = gauge!(
    "container_sockets",
    "Number of open sockets for the container."
);
const THREADS: Desc = gauge!(
    "container_threads",
    "Number of threads running inside the container"
);
const THREADS_MAX: Desc = gauge!(
    "container_threads_max",
    "Maximum number of threads allowed inside the container, infinity if value is zero"
);

const CPU_STALLED: Desc = counter!(
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion."
);
const CPU_WAITING: Desc = counter!(
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion."
);
const MEMORY_STALLED: Desc = counter!(
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion."
);
const MEMORY_WAITING: Desc = counter!(
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion."
);
const IO_STALLED: Desc = counter!(
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to IO congestion."
);
const IO_WAITING: Desc = counter!(
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to IO congestion."
);

fn float(value: u64) -> f64 {
    value as f64
}

fn usec_to_seconds(usec: u64) -> f64 {
    float(usec) / 1e6
}

/// cAdvisor's `specMemoryValue`: unlimited reads 0.
fn spec_memory(limit: Option<u64>) -> f64 {
    limit.filter(|&v| v <= UNLIMITED_MEMORY).map_or(0.0, float)
}

fn with(base: &Labels, extra: &[(&'static str, &str)]) -> Labels {
    let mut labels = base.clone();
    labels.extend(extra.iter().map(|&(name, value)| (name, value.to_owned())));
    labels
}

/// The `/metrics/cadvisor` body for one scrape at `now`, or for the error that kept the
/// snapshot from being had (then only `container_scrape_error 1`).
pub fn render(
    snapshot: Result<&CadvisorSnapshot, &StatsError>,
    now: SystemTime,
) -> Result<String, MetricsError> {
    let mut out = Families::default();
    let Ok(snapshot) = snapshot else {
        out.sample(&SCRAPE_ERROR, Vec::new(), 1.0, None);
        return out.encode();
    };
    out.sample(&SCRAPE_ERROR, Vec::new(), 0.0, None);
    for container in &snapshot.containers {
        render_container(&mut out, container, &snapshot.devices, now);
    }
    out.encode()
}

fn render_container(
    out: &mut Families,
    container: &CadvisorContainer,
    devices: &BTreeMap<(u32, u32), String>,
    now: SystemTime,
) {
    let base = container.labels.labels();
    let sample = &container.sample;
    let spec = &container.spec;

    // Spec samples carry no timestamp.
    if let Some(created) = container.start_time {
        out.sample(
            &START_TIME,
            base.clone(),
            unix_seconds(created).floor(),
            None,
        );
    }
    if sample.cpu.is_some() {
        for (desc, value) in [
            (&SPEC_CPU_PERIOD, spec.cpu_period_us),
            (&SPEC_CPU_QUOTA, spec.cpu_quota_us.filter(|&q| q != 0)),
            (&SPEC_CPU_SHARES, spec.cpu_shares),
        ] {
            if let Some(value) = value {
                out.sample(desc, base.clone(), float(value), None);
            }
        }
    }
    if sample.memory.is_some() {
        for (desc, value) in [
            (&SPEC_MEMORY_LIMIT, spec.memory_limit),
            (&SPEC_SWAP_LIMIT, spec.memory_swap_limit),
            (&SPEC_MEMORY_RESERVATION, spec.memory_reservation),
        ] {
            out.sample(desc, base.clone(), spec_memory(value), None);
        }
    }
    out.sample(
        &LAST_SEEN,
        base.clone(),
        unix_seconds(now).floor(),
        Some(now),
    );

    let time = sample.time;
    let mut add = |desc: &Desc, labels: Labels, value: f64| out.sample(desc, labels, value, time);
    if let Some(cpu) = &sample.cpu {
        add(&CPU_USER, base.clone(), usec_to_seconds(cpu.user_usec));
        add(&CPU_SYSTEM, base.clone(), usec_to_seconds(cpu.system_usec));
        if cpu.usage_usec > 0 {
            add(
                &CPU_USAGE,
                with(&base, &[("cpu", "total")]),
                usec_to_seconds(cpu.usage_usec),
            );
        }
        if spec.cpu_quota_us.is_some_and(|q| q != 0) {
            let throttling = cpu.throttling.unwrap_or_default();
            add(&CFS_PERIODS, base.clone(), float(throttling.nr_periods));
            add(
                &CFS_THROTTLED_PERIODS,
                base.clone(),
                float(throttling.nr_throttled),
            );
            let throttled = usec_to_seconds(throttling.throttled_usec);
            add(&CFS_THROTTLED_SECONDS, base.clone(), throttled);
        }
        add(&LOAD_AVERAGE, base.clone(), 0.0);
        for state in [
            "iowaiting",
            "running",
            "sleeping",
            "stopped",
            "uninterruptible",
        ] {
            add(&TASKS_STATE, with(&base, &[("state", state)]), 0.0);
        }
    }

    if let Some(memory) = &sample.memory {
        let stat = &memory.stat;
        for (desc, value) in [
            (&MEMORY_CACHE, stat.file),
            (&MEMORY_RSS, stat.anon),
            (&MEMORY_KERNEL, stat.kernel),
            (&MEMORY_MAPPED, stat.file_mapped),
            (&MEMORY_SWAP, memory.swap_current.unwrap_or(0)),
            (&MEMORY_FAILCNT, memory.events.max),
            (&MEMORY_USAGE, memory.current),
            (&MEMORY_MAX_USAGE, memory.peak.unwrap_or(0)),
            (&MEMORY_WORKING_SET, memory.working_set()),
            (&MEMORY_ACTIVE_FILE, stat.active_file),
            (&MEMORY_INACTIVE_FILE, stat.inactive_file),
            (&MEMORY_FILE_DIRTY, stat.file_dirty),
            (&MEMORY_FILE_WRITEBACK, stat.file_writeback),
            (&MEMORY_PGSCAN, stat.pgscan),
            (&MEMORY_PGSTEAL, stat.pgsteal),
            (&MEMORY_REFAULT_FILE, stat.workingset_refault_file),
            (&MEMORY_REFAULT_ANON, stat.workingset_refault_anon),
            (&OOM_EVENTS, memory.events.oom_kill),
        ] {
            add(desc, base.clone(), float(value));
        }
        // cgroup v2's memory.stat is hierarchical: cAdvisor fills both scopes from it.
        for scope in ["container", "hierarchy"] {
            for (kind, value) in [("pgfault", stat.pgfault), ("pgmajfault", stat.pgmajfault)] {
                let labels = with(&base, &[("failure_type", kind), ("scope", scope)]);
                add(&MEMORY_FAILURES, labels, float(value));
            }
        }
    }

    for interface in &container.interfaces {
        let labels = with(&base, &[("interface", &interface.name)]);
        for (desc, value) in [
            (&NET_RX_BYTES, interface.rx_bytes),
            (&NET_RX_PACKETS, interface.rx_packets),
            (&NET_RX_DROPPED, interface.rx_dropped),
            (&NET_RX_ERRORS, interface.rx_errors),
            (&NET_TX_BYTES, interface.tx_bytes),
            (&NET_TX_PACKETS, interface.tx_packets),
            (&NET_TX_DROPPED, interface.tx_dropped),
            (&NET_TX_ERRORS, interface.tx_errors),
        ] {
            add(desc, labels.clone(), float(value));
        }
    }

    for fs in &container.filesystems {
        let labels = with(&base, &[("device", &fs.device)]);
        add(&FS_INODES_FREE, labels.clone(), float(fs.inodes_free));
        add(&FS_INODES, labels.clone(), float(fs.inodes));
        add(&FS_LIMIT, labels.clone(), float(fs.limit_bytes));
        add(&FS_USAGE, labels, float(fs.usage_bytes));
    }

    for io in &sample.io {
        let device = devices
            .get(&(io.major, io.minor))
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", io.major, io.minor));
        let labels = with(&base, &[("device", &device)]);
        add(&FS_READ_BYTES, labels.clone(), float(io.rbytes));
        add(&FS_READS, labels.clone(), float(io.rios));
        add(&FS_WRITE_BYTES, labels.clone(), float(io.wbytes));
        add(&FS_WRITES, labels, float(io.wios));
        let (major, minor) = (io.major.to_string(), io.minor.to_string());
        for (operation, value) in [("Read", io.rbytes), ("Write", io.wbytes)] {
            let labels = with(
                &base,
                &[
                    ("device", &device),
                    ("major", &major),
                    ("minor", &minor),
                    ("operation", operation),
                ],
            );
            add(&BLKIO_USAGE, labels, float(value));
        }
    }

    if let Some(processes) = &container.processes {
        add(&PROCESSES, base.clone(), float(processes.processes));
        add(
            &FILE_DESCRIPTORS,
            base.clone(),
            float(processes.file_descriptors),
        );
        add(&SOCKETS, base.clone(), float(processes.sockets));
    }
    if let Some(pids) = &sample.pids {
        add(&THREADS, base.clone(), float(pids.current));
        add(&THREADS_MAX, base.clone(), pids.max.map_or(0.0, float));
    }

    for (psi, stalled, waiting) in [
        (&sample.pressure.cpu, &CPU_STALLED, &CPU_WAITING),
        (&sample.pressure.memory, &MEMORY_STALLED, &MEMORY_WAITING),
        (&sample.pressure.io, &IO_STALLED, &IO_WAITING),
    ] {
        if let Some(Psi { some, full }) = psi {
            let full_total = full.as_ref().map_or(0, |line| line.total_usec);
            add(stalled, base.clone(), usec_to_seconds(full_total));
            add(waiting, base.clone(), usec_to_seconds(some.total_usec));
        }
    }

    if let Some(ebpf) = &container.ebpf {
        super::ebpf::render(out, &base, ebpf, time);
    }
}
