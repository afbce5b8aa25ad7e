//! Executing a [`VolumePlan`] on the host, and undoing it: the only impure part of the spec
//! builders. hostPath checks take the host root as a parameter so tests can use a temp dir.
//!
//! - Directories are created with their parents and then set to exactly their mode (upstream
//!   chmods emptyDir directories to 0777 whatever the umask).
//! - tmpfs mounts are skipped when the directory already is a tmpfs mount point, as upstream's
//!   `setupTmpfs` does.
//! - hostPath `type` checks follow `checkTypeInternal` (`pkg/volume/hostpath/host_path.go`):
//!   `DirectoryOrCreate` creates (0755), `FileOrCreate` creates an empty file (0644) in an existing
//!   directory, the others require an existing path of that type (symlinks followed).
//! - `subPath` directories are created one component at a time with the volume's mode; a symlink
//!   on the way must resolve inside the volume. Upstream additionally bind-mounts the resolved
//!   path (`PrepareSafeSubpath`) so it cannot be swapped before the runtime mounts it; this does
//!   not.
//! - Cleanup unmounts tmpfs emptyDirs, then removes the pod directory without crossing into any
//!   other file system (a mount still present is an error, not a deletion).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};

use super::volumes::{
    EMPTY_DIR_PLUGIN_DIR, FileContent, FilePlan, MANAGED_HOSTS_HEADER_HOST_NETWORK, SubPathPlan,
    TmpfsPlan, VolumeError, VolumePlan,
};
use super::{SpecError, pod_dir};

/// `HostPathType`: what a hostPath volume must be, checked by [`check_host_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    /// Parses the API value (`""` is unset).
    pub fn parse(value: Option<&str>) -> Result<Self, VolumeError> {
        Ok(match value.unwrap_or_default() {
            "" => Self::Unset,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "Directory" => Self::Directory,
            "FileOrCreate" => Self::FileOrCreate,
            "File" => Self::File,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            kind => return Err(VolumeError::HostPathType { kind: kind.into() }),
        })
    }
}

/// Why a volume cannot be set up on the host; reported as [`SpecError::Volume`] with its volume.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("inspect {}: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },
    #[error("resolve {}: {source}", path.display())]
    Resolve { path: PathBuf, source: io::Error },
    #[error("mount tmpfs on {}: {source}", path.display())]
    MountTmpfs { path: PathBuf, source: nix::Error },
    #[error("hostPath type check failed: {} is not {what}", path.display())]
    WrongType { path: PathBuf, what: &'static str },
    #[error("create directory {}: {source}", path.display())]
    CreateDirectory { path: PathBuf, source: io::Error },
    #[error("create file {}: {source}", path.display())]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("create subPath directory {}: {source}", path.display())]
    CreateSubPath { path: PathBuf, source: io::Error },
    #[error("subPath {} resolves outside its volume", path.display())]
    SubPathOutside { path: PathBuf },
    #[error("subPath component {} is not a directory", path.display())]
    SubPathNotDirectory { path: PathBuf },
}

/// Creates, mounts, checks and writes what `plan` lists. hostPath volumes and a hostNetwork pod's
/// `/etc/hosts` are looked up below `host_root` (`/` in production).
pub fn prepare_volumes(plan: &VolumePlan, host_root: &Path) -> Result<(), SpecError> {
    let io_error = |action: &'static str, path: &Path, source: io::Error| SpecError::Io {
        pod: plan.pod.clone(),
        action,
        path: path.to_path_buf(),
        source,
    };
    for dir in &plan.dirs {
        make_dir(&dir.path, dir.mode).map_err(|e| io_error("create directory", &dir.path, e))?;
    }
    for tmpfs in &plan.tmpfs {
        mount_tmpfs(tmpfs).map_err(|e| SpecError::Volume {
            pod: plan.pod.clone(),
            volume: tmpfs.volume.clone(),
            reason: e.to_string(),
        })?;
    }
    for host in &plan.host_paths {
        check_host_path(host_root, &host.path, host.kind).map_err(|e| SpecError::Volume {
            pod: plan.pod.clone(),
            volume: host.volume.clone(),
            reason: e.to_string(),
        })?;
    }
    for sub in &plan.sub_paths {
        make_sub_path(sub, host_root).map_err(|e| SpecError::Volume {
            pod: plan.pod.clone(),
            volume: sub.volume.clone(),
            reason: e.to_string(),
        })?;
    }
    for file in &plan.files {
        write_file(file, host_root).map_err(|e| io_error("write", &file.path, e))?;
    }
    Ok(())
}

fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// `path` below `host_root`.
fn under_root(host_root: &Path, path: &Path) -> PathBuf {
    let relative: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    host_root.join(relative)
}

/// Whether `path` is the root of a tmpfs mount (its device differs from its parent's).
fn is_tmpfs_mount_point(path: &Path) -> io::Result<bool> {
    let on_tmpfs = statfs(path).map_err(io::Error::from)?.filesystem_type() == TMPFS_MAGIC;
    if !on_tmpfs {
        return Ok(false);
    }
    let parent = path.parent().unwrap_or(path);
    Ok(fs::metadata(path)?.dev() != fs::metadata(parent)?.dev())
}

fn mount_tmpfs(plan: &TmpfsPlan) -> Result<(), HostError> {
    let mounted = is_tmpfs_mount_point(&plan.path).map_err(|source| HostError::Inspect {
        path: plan.path.clone(),
        source,
    })?;
    if mounted {
        return Ok(());
    }
    let options = plan.size_bytes.map(|size| format!("size={size}"));
    mount(
        Some("tmpfs"),
        &plan.path,
        Some("tmpfs"),
        MsFlags::empty(),
        options.as_deref(),
    )
    .map_err(|source| HostError::MountTmpfs {
        path: plan.path.clone(),
        source,
    })
}

