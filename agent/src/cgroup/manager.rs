//! kernlet's cgroup hierarchy, as the upstream kubelet builds it with the cgroupfs driver
//! (`pkg/kubelet/cm`: `node_container_manager_linux.go`, `qos_container_manager_linux.go`,
//! `pod_container_manager_linux.go`):
//!
//! ```text
//! <cgroupRoot>/kubepods                 node allocatable (memory.max, cpu.weight, pids.max)
//! <cgroupRoot>/kubepods/pod<uid>        Guaranteed pods
//! <cgroupRoot>/kubepods/burstable       weight from the summed requests of its pods
//! <cgroupRoot>/kubepods/besteffort      the minimum weight
//! ```
//!
//! Pod cgroups are created before their sandbox and named to CRI as its `cgroup_parent`; the
//! runtime creates container cgroups below them. A pod cgroup is removed once its sandboxes are
//! gone, killing whatever is left with `cgroup.kill`.
use std::{collections::HashSet, path::Path, time::Duration};

use k8s_openapi::api::core::v1::Pod;

use super::{
    CgroupError,
    fs::{Cgroupfs, Setup},
    resources::{
        PodSettings, ResourceConfig, best_effort_weight, burstable_weight, node_config, pod_config,
    },
};
use crate::resources::{Amounts, QosClass, get_pod_qos, pod_requests};

/// Controllers kernlet writes and cannot work without.
pub const REQUIRED_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// Controllers enabled for pods when the hierarchy offers them (`io` for stats and runtime limits).
const POD_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];
/// How long removing a pod cgroup waits for killed processes to exit.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Node-level sizing, from the configuration and the node's capacity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSettings {
    /// `cgroupRoot`, in cgroupfs form (`/`).
    pub cgroup_root: String,
    /// What `kubepods` is limited to (node allocatable when `pods` is enforced, else capacity).
    pub kubepods: Amounts,
    /// Reserved cgroups to limit: (`kubeReservedCgroup` or `systemReservedCgroup`, the
    /// reservation), when enforced.
    pub reserved: Vec<(String, Amounts)>,
    pub pods: PodSettings,
}

/// The pod-facing half of the cgroup manager.
#[derive(Debug)]
pub struct CgroupManager {
    fs: Cgroupfs,
    kubepods: String,
    settings: NodeSettings,
}

impl CgroupManager {
    #[must_use]
    pub fn new(fs: Cgroupfs, settings: NodeSettings) -> Self {
        let root = settings.cgroup_root.trim_end_matches('/');
        let kubepods = format!("{root}/kubepods");
        Self {
            fs,
            kubepods,
            settings,
        }
    }

