//! Which `/metrics/cadvisor` families are served: cAdvisor's metric kinds (its
//! `container.MetricKind` names, as its `--disable_metrics` and `--enable_metrics` flags take
//! them) plus `kernlet`, kernlet's eBPF families. Set for the node with `--disable-metrics`, and
//! narrowed per scrape with `collect[]=` (the Prometheus exporters' convention, a scrape config's
//! `params`).
//!
//! Names cAdvisor knows but kernlet has nothing for (`percpu`, `tcp`, `perf_event` ...) are
//! accepted, so a list written for cAdvisor works unchanged; any other name is an error.
//! Container spec, start time and `container_last_seen` belong to no kind and are always served,
//! as in cAdvisor.
use std::fmt;

/// A set of metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricKinds(u16);

/// One kind kernlet serves: its name and the families it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// `container_cpu_{usage,user,system}_seconds_total` and the CFS counters.
    Cpu,
    /// `container_cpu_load_average_10s`, `container_tasks_state`.
    CpuLoad,
    /// `container_memory_*`.
    Memory,
    /// `container_network_*`.
    Network,
    /// `container_fs_{usage,limit}_bytes`, `container_fs_inodes_*`.
    Disk,
    /// `container_fs_{reads,writes}*`, `container_blkio_device_usage_total`.
    DiskIo,
    /// `container_processes`, `container_threads*`, `container_file_descriptors`,
    /// `container_sockets`.
    Process,
    /// `container_oom_events_total`.
    OomEvent,
    /// `container_pressure_*` (PSI).
    Pressure,
    /// `kernlet_*` eBPF families (on-CPU time, run-queue latency, page faults, block I/O, OOM).
    Kernlet,
}

impl MetricKind {
    const ALL: [Self; 10] = [
        Self::Cpu,
        Self::CpuLoad,
        Self::Memory,
        Self::Network,
        Self::Disk,
        Self::DiskIo,
        Self::Process,
        Self::OomEvent,
        Self::Pressure,
        Self::Kernlet,
    ];

    /// The kind's name, as cAdvisor spells it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::CpuLoad => "cpuLoad",
            Self::Memory => "memory",
            Self::Network => "network",
            Self::Disk => "disk",
            Self::DiskIo => "diskIO",
            Self::Process => "process",
            Self::OomEvent => "oom_event",
            Self::Pressure => "pressure",
            Self::Kernlet => "kernlet",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// cAdvisor kinds with no families in kernlet: accepted in lists, select nothing.
const CADVISOR_ONLY: [&str; 13] = [
    "sched",
    "percpu",
    "memory_numa",
    "tcp",
    "advtcp",
    "udp",
    "app",
    "hugetlb",
    "perf_event",
    "referenced_memory",
    "cpu_topology",
    "resctrl",
    "cpuset",
];

/// A name that is no metric kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric kind {0:?} (known: {known})", known = MetricKinds::names())]
pub struct UnknownMetricKind(pub String);

impl MetricKinds {
    /// Every kind (what is served by default).
    pub const ALL: Self = Self((1 << MetricKind::ALL.len()) - 1);
    /// No kind.
    pub const NONE: Self = Self(0);

    #[must_use]
    pub const fn contains(self, kind: MetricKind) -> bool {
        self.0 & kind.bit() != 0
    }

    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The kinds named in `names` (cAdvisor-only names add nothing).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownMetricKind> {
        let mut set = Self::NONE;
        for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(kind) = MetricKind::ALL.iter().find(|k| k.name() == name) {
                set.0 |= kind.bit();
            } else if !CADVISOR_ONLY.contains(&name) {
                return Err(UnknownMetricKind(name.to_owned()));
            }
        }
        Ok(set)
    }

    /// Every name [`Self::parse`] takes, comma-separated.
    #[must_use]
    pub fn names() -> String {
        let ours = MetricKind::ALL.iter().map(|k| k.name());
        let theirs = CADVISOR_ONLY.iter().copied();
        ours.chain(theirs).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for MetricKinds {
    /// The kinds in the set, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = MetricKind::ALL
            .iter()
            .filter(|k| self.contains(**k))
            .map(|k| k.name())
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_cadvisor_spells_them() {
        let set = MetricKinds::parse("cpuLoad, diskIO,,kernlet".split(',')).unwrap();
        assert!(set.contains(MetricKind::CpuLoad) && set.contains(MetricKind::DiskIo));
        assert!(set.contains(MetricKind::Kernlet) && !set.contains(MetricKind::Cpu));
        assert_eq!(set.to_string(), "cpuLoad,diskIO,kernlet");
        let served = MetricKinds::ALL.without(set);
        assert_eq!(
            served.to_string(),
            "cpu,memory,network,disk,process,oom_event,pressure"
        );
        // A cAdvisor-only kind is accepted and selects nothing.
        assert_eq!(
            MetricKinds::parse(["percpu", "tcp", "cpuset"]),
            Ok(MetricKinds::NONE)
        );
    }

    #[test]
    fn an_unknown_kind_is_an_error_that_lists_the_known_ones() {
        let error = MetricKinds::parse(["cpu", "CPU"]).unwrap_err();
        assert_eq!(error, UnknownMetricKind("CPU".to_owned()));
        let text = error.to_string();
        assert!(
            text.starts_with("unknown metric kind \"CPU\" (known: cpu,cpuLoad,"),
            "{text}"
        );
        assert!(
            text.contains("oom_event") && text.contains("resctrl"),
            "{text}"
        );
    }
}
