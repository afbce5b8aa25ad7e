//! Gathers [`NodeFacts`]: machine identity and OS from the host's files (under a root directory,
//! `/` in production and a temp dir in tests), capacity and allocatable from the config and the
//! node's resources, and the runtime's readiness and images through CRI.
//!
//! Upstream: cAdvisor's `MachineInfo` (`/etc/machine-id`, `/sys/class/dmi/id/product_uuid`,
//! `/proc/sys/kernel/random/boot_id`, `PRETTY_NAME` of `/etc/os-release`), the `MachineInfo`
//! setter of `pkg/kubelet/nodestatus/setters.go` (capacity, allocatable = capacity − reserved −
//! hard eviction, hugepages taken from memory) and `runtimeState` for the readiness messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kernlet_cri::v1;

use super::node::{Image, NodeFacts, Readiness};
use crate::config::KubeletConfig;
use crate::cri::Runtime;
use crate::resources::Amounts;

/// Where the host's files are: `/`, or a test's directory.
#[derive(Debug, Clone)]
pub struct HostRoot(pub PathBuf);

impl HostRoot {
    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.0.join(path.trim_start_matches('/')))
            .map(|text| text.trim().to_owned())
            .unwrap_or_default()
    }

    /// `PRETTY_NAME` of `/etc/os-release`, else `Linux`, as cAdvisor reports the OS image.
    fn os_image(&self) -> String {
        self.read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|value| value.trim_matches('"').to_owned())
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| "Linux".to_owned())
    }

    /// The configured hugepage pools: `(page size in KiB, total bytes)`.
    fn hugepages(&self) -> Vec<(u64, i64)> {
        let dir = self.0.join("sys/kernel/mm/hugepages");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut pools: Vec<(u64, i64)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let kib: u64 = name
                    .strip_prefix("hugepages-")?
                    .strip_suffix("kB")?
                    .parse()
                    .ok()?;
                let pages: i64 = std::fs::read_to_string(entry.path().join("nr_hugepages"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((kib, pages.saturating_mul(i64::try_from(kib * 1024).ok()?)))
            })
            .collect();
        pools.sort_unstable();
        pools
    }
}

/// A CPU amount as a quantity: whole cores, else millicores.
#[must_use]
pub fn cpu_quantity(millis: i64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// A byte amount as a binary-SI quantity in its canonical form (the largest exact suffix).
#[must_use]
pub fn bytes_quantity(bytes: i64) -> String {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes;
    let mut suffix = "";
    for next in SUFFIXES {
        if value == 0 || value % 1024 != 0 {
            break;
        }
        value /= 1024;
        suffix = next;
    }
    format!("{value}{suffix}")
}

/// The hugepage resource name of a page size: `hugepages-2Mi`, `hugepages-1Gi`.
fn hugepage_resource(kib: u64) -> String {
    format!(
        "hugepages-{}",
        bytes_quantity(i64::try_from(kib * 1024).unwrap_or(i64::MAX))
    )
}

/// The node's facts, but for the runtime version, which the caller fills in.
#[must_use]
pub fn gather(
    config: &KubeletConfig,
    host: &HostRoot,
    host_ips: Vec<std::net::IpAddr>,
    capacity: &Amounts,
) -> NodeFacts {
    let mut capacity = *capacity;
    capacity.ephemeral_storage_bytes = filesystem_bytes(&config.root_dir);
    let allocatable = crate::cgroup::allocatable(config, &capacity);
    let cores = capacity.cpu_millis.unwrap_or(0) / 1000;
    let pods = match config.pods_per_core {
        0 => i64::from(config.max_pods),
        per_core => i64::from(config.max_pods).min(i64::from(per_core) * cores),
    };
    let hugepages = host.hugepages();
    let hugepage_bytes: i64 = hugepages.iter().map(|&(_, bytes)| bytes).sum();
    let resources = |amounts: &Amounts, hugepages_taken: i64| {
        let mut out = BTreeMap::new();
        if let Some(cpu) = amounts.cpu_millis {
            out.insert("cpu".to_owned(), cpu_quantity(cpu.max(0)));
        }
        if let Some(memory) = amounts.memory_bytes {
            let memory = (memory - hugepages_taken).max(0);
            out.insert("memory".to_owned(), bytes_quantity(memory));
        }
        if let Some(storage) = amounts.ephemeral_storage_bytes {
            out.insert(
                "ephemeral-storage".to_owned(),
                bytes_quantity(storage.max(0)),
            );
        }
        out.insert("pods".to_owned(), pods.to_string());
        for &(kib, bytes) in &hugepages {
            out.insert(hugepage_resource(kib), bytes_quantity(bytes));
        }
        out
    };
    NodeFacts {
        name: config.node_name.clone(),
        host_ips,
        capacity: resources(&capacity, 0),
        allocatable: resources(&allocatable, hugepage_bytes),
        port: config.port,
        machine_id: host.read("/etc/machine-id"),
        system_uuid: host.read("/sys/class/dmi/id/product_uuid"),
        boot_id: host.read("/proc/sys/kernel/random/boot_id"),
        kernel_version: host.read("/proc/sys/kernel/osrelease"),
        os_image: host.os_image(),
        runtime_version: String::new(),
    }
}

/// The size of the filesystem holding `dir` (the node's ephemeral storage).
fn filesystem_bytes(dir: &Path) -> Option<i64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let bytes = u128::from(stat.blocks()) * u128::from(stat.fragment_size());
    i64::try_from(bytes).ok()
}

