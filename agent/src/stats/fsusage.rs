//! Filesystem usage, measured beside the collection rounds: the containers' writable layers
//! (CRI `ListContainerStats`), the image filesystem (`ImageFsInfo`), log and `emptyDir`
//! directories and the node filesystem. It changes slowly and costs much to measure:
//! `ListContainerStats` asks every shim for its metrics (23 s a call during a 110-pod start in
//! the node VM, `docs/perf.md`) and the directories are walked. So a refresh runs in a task of
//! its own and never holds up a round's cgroup reads. Refreshes start at most every
//! [`FS_PERIOD`] and never take more than half the time: the next waits at least twice as long as
//! the last took, so a busy runtime is asked less often. cAdvisor, too, measures container
//! filesystems on a goroutine of their own, about once a minute. The first refresh completes
//! before the first snapshot, so that it carries the node's filesystems.
//!
//! While sandbox creations or container starts wait in `cri::Gate`, the runtime is busy starting
//! pods and a `ListContainerStats` would compete with them for its time: the writable layers are
//! then left as last read, for at most [`LAYERS_DEFERRED_AT_MOST`] (upstream's
//! `volumeStatsAggPeriod`, the staleness it accepts for volumes).
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kernlet_cri::v1;
use tokio::{task::JoinHandle, time::Instant};

use super::{
    host,
    summary::{FsStats, VolumeStats},
};
use crate::cri::Runtime;

/// How often filesystem usage is measured at most (upstream's `volumeStatsAggPeriod` is 1 m;
/// cAdvisor refreshes container fs usage about every minute).
pub const FS_PERIOD: Duration = Duration::from_secs(10);

/// The longest the writable layers go unread while pods wait to start.
pub const LAYERS_DEFERRED_AT_MOST: Duration = Duration::from_mins(1);

/// The latest filesystem usage.
#[derive(Debug, Default)]
pub(super) struct FsCache {
    pub rootfs: HashMap<String, FsStats>,
    pub logs: HashMap<String, FsStats>,
    pub volumes: HashMap<String, Vec<VolumeStats>>,
    pub node: Option<FsStats>,
    pub image: Option<FsStats>,
    pub devices: BTreeMap<(u32, u32), String>,
}

/// Where the measured directories are.
#[derive(Debug, Clone)]
pub(super) struct FsPaths {
    pub pod_logs_dir: PathBuf,
    pub root_dir: PathBuf,
    pub proc_root: PathBuf,
}

/// A container's writable layer: id, bytes and inodes used.
type Layer = (String, Option<u64>, Option<u64>);

/// The directories' usage and the block devices by major:minor.
type Dirs = (host::FsMeasured, BTreeMap<(u32, u32), String>);

/// One refresh's readings; a part that could not be read keeps its last value.
#[derive(Debug)]
struct Measured {
    layers: Option<Vec<Layer>>,
    /// Whether `ImageFsInfo` answered; `image` is its first filesystem.
    image_read: bool,
    image: Option<FsStats>,
    dirs: Option<Dirs>,
    took: Duration,
}

/// The cache, and the refresh running for it.
#[derive(Debug, Default)]
pub(super) struct FsRefresh {
    cache: FsCache,
    started: Option<Instant>,
    took: Duration,
    /// When a refresh that read the writable layers last started.
    layers_read: Option<Instant>,
    task: Option<JoinHandle<Measured>>,
}

impl FsRefresh {
    /// Takes in a refresh that has ended and starts the next when due (`pods` is asked only
    /// then). The first refresh is waited for.
    pub(super) async fn tick(
        &mut self,
        runtime: &Runtime,
        paths: &FsPaths,
        pods: impl FnOnce() -> Vec<Pod>,
    ) {
        if self.task.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(task) = self.task.take()
        {
            self.ended(task.await);
        }
        if self.task.is_some() || !self.due() {
            return;
        }
        let first = self.started.is_none();
        let now = Instant::now();
        self.started = Some(now);
        let layers = self.layers_due(runtime.gate().busy());
        if layers {
            self.layers_read = Some(now);
        }
        let task = tokio::spawn(measure(runtime.clone(), paths.clone(), pods(), layers));
        if first {
            self.ended(task.await);
        } else {
            self.task = Some(task);
        }
    }

    /// Whether the next refresh may start: [`FS_PERIOD`] after the last started, or twice as
    /// long as it took.
    fn due(&self) -> bool {
        self.started
            .is_none_or(|at| at.elapsed() >= FS_PERIOD.max(self.took * 2))
    }

    /// Whether this refresh reads the writable layers: always unless the runtime is `busy`
    /// starting pods, and then once they are [`LAYERS_DEFERRED_AT_MOST`] old.
    fn layers_due(&self, busy: bool) -> bool {
        !busy
            || self
                .layers_read
                .is_none_or(|at| at.elapsed() >= LAYERS_DEFERRED_AT_MOST)
    }

    /// The latest usage.
    pub(super) fn cache(&self) -> &FsCache {
        &self.cache
    }

    /// Stops a refresh still running.
    pub(super) fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn ended(&mut self, measured: Result<Measured, tokio::task::JoinError>) {
        let Ok(measured) = measured else {
            return;
        };
        self.took = measured.took;
        self.cache.apply(measured);
    }
}

