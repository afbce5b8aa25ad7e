//! The cgroup v2 filesystem under one mount point: creating and removing cgroups, enabling
//! controllers down the tree, and reading and writing interface files with errors that name the
//! file, the value and the errno (`Documentation/admin-guide/cgroup-v2.rst`).
//!
//! Cgroups are named as the cgroupfs driver names them: absolute paths from the mount,
//! `/kubepods/burstable/pod<uid>`, which is also the `cgroup_parent` CRI receives.
use std::{
    collections::BTreeSet,
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::CgroupError;

/// How the machine mounts cgroups, as upstream's `IsCgroup2UnifiedMode` and systemd tell them
/// apart with `statfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// `/sys/fs/cgroup` is cgroup2: every controller is available to v2.
    Unified,
    /// v1 controllers with a controller-less v2 hierarchy beside them (systemd's hybrid mode).
    Hybrid { unified: PathBuf },
    /// v1 only.
    Legacy,
}

impl Setup {
    /// Detects the setup of the cgroup mount at `mount` (normally `/sys/fs/cgroup`).
    #[must_use]
    pub fn detect(mount: &Path) -> Self {
        let unified = mount.join("unified");
        Self::classify(fs_type(mount), fs_type(&unified), unified)
    }

    /// The decision itself, from the filesystem types of `mount` and `mount/unified`.
    #[must_use]
    pub fn classify(mount: Option<FsType>, unified_type: Option<FsType>, unified: PathBuf) -> Self {
        match (mount, unified_type) {
            (Some(FsType::Cgroup2), _) => Self::Unified,
            (_, Some(FsType::Cgroup2)) => Self::Hybrid { unified },
            _ => Self::Legacy,
        }
    }
}

/// The filesystem types [`Setup::classify`] distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Cgroup2,
    Other,
}

fn fs_type(path: &Path) -> Option<FsType> {
    let stat = nix::sys::statfs::statfs(path).ok()?;
    Some(
        if stat.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            FsType::Cgroup2
        } else {
            FsType::Other
        },
    )
}

/// A cgroup v2 hierarchy rooted at `mount` (tests use a temp dir laid out like one).
#[derive(Debug, Clone)]
pub struct Cgroupfs {
    mount: PathBuf,
}

impl Cgroupfs {
    #[must_use]
    pub fn new(mount: impl Into<PathBuf>) -> Self {
        Self {
            mount: mount.into(),
        }
    }

    #[must_use]
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The directory of cgroup `name` (`/kubepods/pod<uid>`).
    #[must_use]
    pub fn dir(&self, name: &str) -> PathBuf {
        self.mount.join(name.trim_start_matches('/'))
    }

    #[must_use]
    pub fn exists(&self, name: &str) -> bool {
        self.dir(name).is_dir()
    }

    /// The controllers available to cgroup `name` (its `cgroup.controllers`).
    pub fn controllers(&self, name: &str) -> Result<BTreeSet<String>, CgroupError> {
        Ok(words(&self.read(name, "cgroup.controllers")?))
    }