    /// Fails unless the hierarchy at `mount` is cgroup v2 with every required controller; the
    /// error names what is missing and the two ways out.
    pub fn check(mount: &Path) -> Result<(), CgroupError> {
        let setup = Setup::detect(mount);
        let available = match &setup {
            Setup::Unified => Cgroupfs::new(mount).controllers("/")?,
            Setup::Hybrid { unified } => Cgroupfs::new(unified.clone())
                .controllers("/")
                .unwrap_or_default(),
            Setup::Legacy => std::collections::BTreeSet::default(),
        };
        let missing: Vec<&str> = REQUIRED_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !available.contains(*c))
            .collect();
        if missing.is_empty() && setup == Setup::Unified {
            return Ok(());
        }
        Err(CgroupError::Unsupported {
            mount: mount.to_owned(),
            setup: match setup {
                Setup::Unified => "the unified (v2) hierarchy".to_owned(),
                Setup::Hybrid { unified } => format!(
                    "a hybrid hierarchy (v1 controllers; v2 at {} without them)",
                    unified.display()
                ),
                Setup::Legacy => "a legacy (v1 only) hierarchy".to_owned(),
            },
            missing: missing.join(", "),
        })
    }

    /// The `kubepods` cgroup's name.
    #[must_use]
    pub fn kubepods(&self) -> &str {
        &self.kubepods
    }

    #[must_use]
    pub fn fs(&self) -> &Cgroupfs {
        &self.fs
    }

    fn tier(&self, qos: QosClass) -> String {
        match qos {
            QosClass::Guaranteed => self.kubepods.clone(),
            QosClass::Burstable => format!("{}/burstable", self.kubepods),
            QosClass::BestEffort => format!("{}/besteffort", self.kubepods),
        }
    }

    /// Creates the node-level hierarchy and enforces node allocatable and the reserved cgroups.
    pub fn init(&self) -> Result<(), CgroupError> {
        self.fs.create(&self.kubepods)?;
        self.fs
            .enable_controllers(&self.kubepods, &POD_CONTROLLERS)?;
        self.apply(&self.kubepods, &node_config(&self.settings.kubepods))?;
        for (qos, weight) in [
            (QosClass::Burstable, best_effort_weight()),
            (QosClass::BestEffort, best_effort_weight()),
        ] {
            let tier = self.tier(qos);
            self.fs.create(&tier)?;
            self.fs.enable_controllers(&tier, &POD_CONTROLLERS)?;
            self.fs.write(&tier, "cpu.weight", &weight.to_string())?;
        }
        for (name, reserved) in &self.settings.reserved {
            // Upstream requires reserved cgroups to exist; it never creates them.
            if !self.fs.exists(name) {
                return Err(CgroupError::MissingReserved {
                    name: name.clone(),
                    dir: self.fs.dir(name),
                });
            }
            self.apply(name, &node_config(reserved))?;
        }
        tracing::info!(kubepods = %self.kubepods, limits = ?self.settings.kubepods,
            "node allocatable enforced");
        Ok(())
    }

    fn apply(&self, name: &str, config: &ResourceConfig) -> Result<(), CgroupError> {
        for (file, value) in config.writes() {
            self.fs.write(name, file, &value)?;
        }
        Ok(())
    }

    /// The cgroup `pod` lives in: `pod<uid>` under its `QoS` tier.
    #[must_use]
    pub fn pod_cgroup(&self, pod: &Pod) -> String {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        format!("{}/pod{uid}", self.tier(get_pod_qos(pod)))
    }

    /// Creates `pod`'s cgroup if needed and applies its limits; returns its name for CRI.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<String, CgroupError> {
        let name = self.pod_cgroup(pod);
        let config = pod_config(pod, &self.settings.pods).map_err(|source| CgroupError::Spec {
            name: name.clone(),
            source: Box::new(source),
        })?;
        self.fs.create(&name)?;
        self.fs.enable_controllers(&name, &POD_CONTROLLERS)?;
        self.apply(&name, &config)?;
        Ok(name)
    }

    /// Removes the cgroup of pod `uid` wherever it is, killing what still runs in it.
    pub fn remove_pod(&self, uid: &str) -> Result<(), CgroupError> {
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let name = format!("{}/pod{uid}", self.tier(qos));
            if self.fs.exists(&name) {
                self.fs.remove(&name, REMOVE_TIMEOUT)?;
                tracing::info!(%uid, cgroup = %name, "pod cgroup removed");
            }
        }
        Ok(())
    }

    /// The UIDs of every pod cgroup present.
    pub fn pod_uids(&self) -> Result<Vec<String>, CgroupError> {
        let mut uids = Vec::new();
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            for child in self.fs.children(&self.tier(qos))? {
                if let Some(uid) = child.strip_prefix("pod") {
                    uids.push(uid.to_owned());
                }
            }
        }
        Ok(uids)
    }

    /// Removes pod cgroups whose UID is not in `keep` (left by a previous run); returns the UIDs
    /// removed. A cgroup that cannot be removed is logged and left for the next start.
    pub fn remove_orphans(&self, keep: &HashSet<String>) -> Result<Vec<String>, CgroupError> {
        let mut removed = Vec::new();
        for uid in self.pod_uids()? {
            if keep.contains(&uid) {
                continue;
            }
            match self.remove_pod(&uid) {
                Ok(()) => removed.push(uid),
                Err(error) => tracing::warn!(%uid, %error, "cannot remove orphaned pod cgroup"),
            }
        }
        Ok(removed)
    }

    /// Re-weights the `burstable` tier for the active `pods` (and, under `MemoryQoS`, protects
    /// the requested memory of the tiers with `memory.min`).
    pub fn update_tiers<'a>(
        &self,
        pods: impl IntoIterator<Item = &'a Pod> + Clone,
    ) -> Result<(), CgroupError> {
        let burstable = self.tier(QosClass::Burstable);
        let weight = burstable_weight(pods.clone());
        self.fs
            .write(&burstable, "cpu.weight", &weight.to_string())?;
        if self.settings.pods.memory_qos {
            let (mut guaranteed, mut burstable_min) = (0_i64, 0_i64);
            for pod in pods {
                let memory = pod_requests(pod)
                    .ok()
                    .and_then(|r| r.memory_bytes)
                    .unwrap_or(0);
                match get_pod_qos(pod) {
                    QosClass::Guaranteed => guaranteed += memory,
                    QosClass::Burstable => burstable_min += memory,
                    QosClass::BestEffort => {}
                }
            }
            self.fs
                .write(&burstable, "memory.min", &burstable_min.to_string())?;
            self.fs.write(
                &self.kubepods,
                "memory.min",
                &(guaranteed + burstable_min).to_string(),
            )?;
        }
        Ok(())
    }
}
