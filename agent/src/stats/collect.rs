//! The collection round: every `--housekeeping-interval` (1 s by default) it reads the cgroup
//! of every running container and pod and the root cgroup through kept-open descriptors
//! ([`CgroupFiles`]), joins the eBPF counters by cgroup id, reads the node totals from `/proc`,
//! and publishes one [`Snapshot`] to the [`StatsStore`]. Filesystem usage (CRI
//! `ListContainerStats` and `ImageFsInfo`, log and `emptyDir` directories) changes slowly and
//! costs much to measure, so it is refreshed beside the rounds (`stats::fsusage`). The cgroup
//! files on a slower clock than the round are read again only when due: limits every
//! [`LIMITS_PERIOD`], PSI every [`PRESSURE_PERIOD`] (see [`Due`]).
//!
//! The mapping cgroup -> (pod, container) comes from the pods' statuses (container ids) and the
//! cgroup manager's pod cgroups; without `cgroupsPerQOS` the container's cgroup is found once by
//! its id in the hierarchy and remembered.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    cgroupfs::{
        CgroupFile, CgroupFiles, CgroupRead, Due, NodeSample, read_node, reader::FileTexts,
    },
    fsusage::{FsPaths, FsRefresh},
    host,
    index::{IndexedPod, PodIndex},
    metrics::Metrics,
    model::{CgroupSample, EbpfCounters},
    store::{CgroupEntry, ContainerEntry, NodeEntry, PodEntry, Snapshot, StatsStore},
    summary::{CpuStats, MemoryStats, Time, convert::InterfaceCounters},
};
use crate::{cgroup::CgroupManager, cri::Runtime, ebpf::Probes, status::store::PodsProvider};

/// How often dead cgroup ids are pruned from the eBPF maps.
const PRUNE_EVERY: u64 = 30;
/// How often the limits files are read again (they change only when written; cAdvisor reads
/// a container's spec far less often).
pub const LIMITS_PERIOD: Duration = Duration::from_secs(10);
/// How often the PSI files are read again: the kernel recomputes their averages every 2 s.
pub const PRESSURE_PERIOD: Duration = Duration::from_secs(2);

/// Where and how often to collect.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub interval: Duration,
    /// The cgroup v2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
    pub mount: PathBuf,
    pub proc_root: PathBuf,
    pub node_name: String,
    /// The kubelet root dir (pod volumes live below it).
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
}

/// Sources of one round.
pub struct Collector {
    config: CollectorConfig,
    pods: Arc<dyn PodsProvider>,
    runtime: Runtime,
    cgroups: Option<Arc<CgroupManager>>,
    probes: Option<Probes>,
    metrics: Arc<Metrics>,
    store: Arc<StatsStore>,
    files: HashMap<String, (u64, CgroupFiles)>,
    previous: HashMap<String, CgroupSample>,
    /// Container id -> cgroup, without `cgroupsPerQOS`.
    found: HashMap<String, String>,
    pod_index: PodIndex,
    texts: FileTexts,
    previous_node: Option<NodeSample>,
    fs: FsRefresh,
    fs_paths: FsPaths,
    rounds: u64,
    /// When the slow files (limits, pressure) were last read; see [`Due`].
    limits_at: Option<Instant>,
    pressure_at: Option<Instant>,
    due: Due,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Collector {
    #[must_use]
    pub fn new(
        config: CollectorConfig,
        pods: Arc<dyn PodsProvider>,
        runtime: Runtime,
        cgroups: Option<Arc<CgroupManager>>,
        probes: Option<Probes>,
        metrics: Arc<Metrics>,
        store: Arc<StatsStore>,
    ) -> Self {
        let fs_paths = FsPaths {
            pod_logs_dir: config.pod_logs_dir.clone(),
            root_dir: config.root_dir.clone(),
            proc_root: config.proc_root.clone(),
        };
        Self {
            config,
            pods,
            runtime,
            cgroups,
            probes,
            metrics,
            store,
            files: HashMap::new(),
            previous: HashMap::new(),
            found: HashMap::new(),
            pod_index: PodIndex::default(),
            texts: FileTexts::default(),
            previous_node: None,
            fs: FsRefresh::default(),
            fs_paths,
            rounds: 0,
            limits_at: None,
            pressure_at: None,
            due: Due::ALL,
        }
    }

    /// Collects every interval until `cancel`.
    pub async fn run(&mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            self.round().await;
            self.metrics.observe_collection(started.elapsed());
        }
        self.fs.stop();
    }