    /// Makes `wanted` controllers available inside `name`: each level, from the mount down to
    /// `name` itself, gets them in `cgroup.subtree_control` when it has them and lacks them (what
    /// a level has is what its parent enables; the mount has its `cgroup.controllers`).
    /// Controllers the hierarchy does not offer are skipped; [`Self::controllers`] tells which.
    pub fn enable_controllers(&self, name: &str, wanted: &[&str]) -> Result<(), CgroupError> {
        let mut levels = vec![String::from("/")];
        let mut current = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            levels.push(current.clone());
        }
        let mut available = self.controllers("/")?;
        for level in levels {
            let mut enabled = self.subtree_control(&level)?;
            let missing: Vec<&str> = wanted
                .iter()
                .copied()
                .filter(|c| available.contains(*c) && !enabled.contains(*c))
                .collect();
            if !missing.is_empty() {
                let value: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
                self.write(&level, "cgroup.subtree_control", &value.join(" "))?;
                enabled.extend(missing.iter().map(|c| (*c).to_owned()));
            }
            available = enabled;
        }
        Ok(())
    }

    /// The controllers `name` enables for its children; a cgroup created a moment ago in a temp
    /// dir has no file yet and enables none.
    fn subtree_control(&self, name: &str) -> Result<BTreeSet<String>, CgroupError> {
        match self.read(name, "cgroup.subtree_control") {
            Ok(text) => Ok(words(&text)),
            Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(BTreeSet::new())
            }
            Err(error) => Err(error),
        }
    }

    /// Creates cgroup `name` and its missing ancestors; true when it did not exist.
    pub fn create(&self, name: &str) -> Result<bool, CgroupError> {
        let dir = self.dir(name);
        if dir.is_dir() {
            return Ok(false);
        }
        fs::create_dir_all(&dir).map_err(|source| CgroupError::Create { dir, source })?;
        Ok(true)
    }

    /// Reads interface file `file` of cgroup `name`.
    pub fn read(&self, name: &str, file: &str) -> Result<String, CgroupError> {
        let path = self.dir(name).join(file);
        fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
    }

    /// Writes `value` to interface file `file` of cgroup `name`. The error names the file, the
    /// value and the errno, and says when the file is missing (its controller is not enabled).
    pub fn write(&self, name: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir(name).join(file);
        fs::write(&path, value).map_err(|source| {
            if path.exists() || !self.dir(name).is_dir() {
                CgroupError::Write {
                    path,
                    value: value.to_owned(),
                    source,
                }
            } else {
                CgroupError::MissingFile {
                    path,
                    value: value.to_owned(),
                }
            }
        })
    }

    /// The child cgroups of `name`, by directory name.
    pub fn children(&self, name: &str) -> Result<Vec<String>, CgroupError> {
        let dir = self.dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CgroupError::Read { path: dir, source }),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Read {
                path: dir.clone(),
                source,
            })?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                children.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        children.sort();
        Ok(children)
    }

    /// Removes cgroup `name` and every cgroup below it. Processes still inside are killed with
    /// `cgroup.kill` (kernel >= 5.14) and waited for through `cgroup.events`, for at most
    /// `timeout`. A cgroup that is already gone is not an error.
    pub fn remove(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        let dir = self.dir(name);
        if !dir.is_dir() {
            return Ok(());
        }
        if populated(&dir) {
            self.write(name, "cgroup.kill", "1")?;
            wait_unpopulated(&dir, timeout)?;
        }
        self.remove_tree(name)
    }

    fn remove_tree(&self, name: &str) -> Result<(), CgroupError> {
        for child in self.children(name)? {
            self.remove_tree(&format!("{}/{child}", name.trim_end_matches('/')))?;
        }
        let dir = self.dir(name);
        match fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            // A temp dir standing in for cgroupfs holds regular files; real cgroups never do.
            Err(error) if error.raw_os_error() == Some(libc_enotempty()) && !is_cgroupfs(&dir) => {
                fs::remove_dir_all(&dir).map_err(|source| CgroupError::Remove { dir, source })
            }
            Err(source) => Err(CgroupError::Remove { dir, source }),
        }
    }
}

fn libc_enotempty() -> i32 {
    nix::errno::Errno::ENOTEMPTY as i32
}

fn is_cgroupfs(dir: &Path) -> bool {
    fs_type(dir) == Some(FsType::Cgroup2)
}

/// Whether `cgroup.events` says processes live in the cgroup or below; a missing file (a temp
/// dir, or a cgroup removed meanwhile) counts as empty.
fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|events| events.lines().any(|line| line.trim() == "populated 1"))
}

/// Waits until `dir` has no processes. The kernel signals every change of `cgroup.events` as a
/// file modification, so this sleeps on inotify instead of polling the file.
fn wait_unpopulated(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let events = dir.join("cgroup.events");
    let timed_out = || CgroupError::Busy {
        dir: dir.to_owned(),
        waited: timeout,
    };
    let mut inotify = inotify::Inotify::init().map_err(|source| CgroupError::Read {
        path: events.clone(),
        source,
    })?;
    inotify
        .watches()
        .add(&events, inotify::WatchMask::MODIFY)
        .map_err(|source| CgroupError::Read {
            path: events.clone(),
            source,
        })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = [0_u8; 1024];
    while populated(dir) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                // Drain; the loop re-reads the file itself.
                let _ = inotify.read_events(&mut buffer);
            }
            Err(errno) => {
                return Err(CgroupError::Read {
                    path: events,
                    source: errno.into(),
                });
            }
        }
    }
    Ok(())
}

/// The whitespace-separated words of an interface file, `+` prefixes dropped.
fn words(text: &str) -> BTreeSet<String> {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('+').to_owned())
        .collect()
}
