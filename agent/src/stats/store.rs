//! The stats store: what the last collection round saw, per pod, container and node, with the
//! sample before it for rates (`usageNanoCores`). Readers (the server, later eviction) see it
//! through [`StatsProvider`], defined here with its owner; building a `/stats/summary` or a
//! `/metrics/cadvisor` scrape from it only converts numbers already collected.
use std::{sync::RwLock, time::SystemTime};

use super::{
    metrics::cadvisor::{
        CadvisorContainer, CadvisorSnapshot, ContainerLabels, ContainerSpec, ProcessCounts,
    },
    model::{CgroupSample, EbpfCounters},
    summary::{
        ContainerStats, CpuStats, FsStats, MemoryStats, NetworkStats, NodeStats, PodReference,
        PodStats, ProcessStats, RuntimeStats, StatsError, Summary, Time, VolumeStats,
        convert::InterfaceCounters,
    },
};

/// The stats a reader gets; the stats store implements it. Both calls should be cheap (a
/// snapshot of what the collector last computed): they run on the request's task.
pub trait StatsProvider: Send + Sync + 'static {
    /// The full summary, with `usageNanoCores` from the last two samples. Also the source of
    /// `/metrics/resource`, which reads its CPU and memory part.
    fn summary(&self) -> Result<Summary, StatsError>;
    /// The per-cgroup inputs of `/metrics/cadvisor`.
    fn cadvisor(&self) -> Result<CadvisorSnapshot, StatsError>;
}

/// A [`StatsProvider`] before any collection: every call is [`StatsError::NotCollected`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStats;

impl StatsProvider for NoStats {
    fn summary(&self) -> Result<Summary, StatsError> {
        Err(StatsError::NotCollected)
    }

    fn cadvisor(&self) -> Result<CadvisorSnapshot, StatsError> {
        Err(StatsError::NotCollected)
    }
}

/// One cgroup as the round saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupEntry {
    /// The cgroup's path below the v2 mount, starting with `/` (cAdvisor's `id` label).
    pub path: String,
    /// The cgroup id (the directory's inode), what the eBPF maps are keyed by.
    pub id: u64,
    pub sample: CgroupSample,
    pub previous: Option<CgroupSample>,
    pub ebpf: Option<EbpfCounters>,
}

/// One running container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerEntry {
    pub name: String,
    /// The runtime's container id.
    pub id: String,
    pub image: String,
    pub start_time: Option<SystemTime>,
    pub cgroup: CgroupEntry,
    pub spec: ContainerSpec,
    pub rootfs: Option<FsStats>,
    pub logs: Option<FsStats>,
}

/// One pod with at least one running container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodEntry {
    pub pod_ref: PodReference,
    pub start_time: Option<SystemTime>,
    /// The pod cgroup (`cgroupsPerQOS`); without one, pod CPU and memory are the containers' sum.
    pub cgroup: Option<CgroupEntry>,
    pub containers: Vec<ContainerEntry>,
    /// Pod network traffic (the eBPF socket counters of its cgroups), as interface `eth0`.
    pub network: Option<InterfaceCounters>,
    pub volumes: Vec<VolumeStats>,
}

/// The node's part of a round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeEntry {
    pub name: String,
    pub start_time: Option<SystemTime>,
    pub time: Option<SystemTime>,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub network: Vec<InterfaceCounters>,
    pub fs: Option<FsStats>,
    pub image_fs: Option<FsStats>,
    /// The root cgroup, for `/metrics/cadvisor`'s `id="/"` series.
    pub root: Option<CgroupEntry>,
    pub max_pid: Option<i64>,
    pub processes: Option<i64>,
}

/// Everything one round collected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub node: NodeEntry,
    pub pods: Vec<PodEntry>,
    pub devices: std::collections::BTreeMap<(u32, u32), String>,
}

/// The latest snapshot, shared between the collector and the server.
#[derive(Debug, Default)]
pub struct StatsStore {
    latest: RwLock<Option<std::sync::Arc<Snapshot>>>,
}

