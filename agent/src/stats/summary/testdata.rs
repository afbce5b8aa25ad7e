//! Representative samples and a summary built from them, shared by the summary, metrics and
//! server tests.
use std::time::{Duration, SystemTime};

use super::convert::InterfaceCounters;
use super::*;
use crate::stats::model::{
    CgroupSample, CpuStat, MemoryEvents, MemoryStat, MemoryStats as ModelMemory, PidsStats,
    Pressure, Psi, PsiLine, Throttling,
};

/// 2021-06-22T21:11:18Z plus `millis`.
pub(crate) fn at(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_624_396_278) + Duration::from_millis(millis)
}

pub(crate) fn psi(total_usec: u64) -> Psi {
    Psi {
        some: PsiLine {
            avg10: 1.5,
            avg60: 0.25,
            avg300: 0.0,
            total_usec,
        },
        full: Some(PsiLine {
            avg10: 0.5,
            avg60: 0.0,
            avg300: 0.0,
            total_usec: total_usec / 2,
        }),
    }
}

/// A container cgroup at `time` that has used `usage_usec` of CPU.
pub(crate) fn sample(time: SystemTime, usage_usec: u64) -> CgroupSample {
    CgroupSample {
        time: Some(time),
        cpu: Some(CpuStat {
            usage_usec,
            user_usec: usage_usec * 3 / 4,
            system_usec: usage_usec / 4,
            throttling: Some(Throttling {
                nr_periods: 100,
                nr_throttled: 7,
                throttled_usec: 250_000,
            }),
        }),
        memory: Some(ModelMemory {
            current: 50 << 20,
            peak: Some(60 << 20),
            max: Some(128 << 20),
            swap_current: Some(1 << 20),
            swap_max: Some(16 << 20),
            stat: MemoryStat {
                anon: 30 << 20,
                file: 18 << 20,
                kernel: 2 << 20,
                file_mapped: 4 << 20,
                file_dirty: 4096,
                file_writeback: 0,
                active_file: 8 << 20,
                inactive_file: 10 << 20,
                pgfault: 12_345,
                pgmajfault: 12,
                pgscan: 40,
                pgsteal: 30,
                workingset_refault_anon: 2,
                workingset_refault_file: 5,
                ..MemoryStat::default()
            },
            events: MemoryEvents {
                max: 3,
                oom: 1,
                oom_kill: 1,
                ..MemoryEvents::default()
            },
        }),
        io: vec![crate::stats::model::IoDeviceStat {
            major: 8,
            minor: 0,
            rbytes: 4096,
            wbytes: 8192,
            rios: 1,
            wios: 2,
            dbytes: 0,
            dios: 0,
        }],
        pids: Some(PidsStats {
            current: 4,
            max: Some(1024),
        }),
        pressure: Pressure {
            cpu: Some(psi(2_000_000)),
            memory: Some(psi(1_000)),
            io: Some(psi(30_000)),
        },
    }
}

pub(crate) fn eth0() -> InterfaceCounters {
    InterfaceCounters {
        name: "eth0".to_owned(),
        rx_bytes: 1000,
        rx_packets: 10,
        rx_errors: 0,
        rx_dropped: 1,
        tx_bytes: 2000,
        tx_packets: 20,
        tx_errors: 0,
        tx_dropped: 0,
    }
}

/// A node with one pod of two containers, every optional part filled.
pub(crate) fn summary() -> Summary {
    let now = sample(at(10_000), 2_000_000);
    let before = sample(at(0), 1_000_000);
    let container = |name: &str| {
        let mut stats =
            ContainerStats::from_sample(name.to_owned(), Some(at(0)), &now, Some(&before));
        stats.rootfs = Some(FsStats {
            time: Time::new(at(10_000)),
            used_bytes: Some(4096),
            inodes_used: Some(12),
            ..FsStats::default()
        });
        stats
    };
    let fs = FsStats {
        time: Time::new(at(10_000)),
        available_bytes: Some(1 << 30),
        capacity_bytes: Some(4 << 30),
        used_bytes: Some(3 << 30),
        inodes_free: Some(1000),
        inodes: Some(5000),
        inodes_used: Some(4000),
    };
    Summary {
        node: NodeStats {
            node_name: "node-a".to_owned(),
            system_containers: vec![container(SYSTEM_CONTAINER_KUBELET)],
            start_time: Time::new(at(0)),
            cpu: CpuStats::from_sample(&now, Some(&before)),
            memory: MemoryStats::from_sample_with_limit(&now, Some(8 << 30)),
            io: IoStats::from_sample(&now),
            network: Some(NetworkStats::from_interfaces(Some(at(10_000)), &[eth0()])),
            fs: Some(fs),
            runtime: Some(RuntimeStats {
                image_fs: Some(fs),
                container_fs: Some(fs),
            }),
            rlimit: Some(RlimitStats {
                time: Time::new(at(10_000)),
                max_pid: Some(4_194_304),
                num_of_running_processes: Some(321),
            }),
            swap: SwapStats::from_sample(&now),
        },
        pods: vec![PodStats {
            pod_ref: PodReference {
                name: "web".to_owned(),
                namespace: "default".to_owned(),
                uid: "uid-web".to_owned(),
            },
            start_time: Time::new(at(0)),
            containers: vec![container("app"), container("sidecar")],
            cpu: CpuStats::from_sample(&now, Some(&before)),
            memory: MemoryStats::from_sample(&now),
            io: IoStats::from_sample(&now),
            network: Some(NetworkStats::from_interfaces(Some(at(10_000)), &[eth0()])),
            volume_stats: vec![VolumeStats {
                pvc_ref: Some(PvcReference {
                    name: "data".to_owned(),
                    namespace: "default".to_owned(),
                }),
                ..VolumeStats::new("data".to_owned(), fs)
            }],
            ephemeral_storage: Some(fs),
            process_stats: Some(ProcessStats::new(3)),
            swap: SwapStats::from_sample(&now),
        }],
    }
}
