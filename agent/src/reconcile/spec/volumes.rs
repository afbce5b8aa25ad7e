//! Container mounts and what must exist on the host for them, after upstream's `makeMounts`,
//! `makeHostsMount` and `ensureHostsFile` (`pkg/kubelet/kubelet_pods.go`), the emptyDir and
//! hostPath volume plugins (`pkg/volume/emptydir`, `pkg/volume/hostpath`), `makePodDataDirs`,
//! and the termination-log mount of `kuberuntime_container.go`.
//!
//! - `emptyDir`: `<rootDir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>`, mode 0777;
//!   `medium: Memory` mounts a tmpfs there, sized like `calculateEmptyDirMemorySize` (node
//!   allocatable, else the pod's memory limit when every container has one, else `sizeLimit`,
//!   whichever is smallest and positive).
//! - `hostPath`: the path itself, after the `type` check (see [`check_host_path`]).
//! - Mounts: read-only as `readOnly`, `subPath` (or `subPathExpr` expanded with the container's
//!   environment) joined below the volume, relative and `..`-free, created with the volume's mode;
//!   propagation `None`/unset -> private, `HostToContainer`, `Bidirectional`.
//! - `/etc/hosts`: once the pod has IPs, unless a volume is mounted there, `<podDir>/etc-hosts`
//!   is mounted: localhost lines plus one `IP\thostname` line per pod IP (with the FQDN when the
//!   pod has a subdomain), or, for hostNetwork pods, the node's `/etc/hosts`; host aliases follow.
//! - The termination log: upstream mounts `<podDir>/containers/<name>/<random 8 hex>`; here the
//!   file name is the restart count as 8 hex digits, so the path is deterministic per instance.
//!
//! Other volume types (configMap, secret, projected, downwardAPI, PVCs, image, ...) are refused:
//! a standalone node has no API server to fill them. `SELinux` relabelling is never requested and
//! `recursiveReadOnly: Enabled` is refused (runtime support is not probed); `IfPossible` is off.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume, VolumeMount};
use kernlet_cri::v1;

use super::env::{container_env, env_map, expand};
use super::resources::{pod_limits, pod_overhead, quantity_value};
use super::sandbox::pod_hostname_and_domain;
use super::{
    NodeContext, SpecError, effective_pod_ips, host_network, pod_dir, pod_log_dir, pod_ref,
    pod_spec, pod_uid, target_container,
};
use crate::reconcile::plan::Target;

pub use super::host::{HostPathType, check_host_path, cleanup_volumes, prepare_volumes};

/// The plugin directory name of emptyDir volumes.
pub const EMPTY_DIR_PLUGIN_DIR: &str = "kubernetes.io~empty-dir";
const ETC_HOSTS: &str = "/etc/hosts";
const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// The header of a hostNetwork pod's hosts file, followed by the node's `/etc/hosts`.
pub const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str =
    "# Kubernetes-managed hosts file (host network).\n";