/// The hostPath `type` check of `path` (a path on the host, looked up below `host_root`),
/// creating it for the `...OrCreate` types.
pub fn check_host_path(host_root: &Path, path: &Path, kind: HostPathType) -> Result<(), HostError> {
    let full = under_root(host_root, path);
    let shown = || path.to_path_buf();
    let meta = fs::metadata(&full);
    let missing = matches!(&meta, Err(e) if e.kind() == io::ErrorKind::NotFound);
    let file_type = meta.as_ref().ok().map(fs::Metadata::file_type);
    let fail = |what| {
        Err(HostError::WrongType {
            path: shown(),
            what,
        })
    };
    match kind {
        HostPathType::Unset => Ok(()),
        HostPathType::DirectoryOrCreate if missing => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&full)
            .map_err(|source| HostError::CreateDirectory {
                path: shown(),
                source,
            }),
        HostPathType::DirectoryOrCreate | HostPathType::Directory => {
            if file_type.is_some_and(|t| t.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        HostPathType::FileOrCreate if missing => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&full)
            .map(drop)
            .map_err(|source| HostError::CreateFile {
                path: shown(),
                source,
            }),
        HostPathType::FileOrCreate | HostPathType::File => {
            if file_type.is_some_and(|t| !t.is_dir()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        HostPathType::Socket => {
            if file_type.is_some_and(|t| t.is_socket()) {
                Ok(())
            } else {
                fail("a socket file")
            }
        }
        HostPathType::CharDevice => {
            if file_type.is_some_and(|t| t.is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        HostPathType::BlockDevice => {
            if file_type.is_some_and(|t| t.is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
    }
}

/// Creates the `subPath` inside its volume with the volume's mode, refusing to leave the volume.
fn make_sub_path(plan: &SubPathPlan, host_root: &Path) -> Result<(), HostError> {
    let root = &if plan.host_path {
        under_root(host_root, &plan.volume_dir)
    } else {
        plan.volume_dir.clone()
    };
    let root_meta = fs::metadata(root).map_err(|source| HostError::Inspect {
        path: root.clone(),
        source,
    })?;
    let mode = root_meta.permissions().mode() & 0o7777;
    let real_root = fs::canonicalize(root).map_err(|source| HostError::Resolve {
        path: root.clone(),
        source,
    })?;
    let mut current = root.clone();
    let parts: Vec<Component<'_>> = plan.sub_path.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            continue;
        };
        current.push(name);
        let shown = || current.clone();
        match fs::symlink_metadata(&current) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(mode)
                    .create(&current)
                    .and_then(|()| fs::set_permissions(&current, fs::Permissions::from_mode(mode)))
                    .map_err(|source| HostError::CreateSubPath {
                        path: shown(),
                        source,
                    })?;
            }
            Err(source) => {
                return Err(HostError::Inspect {
                    path: shown(),
                    source,
                });
            }
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::canonicalize(&current).map_err(|source| HostError::Resolve {
                    path: shown(),
                    source,
                })?;
                if !target.starts_with(&real_root) {
                    return Err(HostError::SubPathOutside { path: shown() });
                }
            }
            Ok(meta) if !meta.is_dir() && i + 1 < parts.len() => {
                return Err(HostError::SubPathNotDirectory { path: shown() });
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

fn write_file(plan: &FilePlan, host_root: &Path) -> io::Result<()> {
    let content = match &plan.content {
        FileContent::Bytes(bytes) => bytes.clone(),
        FileContent::NodeHosts { aliases } => {
            let node_hosts = fs::read(under_root(host_root, Path::new("/etc/hosts")))?;
            let mut out = MANAGED_HOSTS_HEADER_HOST_NETWORK.as_bytes().to_vec();
            out.extend_from_slice(&node_hosts);
            out.extend_from_slice(aliases.as_bytes());
            out
        }
    };
    fs::write(&plan.path, content)?;
    fs::set_permissions(&plan.path, fs::Permissions::from_mode(plan.mode))
}

/// Unmounts the pod's tmpfs emptyDir volumes and removes `<rootDir>/pods/<uid>`. Nothing to do
/// when the directory is gone. Fails, removing nothing more, when a mount point is left below it.
pub fn cleanup_volumes(root_dir: &Path, uid: &str) -> Result<(), SpecError> {
    let pod = format!("uid {uid}");
    let dir = pod_dir(root_dir, uid);
    if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
        return Err(SpecError::Io {
            pod,
            action: "clean up",
            path: dir,
            source: io::Error::new(io::ErrorKind::InvalidInput, "invalid pod UID"),
        });
    }
    let io_error = |action: &'static str, path: &Path, source: io::Error| SpecError::Io {
        pod: pod.clone(),
        action,
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("inspect", &dir, e)),
        Ok(meta) => meta,
    };
    let empty_dirs = dir.join("volumes").join(EMPTY_DIR_PLUGIN_DIR);
    if let Ok(base) = fs::symlink_metadata(&empty_dirs)
        && base.is_dir()
    {
        let entries = fs::read_dir(&empty_dirs).map_err(|e| io_error("list", &empty_dirs, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io_error("list", &empty_dirs, e))?.path();
            let child = fs::symlink_metadata(&path).map_err(|e| io_error("inspect", &path, e))?;
            if child.is_dir() && child.dev() != base.dev() {
                umount2(&path, MntFlags::empty()).map_err(|e| SpecError::Volume {
                    pod: pod.clone(),
                    volume: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    reason: format!("unmount {}: {e}", path.display()),
                })?;
            }
        }
    }
    remove_tree(&dir, meta.dev()).map_err(|e| io_error("remove", &dir, e))
}

/// Removes `path` and everything below it, refusing to enter another file system.
fn remove_tree(path: &Path, dev: u64) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.dev() != dev {
        return Err(io::Error::other(format!(
            "{} is still a mount point",
            path.display()
        )));
    }
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path(), dev)?;
    }
    fs::remove_dir(path)
}