impl StatsStore {
    pub fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut latest) = self.latest.write() {
            *latest = Some(std::sync::Arc::new(snapshot));
        }
    }

    /// The latest snapshot, if a round has finished.
    #[must_use]
    pub fn latest(&self) -> Option<std::sync::Arc<Snapshot>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }
}

fn container_stats(entry: &ContainerEntry) -> ContainerStats {
    let mut stats = ContainerStats::from_sample(
        entry.name.clone(),
        entry.start_time,
        &entry.cgroup.sample,
        entry.cgroup.previous.as_ref(),
    );
    stats.rootfs = entry.rootfs;
    stats.logs = entry.logs;
    stats
}

/// The sum of the containers' samples, for pods without a pod cgroup.
fn summed(containers: &[ContainerEntry], previous: bool) -> Option<CgroupSample> {
    let mut total: Option<CgroupSample> = None;
    for entry in containers {
        let sample = if previous {
            entry.cgroup.previous.as_ref()?
        } else {
            &entry.cgroup.sample
        };
        let acc = total.get_or_insert_with(|| CgroupSample {
            time: sample.time,
            ..CgroupSample::default()
        });
        if let Some(cpu) = sample.cpu {
            let sum = acc.cpu.get_or_insert_with(Default::default);
            sum.usage_usec += cpu.usage_usec;
            sum.user_usec += cpu.user_usec;
            sum.system_usec += cpu.system_usec;
        }
        if let Some(memory) = sample.memory {
            let sum = acc.memory.get_or_insert_with(Default::default);
            sum.current += memory.current;
            sum.stat.anon += memory.stat.anon;
            sum.stat.file += memory.stat.file;
            sum.stat.inactive_file += memory.stat.inactive_file;
            sum.stat.active_file += memory.stat.active_file;
            sum.stat.pgfault += memory.stat.pgfault;
            sum.stat.pgmajfault += memory.stat.pgmajfault;
        }
    }
    total
}

fn pod_stats(pod: &PodEntry) -> PodStats {
    let containers: Vec<ContainerStats> = pod.containers.iter().map(container_stats).collect();
    let (sample, previous) = match &pod.cgroup {
        Some(cgroup) => (Some(cgroup.sample.clone()), cgroup.previous.clone()),
        None => (
            summed(&pod.containers, false),
            summed(&pod.containers, true),
        ),
    };
    let time = sample.as_ref().and_then(|s| s.time);
    let mut ephemeral = FsStats {
        time: Time(time),
        ..FsStats::default()
    };
    let mut any_fs = false;
    let parts: Vec<FsStats> = pod
        .containers
        .iter()
        .flat_map(|c| [c.rootfs, c.logs])
        .flatten()
        .chain(pod.volumes.iter().map(VolumeStats::fs))
        .collect();
    for fs in &parts {
        any_fs = true;
        ephemeral.used_bytes = Some(ephemeral.used_bytes.unwrap_or(0) + fs.used_bytes.unwrap_or(0));
        ephemeral.inodes_used =
            Some(ephemeral.inodes_used.unwrap_or(0) + fs.inodes_used.unwrap_or(0));
        ephemeral.capacity_bytes = ephemeral.capacity_bytes.or(fs.capacity_bytes);
        ephemeral.available_bytes = ephemeral.available_bytes.or(fs.available_bytes);
        ephemeral.inodes = ephemeral.inodes.or(fs.inodes);
        ephemeral.inodes_free = ephemeral.inodes_free.or(fs.inodes_free);
    }
    PodStats {
        pod_ref: pod.pod_ref.clone(),
        start_time: Time(pod.start_time),
        containers,
        cpu: sample
            .as_ref()
            .and_then(|s| CpuStats::from_sample(s, previous.as_ref())),
        memory: sample.as_ref().and_then(MemoryStats::from_sample),
        network: pod
            .network
            .as_ref()
            .map(|n| NetworkStats::from_interfaces(time, std::slice::from_ref(n))),
        volume_stats: pod.volumes.clone(),
        ephemeral_storage: any_fs.then_some(ephemeral),
        process_stats: pod
            .cgroup
            .as_ref()
            .and_then(|c| c.sample.pids)
            .map(|p| ProcessStats::new(p.current)),
        swap: sample
            .as_ref()
            .and_then(crate::stats::summary::SwapStats::from_sample),
        ..PodStats::default()
    }
}

