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
use crate::config::{MetricKind, MetricKinds};
use crate::stats::model::{CgroupSample, EbpfCounters, MemoryStats, Psi};
use crate::stats::summary::StatsError;
use crate::stats::summary::convert::{InterfaceCounters, UNLIMITED_MEMORY};

/// The six labels kubelet puts on every cAdvisor sample; empty where unknown (the node's and
/// the quality-of-service cgroups have no pod, for instance).
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

mod families;

use self::families::{
    BLKIO_USAGE, CFS_PERIODS, CFS_THROTTLED_PERIODS, CFS_THROTTLED_SECONDS, CPU_STALLED,
    CPU_SYSTEM, CPU_USAGE, CPU_USER, CPU_WAITING, FILE_DESCRIPTORS, FS_INODES, FS_INODES_FREE,
    FS_LIMIT, FS_READ_BYTES, FS_READS, FS_USAGE, FS_WRITE_BYTES, FS_WRITES, IO_STALLED, IO_WAITING,
    LAST_SEEN, LOAD_AVERAGE, MEMORY_ACTIVE_FILE, MEMORY_CACHE, MEMORY_FAILCNT, MEMORY_FAILURES,
    MEMORY_FILE_DIRTY, MEMORY_FILE_WRITEBACK, MEMORY_INACTIVE_FILE, MEMORY_KERNEL, MEMORY_MAPPED,
    MEMORY_MAX_USAGE, MEMORY_PGSCAN, MEMORY_PGSTEAL, MEMORY_REFAULT_ANON, MEMORY_REFAULT_FILE,
    MEMORY_RSS, MEMORY_STALLED, MEMORY_SWAP, MEMORY_USAGE, MEMORY_WAITING, MEMORY_WORKING_SET,
    NET_RX_BYTES, NET_RX_DROPPED, NET_RX_ERRORS, NET_RX_PACKETS, NET_TX_BYTES, NET_TX_DROPPED,
    NET_TX_ERRORS, NET_TX_PACKETS, OOM_EVENTS, PROCESSES, SCRAPE_ERROR, SOCKETS, SPEC_CPU_PERIOD,
    SPEC_CPU_QUOTA, SPEC_CPU_SHARES, SPEC_MEMORY_LIMIT, SPEC_MEMORY_RESERVATION, SPEC_SWAP_LIMIT,
    START_TIME, TASKS_STATE, THREADS, THREADS_MAX,
};

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
    kinds: MetricKinds,
) -> Result<String, MetricsError> {
    let mut out = Families::default();
    let Ok(snapshot) = snapshot else {
        out.sample(&SCRAPE_ERROR, Vec::new(), 1.0, None);
        return out.encode();
    };
    out.sample(&SCRAPE_ERROR, Vec::new(), 0.0, None);
    for container in &snapshot.containers {
        render_container(&mut out, container, &snapshot.devices, now, kinds);
    }
    out.encode()
}

/// Samples of one container: its labels and sample time.
struct Writer<'a> {
    out: &'a mut Families,
    base: Labels,
    time: Option<SystemTime>,
}