/// What to create, mount, check and write on the host; executed by [`prepare_volumes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePlan {
    /// `namespace/name` of the pod, for error messages.
    pub pod: String,
    /// Directories to create (parents included), each then set to exactly its mode.
    pub dirs: Vec<DirPlan>,
    /// Memory-backed emptyDir volumes: a tmpfs to mount on the (already created) directory.
    pub tmpfs: Vec<TmpfsPlan>,
    /// hostPath volumes whose `type` must be checked (and maybe created).
    pub host_paths: Vec<HostPathPlan>,
    /// `subPath` directories to create inside their volume.
    pub sub_paths: Vec<SubPathPlan>,
    /// Files to (re)write.
    pub files: Vec<FilePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPlan {
    pub path: PathBuf,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsPlan {
    pub volume: String,
    pub path: PathBuf,
    /// The `size=` option; `None` leaves the kernel default (half of RAM).
    pub size_bytes: Option<i64>,
}

/// Why a volume or mount of the spec is refused; reported as [`SpecError::Volume`] or
/// [`SpecError::Mount`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("{kind} is an invalid volume type")]
    HostPathType { kind: String },
    #[error("emptyDir medium {medium:?} is not supported")]
    Medium { medium: String },
    #[error("invalid HostPath `{path}`: must not contain '..'")]
    Backsteps { path: String },
    #[error(
        "{kind} volumes are not supported by a standalone node agent (only emptyDir and hostPath)"
    )]
    Unsupported { kind: &'static str },
    #[error("invalid MountPropagation mode: {mode:?}")]
    Propagation { mode: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathPlan {
    pub volume: String,
    /// The path as the pod names it (on the host root).
    pub path: PathBuf,
    pub kind: HostPathType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPathPlan {
    pub volume: String,
    /// The volume's directory.
    pub volume_dir: PathBuf,
    /// Whether `volume_dir` is a hostPath (looked up below the host root) rather than a
    /// directory kernlet manages.
    pub host_path: bool,
    /// Relative, without `..`.
    pub sub_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlan {
    pub path: PathBuf,
    pub mode: u32,
    pub content: FileContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// Exactly these bytes (empty truncates).
    Bytes(Vec<u8>),
    /// A hostNetwork pod's hosts file: the header, the node's `/etc/hosts` (read below the host
    /// root at preparation time), then these host-alias lines.
    NodeHosts { aliases: String },
}

/// Where a volume lives on the host.
enum Source {
    EmptyDir { dir: PathBuf, memory: bool },
    HostPath { path: PathBuf, kind: HostPathType },
}

/// `<podDir>/volumes/kubernetes.io~empty-dir/<volume>`.
#[must_use]
pub fn empty_dir_path(root_dir: &Path, uid: &str, volume: &str) -> PathBuf {
    pod_dir(root_dir, uid)
        .join("volumes")
        .join(EMPTY_DIR_PLUGIN_DIR)
        .join(volume)
}

/// `<podDir>/etc-hosts`.
#[must_use]
pub fn etc_hosts_path(root_dir: &Path, uid: &str) -> PathBuf {
    pod_dir(root_dir, uid).join("etc-hosts")
}

/// The termination-log file of one container instance:
/// `<podDir>/containers/<name>/<restartCount as 8 hex digits>`.
#[must_use]
pub fn termination_log_path(root_dir: &Path, uid: &str, name: &str, restart_count: u32) -> PathBuf {
    pod_dir(root_dir, uid)
        .join("containers")
        .join(name)
        .join(format!("{restart_count:08x}"))
}

fn source(pod: &Pod, volume: &Volume, node: &NodeContext) -> Result<Source, VolumeError> {
    if let Some(empty) = &volume.empty_dir {
        let memory = match empty.medium.as_deref().unwrap_or_default() {
            "" => false,
            "Memory" => true,
            medium => {
                return Err(VolumeError::Medium {
                    medium: medium.into(),
                });
            }
        };
        let dir = empty_dir_path(&node.root_dir, pod_uid(pod), &volume.name);
        return Ok(Source::EmptyDir { dir, memory });
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if has_backsteps(&path) {
            let path = host.path.clone();
            return Err(VolumeError::Backsteps { path });
        }
        let kind = HostPathType::parse(host.type_.as_deref())?;
        return Ok(Source::HostPath { path, kind });
    }
    let kind = volume_kind(volume);
    Err(VolumeError::Unsupported { kind })
}

/// The API name of a volume's source, for messages.
fn volume_kind(volume: &Volume) -> &'static str {
    let kinds = [
        (volume.config_map.is_some(), "configMap"),
        (volume.secret.is_some(), "secret"),
        (volume.projected.is_some(), "projected"),
        (volume.downward_api.is_some(), "downwardAPI"),
        (
            volume.persistent_volume_claim.is_some(),
            "persistentVolumeClaim",
        ),
        (volume.ephemeral.is_some(), "ephemeral"),
        (volume.image.is_some(), "image"),
        (volume.csi.is_some(), "csi"),
        (volume.nfs.is_some(), "nfs"),
    ];
    kinds
        .into_iter()
        .find_map(|(hit, name)| hit.then_some(name))
        .unwrap_or("these")
}

fn has_backsteps(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

/// `calculateEmptyDirMemorySize`.
fn tmpfs_size(pod: &Pod, volume: &Volume, node: &NodeContext) -> Result<Option<i64>, SpecError> {
    let mut size = node.allocatable.memory_bytes.unwrap_or(0);
    let spec = pod_spec(pod)?;
    let all_limited = super::all_containers(spec).all(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .is_some_and(|q| {
                q.0.parse::<crate::config::Quantity>()
                    .is_ok_and(|q| !q.is_zero())
            })
    });
    if all_limited {
        let limit = pod_limits(pod)?.memory_bytes.unwrap_or(0)
            + pod_overhead(pod)?.memory_bytes.unwrap_or(0);
        if limit > 0 && limit <= size {
            size = limit;
        }
    }
    let size_limit = volume
        .empty_dir
        .as_ref()
        .and_then(|e| e.size_limit.as_ref());
    if let Some(limit) = size_limit {
        let bytes = quantity_value(limit)
            .map_err(|reason| SpecError::Volume {
                pod: pod_ref(pod),
                volume: volume.name.clone(),
                reason: format!("sizeLimit: {reason}"),
            })?
            .value();
        if bytes > 0 && bytes <= size {
            size = bytes;
        }
    }
    Ok((size > 0).then_some(size))
}

/// The pod-level plan: the pod's directories (`makePodDataDirs`), its log directory, emptyDir
/// directories and tmpfs mounts, and hostPath checks. Run before the sandbox is created.
pub fn plan_volumes(pod: &Pod, node: &NodeContext) -> Result<VolumePlan, SpecError> {
    let spec = pod_spec(pod)?;
    let dir = pod_dir(&node.root_dir, pod_uid(pod));
    let mut plan = VolumePlan {
        pod: pod_ref(pod),
        dirs: vec![
            DirPlan {
                path: dir.clone(),
                mode: 0o750,
            },
            DirPlan {
                path: dir.join("volumes"),
                mode: 0o750,
            },
            DirPlan {
                path: dir.join("plugins"),
                mode: 0o750,
            },
            DirPlan {
                path: pod_log_dir(&node.pod_logs_dir, pod),
                mode: 0o755,
            },
        ],
        ..VolumePlan::default()
    };
    for volume in spec.volumes.iter().flatten() {
        let found = source(pod, volume, node).map_err(|e| SpecError::Volume {
            pod: pod_ref(pod),
            volume: volume.name.clone(),
            reason: e.to_string(),
        })?;
        match found {
            Source::EmptyDir { dir, memory } => {
                if memory {
                    plan.tmpfs.push(TmpfsPlan {
                        volume: volume.name.clone(),
                        path: dir.clone(),
                        size_bytes: tmpfs_size(pod, volume, node)?,
                    });
                }
                plan.dirs.push(DirPlan {
                    path: dir,
                    mode: 0o777,
                });
            }
            Source::HostPath { path, kind } => plan.host_paths.push(HostPathPlan {
                volume: volume.name.clone(),
                path,
                kind,
            }),
        }
    }
    Ok(plan)
}

/// The container-level plan for one instance of `target`: its log directory, the termination-log
/// file (emptied), `subPath` directories and, once the pod has IPs, the managed `/etc/hosts`.
/// Run before each `CreateContainer`, as upstream rewrites the hosts file each time.
pub fn plan_container_files(
    pod: &Pod,
    target: Target,
    restart_count: u32,
    pod_ips: &[String],
    node: &NodeContext,
) -> Result<VolumePlan, SpecError> {
    let (container, _) = target_container(pod, target)?;
    let pod_ips = effective_pod_ips(pod, pod_ips, node);
    let uid = pod_uid(pod);
    let mut plan = VolumePlan {
        pod: pod_ref(pod),
        dirs: vec![DirPlan {
            path: pod_log_dir(&node.pod_logs_dir, pod).join(&container.name),
            mode: 0o755,
        }],
        ..VolumePlan::default()
    };
    if has_termination_log(container) {
        let path = termination_log_path(&node.root_dir, uid, &container.name, restart_count);
        if let Some(parent) = path.parent() {
            plan.dirs.push(DirPlan {
                path: parent.to_path_buf(),
                mode: 0o750,
            });
        }
        plan.files.push(FilePlan {
            path,
            mode: 0o666,
            content: FileContent::Bytes(Vec::new()),
        });
    }
    let envs = container_env(pod, container, &pod_ips, node)?;
    let vars = env_map(&envs);
    for mount in container.volume_mounts.iter().flatten() {
        let (volume_dir, host_path, sub_path) = resolve_mount(pod, container, mount, &vars, node)?;
        if let Some(sub_path) = sub_path {
            plan.sub_paths.push(SubPathPlan {
                volume: mount.name.clone(),
                volume_dir,
                host_path,
                sub_path,
            });
        }
    }
    if mounts_etc_hosts(container, &pod_ips) {
        let content = if host_network(pod) {
            FileContent::NodeHosts {
                aliases: host_alias_lines(pod),
            }
        } else {
            let (hostname, domain) = pod_hostname_and_domain(pod, &node.dns.cluster_domain)?;
            FileContent::Bytes(
                managed_hosts_content(pod, &pod_ips, &hostname, &domain).into_bytes(),
            )
        };
        plan.files.push(FilePlan {
            path: etc_hosts_path(&node.root_dir, uid),
            mode: 0o644,
            content,
        });
    }
    Ok(plan)
}

fn has_termination_log(container: &Container) -> bool {
    container
        .termination_message_path
        .as_deref()
        .is_some_and(|p| !p.is_empty())
}

/// `shouldMountHostsFile`, minus containers that mount something at `/etc/hosts` themselves.
fn mounts_etc_hosts(container: &Container, pod_ips: &[String]) -> bool {
    !pod_ips.is_empty()
        && !container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == ETC_HOSTS)
}

/// `managedHostsFileContent`.
#[must_use]
pub fn managed_hosts_content(
    pod: &Pod,
    pod_ips: &[String],
    hostname: &str,
    domain: &str,
) -> String {
    let mut out = String::from(MANAGED_HOSTS_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        let _ = if domain.is_empty() {
            writeln!(out, "{ip}\t{hostname}")
        } else {
            writeln!(out, "{ip}\t{hostname}.{domain}\t{hostname}")
        };
    }
    out.push_str(&host_alias_lines(pod));
    out
}

/// `hostsEntriesFromHostAliases`.
fn host_alias_lines(pod: &Pod) -> String {
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_deref());
    let Some(aliases) = aliases.filter(|a| !a.is_empty()) else {
        return String::new();
    };
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        let _ = writeln!(out, "{}\t{names}", alias.ip);
    }
    out
}