    /// One round; what cannot be read is left out of the snapshot and logged at debug level.
    pub async fn round(&mut self) {
        let cgroups = self.cgroups.clone();
        let pod_cgroup = |pod: &Pod| cgroups.as_ref().map(|c| c.pod_cgroup(pod));
        self.pod_index.refresh(self.pods.as_ref(), &pod_cgroup);
        // The volume walk wants the pod specs, asked for only when a refresh starts.
        let pods = &self.pods;
        self.fs
            .tick(&self.runtime, &self.fs_paths, || pods.pods())
            .await;
        let ebpf = self
            .probes
            .as_ref()
            .and_then(|p| p.counters().ok())
            .unwrap_or_default();
        self.due = Due {
            limits: due(&mut self.limits_at, LIMITS_PERIOD, self.config.interval),
            pressure: due(&mut self.pressure_at, PRESSURE_PERIOD, self.config.interval),
        };
        let snapshot = tokio::task::block_in_place(|| self.read(&ebpf));
        self.rounds += 1;
        if self.rounds.is_multiple_of(PRUNE_EVERY) {
            self.prune();
        }
        self.store.publish(snapshot);
    }

    /// Drops eBPF entries of cgroups no longer collected, and exports the probes' costs.
    fn prune(&mut self) {
        let Some(probes) = self.probes.as_mut() else {
            return;
        };
        let live: HashSet<u64> = self.files.values().map(|(id, _)| *id).collect();
        if let Err(error) = probes.retain(|id| live.contains(&id)) {
            tracing::debug!(%error, "pruning ebpf maps failed");
        }
        if let Ok(costs) = probes.program_stats() {
            for cost in costs {
                self.metrics
                    .set_program_cost(cost.name, cost.run_time_ns, cost.run_count);
            }
        }
    }

    fn read(&mut self, ebpf: &HashMap<u64, EbpfCounters>) -> Snapshot {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        let index = std::mem::take(&mut self.pod_index);
        for pod in index.pods() {
            if let Some(entry) = self.read_pod(pod, ebpf, &mut seen) {
                entries.push(entry);
            }
        }
        self.pod_index = index;
        let root = self.read_cgroup("/", ebpf, &mut seen);
        // Close the descriptors of cgroups that are gone or no longer wanted.
        self.files.retain(|path, _| seen.contains(path));
        self.previous.retain(|path, _| seen.contains(path));
        Snapshot {
            node: self.node(root),
            pods: entries,
            devices: self.fs.cache().devices.clone(),
        }
    }

    fn read_cgroup(
        &mut self,
        path: &str,
        ebpf: &HashMap<u64, EbpfCounters>,
        seen: &mut HashSet<String>,
    ) -> Option<CgroupEntry> {
        let dir = self.config.mount.join(path.trim_start_matches('/'));
        if !self.files.contains_key(path) {
            let files = CgroupFiles::open(&dir, &CgroupFile::ALL).ok()??;
            let id = std::fs::metadata(&dir).ok()?.ino();
            self.files.insert(path.to_owned(), (id, files));
        }
        let (id, files) = self.files.get_mut(path)?;
        let id = *id;
        let sample = match files.read_due(&mut self.texts, self.due) {
            Ok(CgroupRead::Sample(sample)) => sample,
            Ok(CgroupRead::Gone) => return None,
            Err(error) => {
                tracing::debug!(%error, "reading a cgroup failed");
                return None;
            }
        };
        seen.insert(path.to_owned());
        let previous = self.previous.insert(path.to_owned(), sample.clone());
        Some(CgroupEntry {
            path: path.to_owned(),
            id,
            sample,
            previous,
            ebpf: ebpf.get(&id).cloned(),
        })
    }

    /// The cgroup of container `id` of `pod`.
    fn container_cgroup(&mut self, pod: &IndexedPod, id: &str) -> Option<String> {
        if let Some(pod_cgroup) = &pod.cgroup {
            return Some(format!("{pod_cgroup}/{id}"));
        }
        if !self.found.contains_key(id) {
            self.found = host::index_containers(&self.config.mount);
        }
        self.found.get(id).cloned()
    }