impl Writer<'_> {
    /// A usage sample, stamped with the sample time.
    fn add(&mut self, desc: &Desc, extra: &[(&'static str, &str)], value: f64) {
        let labels = with(&self.base, extra);
        self.out.sample(desc, labels, value, self.time);
    }

    /// A spec sample, without a timestamp.
    fn spec(&mut self, desc: &Desc, value: f64) {
        self.out.sample(desc, self.base.clone(), value, None);
    }
}

fn render_container(
    out: &mut Families,
    container: &CadvisorContainer,
    devices: &BTreeMap<(u32, u32), String>,
    now: SystemTime,
    kinds: MetricKinds,
) {
    let base = container.labels.labels();
    out.sample(
        &LAST_SEEN,
        base.clone(),
        unix_seconds(now).floor(),
        Some(now),
    );
    let mut writer = Writer {
        out,
        base,
        time: container.sample.time,
    };
    render_spec(&mut writer, container);
    if kinds.contains(MetricKind::Cpu) {
        render_cpu(&mut writer, container);
    }
    if kinds.contains(MetricKind::CpuLoad) {
        render_cpu_load(&mut writer);
    }
    if let Some(memory) = &container.sample.memory {
        if kinds.contains(MetricKind::Memory) {
            render_memory(&mut writer, memory);
        }
        if kinds.contains(MetricKind::OomEvent) {
            writer.add(&OOM_EVENTS, &[], float(memory.events.oom_kill));
        }
    }
    if kinds.contains(MetricKind::Network) {
        render_network(&mut writer, container);
    }
    if kinds.contains(MetricKind::Disk) {
        render_disk(&mut writer, container);
    }
    if kinds.contains(MetricKind::DiskIo) {
        render_disk_io(&mut writer, container, devices);
    }
    if kinds.contains(MetricKind::Process) {
        render_processes(&mut writer, container);
    }
    if kinds.contains(MetricKind::Pressure) {
        render_pressure(&mut writer, &container.sample);
    }
    if let Some(ebpf) = &container.ebpf
        && kinds.contains(MetricKind::Kernlet)
    {
        super::ebpf::render(writer.out, &writer.base, ebpf, writer.time);
    }
}

fn render_spec(w: &mut Writer<'_>, container: &CadvisorContainer) {
    let (sample, spec) = (&container.sample, &container.spec);
    if let Some(created) = container.start_time {
        w.spec(&START_TIME, unix_seconds(created).floor());
    }
    if sample.cpu.is_some() {
        for (desc, value) in [
            (&SPEC_CPU_PERIOD, spec.cpu_period_us),
            (&SPEC_CPU_QUOTA, spec.cpu_quota_us.filter(|&q| q != 0)),
            (&SPEC_CPU_SHARES, spec.cpu_shares),
        ] {
            if let Some(value) = value {
                w.spec(desc, float(value));
            }
        }
    }
    if sample.memory.is_some() {
        for (desc, value) in [
            (&SPEC_MEMORY_LIMIT, spec.memory_limit),
            (&SPEC_SWAP_LIMIT, spec.memory_swap_limit),
            (&SPEC_MEMORY_RESERVATION, spec.memory_reservation),
        ] {
            w.spec(desc, spec_memory(value));
        }
    }
}

fn render_cpu(w: &mut Writer<'_>, container: &CadvisorContainer) {
    let Some(cpu) = &container.sample.cpu else {
        return;
    };
    w.add(&CPU_USER, &[], usec_to_seconds(cpu.user_usec));
    w.add(&CPU_SYSTEM, &[], usec_to_seconds(cpu.system_usec));
    if cpu.usage_usec > 0 {
        w.add(
            &CPU_USAGE,
            &[("cpu", "total")],
            usec_to_seconds(cpu.usage_usec),
        );
    }
    if container.spec.cpu_quota_us.is_some_and(|q| q != 0) {
        let throttling = cpu.throttling.unwrap_or_default();
        w.add(&CFS_PERIODS, &[], float(throttling.nr_periods));
        w.add(&CFS_THROTTLED_PERIODS, &[], float(throttling.nr_throttled));
        let throttled = usec_to_seconds(throttling.throttled_usec);
        w.add(&CFS_THROTTLED_SECONDS, &[], throttled);
    }
}

/// cAdvisor reads load from netlink taskstats, which the kubelet leaves off: zeros, as it serves.
fn render_cpu_load(w: &mut Writer<'_>) {
    w.add(&LOAD_AVERAGE, &[], 0.0);
    for state in [
        "iowaiting",
        "running",
        "sleeping",
        "stopped",
        "uninterruptible",
    ] {
        w.add(&TASKS_STATE, &[("state", state)], 0.0);
    }
}

fn render_memory(w: &mut Writer<'_>, memory: &MemoryStats) {
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
    ] {
        w.add(desc, &[], float(value));
    }
    // cgroup v2's memory.stat is hierarchical: cAdvisor fills both scopes from it.
    for scope in ["container", "hierarchy"] {
        for (kind, value) in [("pgfault", stat.pgfault), ("pgmajfault", stat.pgmajfault)] {
            let extra = [("failure_type", kind), ("scope", scope)];
            w.add(&MEMORY_FAILURES, &extra, float(value));
        }
    }
}

fn render_network(w: &mut Writer<'_>, container: &CadvisorContainer) {
    for interface in &container.interfaces {
        let extra = [("interface", interface.name.as_str())];
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
            w.add(desc, &extra, float(value));
        }
    }
}

fn render_disk(w: &mut Writer<'_>, container: &CadvisorContainer) {
    for fs in &container.filesystems {
        let extra = [("device", fs.device.as_str())];
        w.add(&FS_INODES_FREE, &extra, float(fs.inodes_free));
        w.add(&FS_INODES, &extra, float(fs.inodes));
        w.add(&FS_LIMIT, &extra, float(fs.limit_bytes));
        w.add(&FS_USAGE, &extra, float(fs.usage_bytes));
    }
}

fn render_disk_io(
    w: &mut Writer<'_>,
    container: &CadvisorContainer,
    devices: &BTreeMap<(u32, u32), String>,
) {
    for io in &container.sample.io {
        let device = devices
            .get(&(io.major, io.minor))
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", io.major, io.minor));
        let extra = [("device", device.as_str())];
        w.add(&FS_READ_BYTES, &extra, float(io.rbytes));
        w.add(&FS_READS, &extra, float(io.rios));
        w.add(&FS_WRITE_BYTES, &extra, float(io.wbytes));
        w.add(&FS_WRITES, &extra, float(io.wios));
        let (major, minor) = (io.major.to_string(), io.minor.to_string());
        for (operation, value) in [("Read", io.rbytes), ("Write", io.wbytes)] {
            let extra = [
                ("device", device.as_str()),
                ("major", major.as_str()),
                ("minor", minor.as_str()),
                ("operation", operation),
            ];
            w.add(&BLKIO_USAGE, &extra, float(value));
        }
    }
}

fn render_processes(w: &mut Writer<'_>, container: &CadvisorContainer) {
    if let Some(processes) = &container.processes {
        w.add(&PROCESSES, &[], float(processes.processes));
        w.add(&FILE_DESCRIPTORS, &[], float(processes.file_descriptors));
        w.add(&SOCKETS, &[], float(processes.sockets));
    }
    if let Some(pids) = &container.sample.pids {
        w.add(&THREADS, &[], float(pids.current));
        w.add(&THREADS_MAX, &[], pids.max.map_or(0.0, float));
    }
}

fn render_pressure(w: &mut Writer<'_>, sample: &CgroupSample) {
    for (psi, stalled, waiting) in [
        (&sample.pressure.cpu, &CPU_STALLED, &CPU_WAITING),
        (&sample.pressure.memory, &MEMORY_STALLED, &MEMORY_WAITING),
        (&sample.pressure.io, &IO_STALLED, &IO_WAITING),
    ] {
        if let Some(Psi { some, full }) = psi {
            let full_total = full.as_ref().map_or(0, |line| line.total_usec);
            w.add(stalled, &[], usec_to_seconds(full_total));
            w.add(waiting, &[], usec_to_seconds(some.total_usec));
        }
    }
}
