//! Host-side readers the collector needs besides cgroupfs: container cgroups found by id,
//! `/proc/net/dev`, `/proc/partitions`, `statvfs` and `du`-style directory usage.
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
    path::Path,
};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::summary::{FsStats, Time, VolumeStats, convert::InterfaceCounters};

/// The runtime's id of a container status (`containerd://<id>` -> `<id>`).
pub(super) fn runtime_id(status: &ContainerStatus) -> Option<&str> {
    let id = status.container_id.as_deref()?;
    Some(id.split_once("://").map_or(id, |(_, id)| id))
}

/// Container ids -> cgroup paths, by walking the hierarchy (runc names a container's cgroup by
/// its id, possibly with a prefix and suffix such as `cri-containerd-<id>.scope`).
#[must_use]
pub fn index_containers(mount: &Path) -> HashMap<String, String> {
    fn walk(mount: &Path, dir: &Path, depth: usize, out: &mut HashMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .trim_end_matches(".scope")
                .rsplit(['-', ':'])
                .next()
                .unwrap_or_default();
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                if let Ok(rel) = path.strip_prefix(mount) {
                    out.insert(id.to_owned(), format!("/{}", rel.display()));
                }
            } else if depth < 5 {
                walk(mount, &path, depth + 1, out);
            }
        }
    }
    let mut out = HashMap::new();
    walk(mount, mount, 0, &mut out);
    out
}

/// Interfaces of the host's network namespace (`/proc/net/dev`), loopback left out.
#[must_use]
pub fn host_interfaces(proc_root: &Path) -> Vec<InterfaceCounters> {
    let Ok(text) = std::fs::read_to_string(proc_root.join("net/dev")) else {
        return Vec::new();
    };
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            (name != "lo" && v.len() >= 12).then(|| InterfaceCounters {
                name: name.to_owned(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// Capacity and free space of the filesystem holding `path`.
#[must_use]
pub fn statvfs(path: &Path) -> FsStats {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let block = s.fragment_size();
            FsStats {
                time: Time(Some(crate::clock::wall())),
                available_bytes: Some(s.blocks_available() * block),
                capacity_bytes: Some(s.blocks() * block),
                used_bytes: Some((s.blocks() - s.blocks_free()) * block),
                inodes_free: Some(s.files_free()),
                inodes: Some(s.files()),
                inodes_used: Some(s.files() - s.files_free()),
            }
        }
        Err(_) => FsStats::default(),
    }
}

/// Disk usage (allocated blocks) and inodes below `dir`, as `du` counts them.
#[must_use]
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

pub type FsMeasured = (
    HashMap<String, FsStats>,
    HashMap<String, Vec<VolumeStats>>,
    FsStats,
);

/// Log usage per container id (below `pod_logs_dir`), `emptyDir` usage per pod UID (below
/// `root_dir`), and the node filesystem (`root_dir`'s).
#[must_use]
pub fn measure_fs(pod_logs_dir: &Path, root_dir: &Path, pods: &[Pod]) -> FsMeasured {
    let logs_fs = statvfs(pod_logs_dir);
    let root_fs = statvfs(root_dir);
    let mut logs = HashMap::new();
    let mut volumes = HashMap::new();
    for pod in pods {
        let (Some(uid), Some(name), Some(namespace)) = (
            pod.metadata.uid.as_deref(),
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        let pod_logs = pod_logs_dir.join(format!("{namespace}_{name}_{uid}"));
        for status in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let Some(id) = runtime_id(status) else {
                continue;
            };
            let (bytes, inodes) = disk_usage(&pod_logs.join(&status.name));
            let mut fs = logs_fs;
            fs.used_bytes = Some(bytes);
            fs.inodes_used = Some(inodes);
            logs.insert(id.to_owned(), fs);
        }
        let empty_dirs = root_dir
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~empty-dir");
        let mut stats = Vec::new();
        for entry in std::fs::read_dir(&empty_dirs)
            .into_iter()
            .flatten()
            .flatten()
        {
            let (bytes, inodes) = disk_usage(&entry.path());
            let mut fs = statvfs(&entry.path());
            fs.used_bytes = Some(bytes);
            fs.inodes_used = Some(inodes);
            stats.push(VolumeStats::new(
                entry.file_name().to_string_lossy().into_owned(),
                fs,
            ));
        }
        if !stats.is_empty() {
            volumes.insert(uid.to_owned(), stats);
        }
    }
    (logs, volumes, root_fs)
}

/// Block device names by number, from `/proc/partitions`.
#[must_use]
pub fn block_devices(proc_root: &Path) -> BTreeMap<(u32, u32), String> {
    let Ok(text) = std::fs::read_to_string(proc_root.join("partitions")) else {
        return BTreeMap::new();
    };
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((
                (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?),
                format!("/dev/{}", f.get(3)?),
            ))
        })
        .collect()
}