/// `/stats/summary` from a snapshot.
#[must_use]
pub fn summary(snapshot: &Snapshot) -> Summary {
    let node = &snapshot.node;
    Summary {
        node: NodeStats {
            node_name: node.name.clone(),
            start_time: Time(node.start_time),
            cpu: node.cpu.clone(),
            memory: node.memory.clone(),
            network: (!node.network.is_empty())
                .then(|| NetworkStats::from_interfaces(node.time, &node.network)),
            fs: node.fs,
            runtime: node.image_fs.as_ref().map(|image_fs| RuntimeStats {
                image_fs: Some(*image_fs),
                container_fs: Some(*image_fs),
            }),
            rlimit: Some(crate::stats::summary::RlimitStats {
                time: Time(node.time),
                max_pid: node.max_pid,
                num_of_running_processes: node.processes,
            }),
            ..NodeStats::default()
        },
        pods: snapshot.pods.iter().map(pod_stats).collect(),
    }
}

fn cadvisor_entry(
    cgroup: &CgroupEntry,
    labels: ContainerLabels,
    start_time: Option<SystemTime>,
    spec: ContainerSpec,
    interfaces: Vec<InterfaceCounters>,
) -> CadvisorContainer {
    CadvisorContainer {
        labels: ContainerLabels {
            id: cgroup.path.clone(),
            ..labels
        },
        start_time,
        sample: cgroup.sample.clone(),
        spec,
        interfaces,
        filesystems: Vec::new(),
        processes: cgroup.sample.pids.map(|p| ProcessCounts {
            processes: p.current,
            ..ProcessCounts::default()
        }),
        ebpf: cgroup.ebpf.clone(),
    }
}

/// `/metrics/cadvisor`'s input from a snapshot: the root cgroup, each pod cgroup (labels
/// without a container, as upstream) and each container.
#[must_use]
pub fn cadvisor(snapshot: &Snapshot) -> CadvisorSnapshot {
    let mut containers = Vec::new();
    if let Some(root) = &snapshot.node.root {
        containers.push(cadvisor_entry(
            root,
            ContainerLabels::default(),
            snapshot.node.start_time,
            ContainerSpec::default(),
            snapshot.node.network.clone(),
        ));
    }
    for pod in &snapshot.pods {
        let labels = |container: &str, name: &str, image: &str| ContainerLabels {
            container: container.to_owned(),
            id: String::new(),
            image: image.to_owned(),
            name: name.to_owned(),
            namespace: pod.pod_ref.namespace.clone(),
            pod: pod.pod_ref.name.clone(),
        };
        if let Some(cgroup) = &pod.cgroup {
            containers.push(cadvisor_entry(
                cgroup,
                labels("", "", ""),
                pod.start_time,
                ContainerSpec::default(),
                pod.network.iter().cloned().collect(),
            ));
        }
        for container in &pod.containers {
            containers.push(cadvisor_entry(
                &container.cgroup,
                labels(&container.name, &container.id, &container.image),
                container.start_time,
                container.spec,
                Vec::new(),
            ));
        }
    }
    CadvisorSnapshot {
        containers,
        devices: snapshot.devices.clone(),
    }
}

impl StatsProvider for StatsStore {
    fn summary(&self) -> Result<Summary, StatsError> {
        self.latest()
            .map(|s| summary(&s))
            .ok_or(StatsError::NotCollected)
    }

    fn cadvisor(&self) -> Result<CadvisorSnapshot, StatsError> {
        self.latest()
            .map(|s| cadvisor(&s))
            .ok_or(StatsError::NotCollected)
    }
}