/// The volume's host directory (or file), whether it is a hostPath, and the validated `subPath`
/// of one volume mount.
fn resolve_mount(
    pod: &Pod,
    container: &Container,
    mount: &VolumeMount,
    vars: &std::collections::HashMap<&str, &str>,
    node: &NodeContext,
) -> Result<(PathBuf, bool, Option<PathBuf>), SpecError> {
    let error = |reason: String| SpecError::Mount {
        pod: pod_ref(pod),
        container: container.name.clone(),
        volume: mount.name.clone(),
        reason,
    };
    let spec = pod_spec(pod)?;
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| {
            error(format!(
                "cannot find volume {:?} to mount into container {:?}",
                mount.name, container.name
            ))
        })?;
    let (host, is_host_path) = match source(pod, volume, node).map_err(|e| error(e.to_string()))? {
        Source::EmptyDir { dir, .. } => (dir, false),
        Source::HostPath { path, .. } => (path, true),
    };
    let mut sub_path = mount.sub_path.clone().unwrap_or_default();
    if let Some(expr) = mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        let mut missing: Vec<String> = Vec::new();
        sub_path = expand(expr, |name| match vars.get(name) {
            Some(value) if !value.is_empty() => (*value).to_owned(),
            _ => {
                missing.push(name.to_owned());
                String::new()
            }
        });
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(error(format!("missing value for {}", missing.join(", "))));
        }
    }
    if sub_path.is_empty() {
        return Ok((host, is_host_path, None));
    }
    let relative = PathBuf::from(&sub_path);
    if relative.is_absolute() {
        return Err(error(format!(
            "subPath `{sub_path}` must not be an absolute path"
        )));
    }
    if has_backsteps(&relative) {
        return Err(error(format!(
            "unable to provision subPath `{sub_path}`: must not contain '..'"
        )));
    }
    Ok((host, is_host_path, Some(relative)))
}