/// The runtime's readiness from CRI `Status`, with upstream's messages.
pub async fn readiness(runtime: &Runtime) -> Readiness {
    let status = match runtime.status().await {
        Ok(response) => response.status.unwrap_or_default(),
        Err(error) => {
            return Readiness {
                problems: vec![format!("container runtime is down: {error}")],
            };
        }
    };
    let condition = |name: &str| status.conditions.iter().find(|c| c.r#type == name);
    let mut problems = Vec::new();
    for (name, what) in [
        ("RuntimeReady", "container runtime not ready"),
        ("NetworkReady", "container runtime network not ready"),
    ] {
        match condition(name) {
            Some(c) if c.status => {}
            Some(c) => problems.push(format!(
                "{what}: {name}=false reason:{} message:{}",
                c.reason, c.message
            )),
            None => problems.push(format!("{what}: {name} missing")),
        }
    }
    Readiness { problems }
}

/// The runtime's images; an error leaves the list empty (the status still goes out).
pub async fn images(runtime: &Runtime) -> Vec<Image> {
    match runtime.list_images().await {
        Ok(response) => response.images.iter().map(image).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list images for the node status");
            Vec::new()
        }
    }
}

fn image(image: &v1::Image) -> Image {
    let mut names = image.repo_digests.clone();
    names.extend(image.repo_tags.iter().cloned());
    Image {
        names,
        size_bytes: image.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(2000), "2");
        assert_eq!(cpu_quantity(1500), "1500m");
        assert_eq!(bytes_quantity(8_245_460_992), "8052208Ki");
        assert_eq!(bytes_quantity(2 * 1024 * 1024), "2Mi");
        assert_eq!(bytes_quantity(1000), "1000");
        assert_eq!(bytes_quantity(0), "0");
        assert_eq!(hugepage_resource(2048), "hugepages-2Mi");
        assert_eq!(hugepage_resource(1_048_576), "hugepages-1Gi");
    }

    #[test]
    fn host_files_give_identity_os_and_hugepages() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("etc/machine-id", "abc123\n");
        write(
            "etc/os-release",
            "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        );
        write("proc/sys/kernel/random/boot_id", "b-1\n");
        write("proc/sys/kernel/osrelease", "6.1.0-27-amd64\n");
        write(
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "4\n",
        );
        let config = KubeletConfig {
            node_name: "n1".to_owned(),
            root_dir: dir.path().to_owned(),
            max_pods: 110,
            ..KubeletConfig::default()
        };
        let capacity = Amounts {
            cpu_millis: Some(2000),
            memory_bytes: Some(4 * 1024 * 1024 * 1024),
            ..Amounts::default()
        };
        let facts = gather(&config, &HostRoot(dir.path().to_owned()), vec![], &capacity);
        assert_eq!(facts.machine_id, "abc123");
        assert_eq!(facts.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(facts.boot_id, "b-1");
        assert_eq!(facts.kernel_version, "6.1.0-27-amd64");
        assert_eq!(facts.capacity["hugepages-2Mi"], "8Mi");
        assert_eq!(facts.capacity["memory"], "4Gi");
        assert_eq!(facts.capacity["pods"], "110");
        assert!(facts.capacity.contains_key("ephemeral-storage"));
        // Allocatable memory: capacity less the default hard eviction (100Mi) and the hugepages.
        assert_eq!(facts.allocatable["memory"], "3988Mi");
        assert_eq!(facts.allocatable["cpu"], "2");
    }
}
