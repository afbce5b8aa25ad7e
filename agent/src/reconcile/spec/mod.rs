//! Pure builders from a pod to the CRI requests the upstream kubelet would send, plus the explicit
//! host preparation those requests rely on.
//!
//! - [`sandbox`]: `RunPodSandbox`'s config (`generatePodSandboxConfig` and
//!   `generatePodSandboxLinuxConfig` in `pkg/kubelet/kuberuntime/kuberuntime_sandbox.go`, labels
//!   and annotations from `labels.go`, namespaces from `kuberuntime/util/util.go`).
//! - [`container`]: `CreateContainer`'s config (`generateContainerConfig` in
//!   `kuberuntime_container.go`, `generateLinuxContainerConfig` in
//!   `kuberuntime_container_linux.go`, `determineEffectiveSecurityContext` in
//!   `security_context.go`).
//! - [`env`](mod@env): the environment (`makeEnvironmentVariables` in `pkg/kubelet/kubelet_pods.go`) and
//!   `$(VAR)` expansion (`third_party/forked/golang/expansion`).
//! - [`dns`]: the sandbox's DNS config (`GetPodDNS` in `pkg/kubelet/network/dns/dns.go`).
//! - [`resources`]: the container and sandbox `LinuxContainerResources` and the OOM score
//!   (`helpers_linux.go`, `pkg/kubelet/qos/policy.go`), from [`crate::resources`]' maths.
//! - [`volumes`]: container mounts (`makeMounts`), the managed `/etc/hosts`, the termination-log
//!   file, and the on-disk side: [`volumes::plan_volumes`] / [`volumes::plan_container_files`]
//!   decide, [`volumes::prepare_volumes`] executes and [`volumes::cleanup_volumes`] undoes.
//!
//! Everything but the `prepare`/`cleanup` functions is pure: the caller passes what upstream reads
//! from the host (node IPs, memory capacity, the parsed `resolv.conf`).

pub mod container;
pub mod dns;
pub mod env;
mod host;
pub mod resources;
pub mod sandbox;
pub mod volumes;

#[cfg(test)]
mod container_tests;
#[cfg(test)]
mod dns_tests;
#[cfg(test)]
mod env_tests;
#[cfg(test)]
mod resources_tests;
#[cfg(test)]
mod sandbox_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod volumes_tests;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

pub use container::{container_config, container_log_path};
pub use dns::{ResolvConf, pod_dns_config};
pub use env::{container_env, expand};
pub use sandbox::sandbox_config;
pub use volumes::{
    VolumePlan, check_host_path, cleanup_volumes, plan_container_files, plan_volumes,
    prepare_volumes,
};

use super::plan::Target;
use crate::resources::Amounts;

/// Upstream's `ErrCreateContainerConfig`: the container's config could not be built.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// Upstream's `ErrCreatePodSandbox`: the sandbox's config could not be built.
pub const CREATE_POD_SANDBOX_ERROR: &str = "CreatePodSandboxError";
/// Upstream's `FailedMount` event reason: a volume could not be set up (containers stay waiting
/// in `ContainerCreating`).
pub const FAILED_MOUNT: &str = crate::event::reason::FAILED_MOUNT;

/// What the builders need to know about the node, as the upstream kubelet knows it.
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about the node, not a state machine"
)]
pub struct NodeContext {
    pub node_name: String,
    /// The node's IPs, primary first (`status.hostIP(s)`, and the pod IPs of hostNetwork pods).
    pub host_ips: Vec<IpAddr>,
    /// The kubelet's `rootDirectory` (`/var/lib/kubelet`).
    pub root_dir: PathBuf,
    /// The kubelet's `podLogsDir` (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    pub dns: DnsSettings,
    /// `machineInfo.MemoryCapacity`: the node's memory, for Burstable OOM score adjustments.
    pub memory_capacity_bytes: u64,
    /// Node allocatable: the default limits the downward API reports, and the size cap of
    /// memory-backed emptyDir volumes.
    pub allocatable: Amounts,
    /// `cpuCFSQuota`: whether CPU limits become a CFS quota.
    pub cpu_cfs_quota: bool,
    /// The CFS period in microseconds (`cpuCFSQuotaPeriod` when the `CustomCPUCFSQuotaPeriod`
    /// gate is on, else 100000).
    pub cpu_cfs_quota_period_us: i64,
    /// Whether the host's cgroup v2 root has `memory.swap.max`: upstream then pins every
    /// container to `memory.swap.max = 0` (`NoSwap`, the default swap behaviour).
    pub swap_controller: bool,
    /// Whether `/sys/fs/cgroup` is the unified (v2) hierarchy: `unified` resource entries such as
    /// `memory.oom.group` are only sent then (runc rejects them on v1 and hybrid hosts).
    pub cgroup_v2: bool,
    /// `MemoryQoS` (gate on, cgroup v2, kernel >= 5.9): containers get `memory.min` from their
    /// memory request and `memory.high` throttled at `memory_throttling_factor`.
    pub memory_qos: bool,
    /// `memoryThrottlingFactor`.
    pub memory_throttling_factor: f64,
}