/// `translateMountPropagation`.
fn propagation(mode: Option<&str>) -> Result<v1::MountPropagation, VolumeError> {
    match mode {
        None | Some("None") => Ok(v1::MountPropagation::PropagationPrivate),
        Some("HostToContainer") => Ok(v1::MountPropagation::PropagationHostToContainer),
        Some("Bidirectional") => Ok(v1::MountPropagation::PropagationBidirectional),
        Some(mode) => Err(VolumeError::Propagation { mode: mode.into() }),
    }
}

/// `makeMounts` plus the termination-log mount: the CRI mounts of one container instance.
pub fn container_mounts(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    pod_ips: &[String],
    node: &NodeContext,
    envs: &[v1::KeyValue],
) -> Result<Vec<v1::Mount>, SpecError> {
    let vars = env_map(envs);
    let uid = pod_uid(pod);
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let error = |reason: String| SpecError::Mount {
            pod: pod_ref(pod),
            container: container.name.clone(),
            volume: mount.name.clone(),
            reason,
        };
        let (host, _, sub_path) = resolve_mount(pod, container, mount, &vars, node)?;
        let host_path = sub_path.map_or_else(|| host.clone(), |s| host.join(s));
        let container_path = if mount.mount_path.starts_with('/') {
            mount.mount_path.clone()
        } else {
            format!("/{}", mount.mount_path)
        };
        let read_only = mount.read_only.unwrap_or(false);
        if mount.recursive_read_only.as_deref() == Some("Enabled") {
            return Err(error(
                "recursiveReadOnly: Enabled is not supported (the runtime's support is not \
                 known); use IfPossible or Disabled"
                    .to_owned(),
            ));
        }
        mounts.push(v1::Mount {
            container_path,
            host_path: host_path.display().to_string(),
            readonly: read_only,
            propagation: propagation(mount.mount_propagation.as_deref())
                .map_err(|e| error(e.to_string()))?
                .into(),
            ..Default::default()
        });
    }
    if mounts_etc_hosts(container, pod_ips) {
        mounts.push(v1::Mount {
            container_path: ETC_HOSTS.to_owned(),
            host_path: etc_hosts_path(&node.root_dir, uid).display().to_string(),
            ..Default::default()
        });
    }
    if let Some(path) = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        let container_path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        mounts.push(v1::Mount {
            container_path,
            host_path: termination_log_path(&node.root_dir, uid, &container.name, restart_count)
                .display()
                .to_string(),
            ..Default::default()
        });
    }
    Ok(mounts)
}