    fn read_pod(
        &mut self,
        pod: &IndexedPod,
        ebpf: &HashMap<u64, EbpfCounters>,
        seen: &mut HashSet<String>,
    ) -> Option<PodEntry> {
        let mut containers = Vec::new();
        for container in &pod.containers {
            let Some(path) = self.container_cgroup(pod, &container.id) else {
                continue;
            };
            let Some(cgroup) = self.read_cgroup(&path, ebpf, seen) else {
                continue;
            };
            containers.push(ContainerEntry {
                name: container.name.clone(),
                image: container.image.clone(),
                start_time: container.start_time,
                cgroup,
                spec: container.spec,
                rootfs: self.fs.cache().rootfs.get(&container.id).copied(),
                logs: self.fs.cache().logs.get(&container.id).copied(),
                id: container.id.clone(),
            });
        }
        let cgroup = pod
            .cgroup
            .as_deref()
            .and_then(|path| self.read_cgroup(path, ebpf, seen));
        // A pod between restarts (crash-loop back-off) keeps its pod cgroup and sandbox, and
        // upstream keeps reporting it: its hierarchical counters (`memory.events` oom_kill) are
        // what tells why its container keeps dying.
        if containers.is_empty() && cgroup.is_none() {
            return None;
        }
        // Socket counters live on the cgroups that own the sockets: the containers'.
        let network = containers
            .iter()
            .filter_map(|c| c.cgroup.ebpf.as_ref()?.net)
            .reduce(|a, b| super::model::NetCounters {
                rx_bytes: a.rx_bytes + b.rx_bytes,
                rx_packets: a.rx_packets + b.rx_packets,
                tx_bytes: a.tx_bytes + b.tx_bytes,
                tx_packets: a.tx_packets + b.tx_packets,
            })
            .map(|n| InterfaceCounters {
                name: "eth0".to_owned(),
                rx_bytes: n.rx_bytes,
                rx_packets: n.rx_packets,
                tx_bytes: n.tx_bytes,
                tx_packets: n.tx_packets,
                ..InterfaceCounters::default()
            });
        Some(PodEntry {
            pod_ref: pod.pod_ref.clone(),
            start_time: pod.start_time,
            cgroup,
            containers,
            network,
            volumes: self
                .fs
                .cache()
                .volumes
                .get(&pod.pod_ref.uid)
                .cloned()
                .unwrap_or_default(),
        })
    }

