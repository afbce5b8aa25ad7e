//! What of a fixture is on the host, read from `/proc` and `/sys`: processes naming its base
//! directory, mounts below it, its cgroups in every hierarchy, its bridge and the bridge's
//! ports, and libcni's cached results for its pods. Teardown removes these; `leaks` lists them.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::NAMESPACE;
use super::layout::Layout;

/// libcni's default cache directory (containerd's CRI plugin does not configure another).
const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";
/// go-cni's loopback network, which the CRI plugin attaches to every pod before ours.
const LOOPBACK_RESULT_PREFIX: &str = "cni-loopback-";

/// The UTF-8 names in directory `dir`; none if it cannot be read.
pub(super) fn entry_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

// Processes

/// Live processes other than this one whose command line names the fixture's base directory
/// or something below it (containerd, its shims, runc).
pub(super) fn processes_of(layout: &Layout) -> Vec<(u32, Vec<String>)> {
    let base = layout.base.display().to_string();
    let base_prefix = format!("{base}/");
    let me = std::process::id();
    let mut found = Vec::new();
    for pid in entry_names(Path::new("/proc"))
        .iter()
        .filter_map(|name| name.parse::<u32>().ok())
    {
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .iter()
            .any(|a| *a == base || a.starts_with(&base_prefix))
        {
            found.push((pid, args));
        }
    }
    found
}

/// containerd, its shims and runc: what teardown may kill when it names the base directory.
pub(super) fn is_runtime_tool(args: &[String]) -> bool {
    args.first()
        .and_then(|argv0| Path::new(argv0).file_name())
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("containerd") || name == "runc")
}

/// Alive and not a zombie (nothing may reap zombies promptly when PID 1 is not an init).
pub(super) fn pid_alive(pid: u32) -> bool {
    stat_after_comm(pid).is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub(super) fn process_start(pid: u32) -> Option<u64> {
    // The rest starts at field 3 (state); field 22 is the 20th from there.
    stat_after_comm(pid)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// `/proc/<pid>/stat` from field 3 (the state) on: the command name before it may hold spaces
/// and parentheses, so the split is at the last `)`.
fn stat_after_comm(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.trim_start().to_owned())
}

/// Sends `signal` to `pid`; a process that is gone already is no error.
pub(super) fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

// Mounts

/// Mount points strictly below `base`, from `/proc/self/mountinfo`.
pub(super) fn mounts_under(base: &Path) -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|(point, _)| point.starts_with(base) && point != base)
        .map(|(point, _)| point)
        .collect()
}

pub(super) fn is_mount_point(path: &Path) -> bool {
    mountinfo().iter().any(|(point, _)| point == path)
}

/// `(mount point, filesystem type)` of every mount.
fn mountinfo() -> Vec<(PathBuf, String)> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            let fstype = line.split_once(" - ")?.1.split(' ').next()?;
            Some((PathBuf::from(unescape_mountinfo(point)), fstype.to_owned()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(digits) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(value) = u8::from_str_radix(digits, 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sorts `paths` so that each comes before the paths it is below: the order to unmount or
/// remove them in.
pub(super) fn deepest_first(paths: &mut [PathBuf]) {
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
}

// Cgroups

/// The fixture's cgroups that exist: `/kernlet-<id>` and `/k8s.io/<known id>` in every
/// hierarchy (v1 controllers, named v1 hierarchies, v2).
pub(super) fn cgroups_of(layout: &Layout, ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let parent = layout.cgroup_parent();
    let parent = parent.trim_start_matches('/');
    let mut found = Vec::new();
    let hierarchies = mountinfo()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2");
    for (mount, _) in hierarchies {
        let ours = mount.join(parent);
        if ours.is_dir() {
            found.push(ours);
        }
        for id in ids {
            let dir = mount.join(NAMESPACE).join(id);
            if dir.is_dir() {
                found.push(dir);
            }
        }
    }
    found
}

/// The processes in cgroup `dir` itself.
pub(super) fn cgroup_pids(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live processes in cgroup `top` and below.
pub(super) fn cgroup_tree_pids(top: &Path) -> Vec<u32> {
    subdirs(top)
        .iter()
        .flat_map(|d| cgroup_pids(d))
        .filter(|&pid| pid_alive(pid))
        .collect()
}

/// `top` and every directory below it (none if `top` is not a directory).
pub(super) fn subdirs(top: &Path) -> Vec<PathBuf> {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        if !dir.is_dir() {
            return;
        }
        out.push(dir.to_path_buf());
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    collect(&entry.path(), out);
                }
            }
        }
    }
    let mut dirs = Vec::new();
    collect(top, &mut dirs);
    dirs
}

// Network

pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Links enslaved to `bridge`.
pub(super) fn bridge_ports(bridge: &str) -> Vec<String> {
    entry_names(&Path::new("/sys/class/net").join(bridge).join("brif"))
}

/// libcni's cached results of the fixture's pods: `<network>-<sandbox id>-<ifname>` for the
/// fixture's network and `cni-loopback-<sandbox id>-lo` for the loopback network the CRI plugin
/// adds to every pod.
pub(super) fn cni_result_files(layout: &Layout, ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let network = format!("{}-", layout.network());
    let ours = |name: &String| {
        name.starts_with(&network)
            || name
                .strip_prefix(LOOPBACK_RESULT_PREFIX)
                .and_then(|rest| rest.rsplit_once('-'))
                .is_some_and(|(id, _)| ids.contains(id))
    };
    entry_names(Path::new(CNI_RESULTS_DIR))
        .into_iter()
        .filter(ours)
        .map(|name| Path::new(CNI_RESULTS_DIR).join(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c\134d"), "/a b/c\\d");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn deepest_paths_come_first() {
        let mut paths = ["/a", "/a/b/c", "/a/b"].map(PathBuf::from);
        deepest_first(&mut paths);
        assert_eq!(paths, ["/a/b/c", "/a/b", "/a"].map(PathBuf::from));
    }
}