impl NodeContext {
    /// A node with upstream's defaults for everything but its name, IPs and root directory.
    #[must_use]
    pub fn new(node_name: impl Into<String>, host_ips: Vec<IpAddr>, root_dir: PathBuf) -> Self {
        Self {
            node_name: node_name.into(),
            host_ips,
            root_dir,
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            dns: DnsSettings {
                cluster_dns: Vec::new(),
                cluster_domain: String::new(),
                resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            },
            memory_capacity_bytes: 0,
            allocatable: Amounts::default(),
            cpu_cfs_quota: true,
            cpu_cfs_quota_period_us: resources::QUOTA_PERIOD_US,
            swap_controller: false,
            cgroup_v2: true,
            memory_qos: false,
            memory_throttling_factor: 0.9,
        }
    }
}

/// The kubelet's DNS settings (`clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// `None` is upstream's `resolvConf: ""`: no host resolver file at all.
    pub resolv_conf: Option<PathBuf>,
}

/// Why a request could not be built or the host could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("pod {pod}: container {container:?}: environment variable {variable}: {reason}")]
    Env {
        pod: String,
        container: String,
        variable: String,
        reason: String,
    },
    #[error("pod {pod}: container {container:?}: {resource} {value:?}: {reason}")]
    Resource {
        pod: String,
        container: String,
        resource: String,
        value: String,
        reason: String,
    },
    #[error("pod {pod}: container {container:?}: volume mount {volume:?}: {reason}")]
    Mount {
        pod: String,
        container: String,
        volume: String,
        reason: String,
    },
    #[error("pod {pod}: container {container:?}: {reason}")]
    Container {
        pod: String,
        container: String,
        reason: String,
    },
    #[error("pod {pod}: {reason}")]
    Sandbox { pod: String, reason: String },
    #[error("resolv.conf {path}: {reason}")]
    ResolvConf { path: String, reason: String },
    #[error("pod {pod}: volume {volume:?}: {reason}")]
    Volume {
        pod: String,
        volume: String,
        reason: String,
    },
    #[error("pod {pod}: {action} {path}: {source}")]
    Io {
        pod: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SpecError {
    /// The upstream reason string for this failure: `CreateContainerConfigError` for a container
    /// config (environment, mounts, resources, security), `CreatePodSandboxError` for a sandbox
    /// config (hostname, DNS), `FailedMount` for volume setup on the host.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Env { .. }
            | Self::Resource { .. }
            | Self::Mount { .. }
            | Self::Container { .. } => CREATE_CONTAINER_CONFIG_ERROR,
            Self::Sandbox { .. } | Self::ResolvConf { .. } => CREATE_POD_SANDBOX_ERROR,
            Self::Volume { .. } | Self::Io { .. } => FAILED_MOUNT,
        }
    }
}

/// `<podLogsDir>/<namespace>_<name>_<uid>` (upstream's `BuildPodLogsDirectory`).
#[must_use]
pub fn pod_log_dir(pod_logs_dir: &Path, pod: &Pod) -> PathBuf {
    pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod_namespace(pod),
        pod_name(pod),
        pod_uid(pod)
    ))
}

/// `<rootDir>/pods/<uid>` (upstream's `getPodDir`).
#[must_use]
pub fn pod_dir(root_dir: &Path, uid: &str) -> PathBuf {
    root_dir.join("pods").join(uid)
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// `namespace/name`, how errors name a pod.
fn pod_ref(pod: &Pod) -> String {
    format!("{}/{}", pod_namespace(pod), pod_name(pod))
}

fn pod_spec(pod: &Pod) -> Result<&PodSpec, SpecError> {
    pod.spec.as_ref().ok_or_else(|| SpecError::Sandbox {
        pod: pod_ref(pod),
        reason: "the pod has no spec".to_owned(),
    })
}

/// The container a target names, and whether it is a restartable init container (a sidecar).
fn target_container(pod: &Pod, target: Target) -> Result<(&Container, bool), SpecError> {
    let spec = pod_spec(pod)?;
    let found = match target {
        Target::Init(i) => spec
            .init_containers
            .as_deref()
            .and_then(|inits| inits.get(i))
            .map(|c| (c, c.restart_policy.as_deref() == Some("Always"))),
        Target::App(i) => spec.containers.get(i).map(|c| (c, false)),
    };
    found.ok_or_else(|| SpecError::Container {
        pod: pod_ref(pod),
        container: format!("{target:?}"),
        reason: "the pod spec has no such container".to_owned(),
    })
}

/// Every container of the pod: init containers first, then app containers.
fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// Whether the pod runs in the node's network namespace.
fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod IPs as upstream uses them when starting containers: the sandbox's IPs, or the node's
/// IPs for a hostNetwork pod (`generateAPIPodStatus` reports those and `SyncPod` reuses them).
fn effective_pod_ips(pod: &Pod, sandbox_ips: &[String], node: &NodeContext) -> Vec<String> {
    if host_network(pod) {
        node.host_ips.iter().map(ToString::to_string).collect()
    } else {
        sandbox_ips.to_vec()
    }
}