    fn node(&mut self, root: Option<CgroupEntry>) -> NodeEntry {
        let sample = read_node(&self.config.proc_root).ok();
        let previous = self.previous_node.take();
        let cpu = root
            .as_ref()
            .and_then(|r| CpuStats::from_sample(&r.sample, r.previous.as_ref()));
        let memory = sample.as_ref().map(node_memory);
        let uptime = std::fs::read_to_string(self.config.proc_root.join("uptime"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok());
        let now = crate::clock::wall();
        let entry = NodeEntry {
            name: self.config.node_name.clone(),
            start_time: uptime.and_then(|u| boot_time(now, u)),
            time: Some(now),
            cpu: cpu.or_else(|| Some(node_cpu(sample.as_ref()?, previous.as_ref()))),
            memory,
            network: host::host_interfaces(&self.config.proc_root),
            fs: self.fs.cache().node,
            image_fs: self.fs.cache().image,
            root,
            max_pid: std::fs::read_to_string(self.config.proc_root.join("sys/kernel/pid_max"))
                .ok()
                .and_then(|t| t.trim().parse().ok()),
            // The kubelet's `rlimit.curproc`: sysinfo(2)'s process count, no /proc walk.
            processes: nix::sys::sysinfo::sysinfo()
                .ok()
                .map(|info| i64::from(info.process_count())),
        };
        self.previous_node = sample;
        entry
    }
}

/// Whether a file class last read `at` is due again after `period`; ticks `interval` apart are
/// never exactly so, so half an interval early counts (a 10 s interval reads everything every
/// round). Records the read.
fn due(at: &mut Option<Instant>, period: Duration, interval: Duration) -> bool {
    let now = Instant::now();
    let due = at.is_none_or(|at| now.duration_since(at) + interval / 2 >= period);
    if due {
        *at = Some(now);
    }
    due
}

/// Node memory from `/proc/meminfo`, as cAdvisor's root container reports it: usage is what is
/// not free, the working set leaves out inactive file pages, available is the rest.
fn node_memory(sample: &NodeSample) -> MemoryStats {
    let memory = sample.memory;
    let usage = memory.total.saturating_sub(memory.free);
    let working_set = usage.saturating_sub(memory.inactive_file);
    MemoryStats {
        time: Time(Some(sample.time)),
        available_bytes: Some(memory.total.saturating_sub(working_set)),
        usage_bytes: Some(usage),
        working_set_bytes: Some(working_set),
        ..MemoryStats::default()
    }
}

/// Node CPU from `/proc/stat` when the root cgroup has no `cpu.stat` (`USER_HZ` ticks of 10 ms).
fn node_cpu(sample: &NodeSample, previous: Option<&NodeSample>) -> CpuStats {
    const TICK_NS: u64 = 10_000_000;
    let total = sample.cpu.busy().saturating_mul(TICK_NS);
    let rate = previous.and_then(|p| {
        let elapsed = sample.time.duration_since(p.time).ok()?.as_nanos();
        let used = total.checked_sub(p.cpu.busy().saturating_mul(TICK_NS))?;
        nano_cores(used, elapsed)
    });
    CpuStats {
        time: Time(Some(sample.time)),
        usage_core_nano_seconds: Some(total),
        usage_nano_cores: rate,
        ..CpuStats::default()
    }
}

/// Core-nanoseconds per second from `used` core-nanoseconds over `elapsed` nanoseconds, in u128:
/// `used * 1e9` leaves u64 above ~18 busy core-seconds per interval (as `convert` does).
fn nano_cores(used: u64, elapsed: u128) -> Option<u64> {
    if elapsed == 0 {
        return None;
    }
    u64::try_from(u128::from(used) * 1_000_000_000 / elapsed).ok()
}

/// When the node booted, from `/proc/uptime`'s seconds; `None` for a NaN, negative, infinite or
/// too large uptime (`Duration::from_secs_f64` would panic on those).
fn boot_time(now: SystemTime, uptime_secs: f64) -> Option<SystemTime> {
    now.checked_sub(Duration::try_from_secs_f64(uptime_secs).ok()?)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{boot_time, due, nano_cores, node_cpu};
    use crate::stats::{
        cgroupfs::{MemInfo, NodeSample, ProcStatCpu},
        model::Pressure,
    };

    fn sample(at: SystemTime, busy_ticks: u64) -> NodeSample {
        NodeSample {
            time: at,
            cpu: ProcStatCpu {
                user: busy_ticks,
                ..ProcStatCpu::default()
            },
            memory: MemInfo::default(),
            pressure: Pressure::default(),
        }
    }

    #[test]
    fn node_cpu_rate_of_many_busy_cores_does_not_overflow() {
        // 256 cores busy for a 10 s interval: 2560 core-seconds, far above u64's ~18.4 at 1e9.
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let now = then + Duration::from_secs(10);
        let previous = sample(then, 1_000);
        let current = sample(now, 1_000 + 256 * 10 * 100);
        let cpu = node_cpu(&current, Some(&previous));
        assert_eq!(cpu.usage_nano_cores, Some(256 * 1_000_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_files_are_due_once_a_period_with_half_an_interval_of_slack() {
        let second = Duration::from_secs(1);
        let mut at = None;
        let mut reads = Vec::new();
        for round in 0..6 {
            reads.push((round, due(&mut at, 2 * second, second)));
            tokio::time::advance(second).await;
        }
        let due_rounds: Vec<_> = reads.iter().filter(|(_, d)| *d).map(|(r, _)| *r).collect();
        assert_eq!(due_rounds, [0, 2, 4], "every 2 s at a 1 s interval");
        // A 10 s interval whose ticks come a little early still reads every round.
        let mut at = None;
        let ten = Duration::from_secs(10);
        assert!(due(&mut at, ten, ten));
        tokio::time::advance(Duration::from_millis(9_997)).await;
        assert!(due(&mut at, ten, ten));
    }

    #[test]
    fn nano_cores_is_none_without_elapsed_time_or_when_it_cannot_fit() {
        assert_eq!(nano_cores(5, 0), None);
        assert_eq!(nano_cores(u64::MAX, 1), None);
        assert_eq!(nano_cores(u64::MAX, 1_000_000_000), Some(u64::MAX));
    }

    #[test]
    fn boot_time_of_a_nonsense_uptime_is_none_not_a_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        for uptime in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert_eq!(boot_time(now, uptime), None, "uptime {uptime}");
        }
        assert_eq!(
            boot_time(now, 1_000.5),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(8_999_500))
        );
    }
}