impl FsCache {
    fn apply(&mut self, measured: Measured) {
        if let Some(((logs, volumes, node), devices)) = measured.dirs {
            self.logs = logs;
            self.volumes = volumes;
            self.node = Some(node);
            self.devices = devices;
        }
        if measured.image_read {
            self.image = measured.image;
        }
        if let Some(layers) = measured.layers {
            // A writable layer lives on the image filesystem: its capacity is that one's.
            let on = self.image.unwrap_or_default();
            self.rootfs = layers
                .into_iter()
                .map(|(id, used, inodes)| {
                    let fs = FsStats {
                        used_bytes: used,
                        inodes_used: inodes,
                        ..on
                    };
                    (id, fs)
                })
                .collect();
        }
    }
}

/// One refresh; the writable layers only when `layers`.
async fn measure(runtime: Runtime, paths: FsPaths, pods: Vec<Pod>, layers: bool) -> Measured {
    let started = Instant::now();
    let layers = if layers {
        let request = v1::ListContainerStatsRequest { filter: None };
        runtime
            .list_container_stats(request)
            .await
            .ok()
            .map(|response| writable_layers(&response))
    } else {
        None
    };
    let image = runtime
        .image_fs_info(v1::ImageFsInfoRequest {})
        .await
        .map(|response| image_fs(&response));
    let dirs = tokio::task::spawn_blocking(move || {
        let dirs = host::measure_fs(&paths.pod_logs_dir, &paths.root_dir, &pods);
        (dirs, host::block_devices(&paths.proc_root))
    })
    .await
    .ok();
    Measured {
        layers,
        image_read: image.is_ok(),
        image: image.ok().flatten(),
        dirs,
        took: started.elapsed(),
    }
}

fn writable_layers(response: &v1::ListContainerStatsResponse) -> Vec<Layer> {
    response
        .stats
        .iter()
        .filter_map(|s| {
            let id = s.attributes.as_ref()?.id.clone();
            let layer = s.writable_layer.as_ref()?;
            Some((
                id,
                layer.used_bytes.map(|v| v.value),
                layer.inodes_used.map(|v| v.value),
            ))
        })
        .collect()
}

/// The first image filesystem, its capacity from `statvfs` of its mount point.
fn image_fs(response: &v1::ImageFsInfoResponse) -> Option<FsStats> {
    response.image_filesystems.first().map(|usage| {
        let mut fs = usage
            .fs_id
            .as_ref()
            .map(|id| host::statvfs(Path::new(&id.mountpoint)))
            .unwrap_or_default();
        fs.used_bytes = usage.used_bytes.map(|v| v.value);
        fs.inodes_used = usage.inodes_used.map(|v| v.value);
        fs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(id: &str, used: u64) -> v1::ContainerStats {
        v1::ContainerStats {
            attributes: Some(v1::ContainerAttributes {
                id: id.to_owned(),
                ..Default::default()
            }),
            writable_layer: Some(v1::FilesystemUsage {
                used_bytes: Some(v1::UInt64Value { value: used }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A refresh that took 23 s puts the next 46 s after it started, not 10 s.
    #[tokio::test(start_paused = true)]
    async fn a_slow_refresh_spaces_out_the_next() {
        let mut refresh = FsRefresh {
            started: Some(Instant::now()),
            took: Duration::from_secs(1),
            ..FsRefresh::default()
        };
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!refresh.due());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(refresh.due());
        refresh.took = Duration::from_secs(23);
        assert!(!refresh.due());
        tokio::time::advance(Duration::from_secs(36)).await;
        assert!(refresh.due());
    }

    /// While pods wait to start, the writable layers are read only once they are a minute old;
    /// never read, or with nothing waiting, they are read.
    #[tokio::test(start_paused = true)]
    async fn layers_wait_while_pods_start_but_not_past_a_minute() {
        let mut refresh = FsRefresh::default();
        assert!(refresh.layers_due(true), "never read");
        refresh.layers_read = Some(Instant::now());
        assert!(refresh.layers_due(false));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!refresh.layers_due(true));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(refresh.layers_due(true));
    }

    /// A layer takes the image filesystem's capacity and its own usage; a part that could not
    /// be read keeps its last value.
    #[test]
    fn a_refresh_fills_what_it_read_and_keeps_the_rest() {
        let mut cache = FsCache {
            node: Some(FsStats {
                used_bytes: Some(7),
                ..FsStats::default()
            }),
            ..FsCache::default()
        };
        let image = FsStats {
            capacity_bytes: Some(1000),
            used_bytes: Some(300),
            ..FsStats::default()
        };
        let response = v1::ListContainerStatsResponse {
            stats: vec![layer("a", 5), v1::ContainerStats::default()],
        };
        cache.apply(Measured {
            layers: Some(writable_layers(&response)),
            image_read: true,
            image: Some(image),
            dirs: None,
            took: Duration::ZERO,
        });
        assert_eq!(cache.node.and_then(|n| n.used_bytes), Some(7));
        let a = cache.rootfs["a"];
        assert_eq!((a.capacity_bytes, a.used_bytes), (Some(1000), Some(5)));
        assert_eq!(
            cache.rootfs.len(),
            1,
            "a container without attributes is left out"
        );
        cache.apply(Measured {
            layers: None,
            image_read: false,
            image: None,
            dirs: None,
            took: Duration::ZERO,
        });
        assert_eq!(cache.rootfs["a"].used_bytes, Some(5));
        assert_eq!(cache.image.and_then(|i| i.used_bytes), Some(300));
    }
}
