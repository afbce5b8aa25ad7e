//! Shared helpers for kernlet's integration tests: finding the cgroup v2 mount and making
//! throw-away cgroups that are removed (processes killed first) when dropped.
//!
//! Test tiers (see docs/dev.md): `host_*` tests need root and the host's containerd/eBPF, `vm_*`
//! and `vm` tests need the node VM; both are `#[ignore]`d so a plain `cargo test` runs only what
//! needs nothing, and `cargo xtask test` runs every tier.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

pub mod node;
pub mod scrape;
pub mod stream;

/// The cgroup v2 mount point: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            (fstype == "cgroup2").then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup2 filesystem is mounted")
}

/// A cgroup v2 directory owned by a test.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/<name>-<pid>`.
    pub fn create(name: &str) -> Result<Self> {
        let path = cgroup2_mount()?.join(format!("{name}-{}", std::process::id()));
        if path.exists() {
            remove_cgroup(&path)?;
        }
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id eBPF sees: the directory's inode number.
    pub fn id(&self) -> Result<u64> {
        Ok(fs::metadata(&self.path)?.ino())
    }

    /// Moves process `pid` into this cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .with_context(|| format!("moving pid {pid} into {}", procs.display()))
    }

    /// Creates the child cgroup `name` of this one (drop it before its parent).
    pub fn child(&self, name: &str) -> Result<Self> {
        let path = self.path.join(name);
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// Whether `controller` is enabled for this cgroup (listed in its `cgroup.controllers`).
    pub fn has_controller(&self, controller: &str) -> Result<bool> {
        let file = self.path.join("cgroup.controllers");
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        Ok(text.split_whitespace().any(|c| c == controller))
    }

    /// Writes `value` to the interface file `file` of this cgroup (e.g. `memory.max`).
    pub fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        fs::write(&path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
    }

    /// A command that runs `program` already inside this cgroup: a shell moves itself in, then
    /// execs the program, so every event of the program (its first page fault included) counts.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.path.join("cgroup.procs"))
            .arg(program);
        command
    }

    /// A `key value` line of a flat-keyed file such as `cpu.stat`.
    pub fn stat(&self, file: &str, key: &str) -> Result<u64> {
        let text = fs::read_to_string(self.path.join(file))
            .with_context(|| format!("reading {file} of {}", self.path.display()))?;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no {key} in {file} of {}", self.path.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = remove_cgroup(&self.path) {
            eprintln!("leaked test cgroup {}: {e:#}", self.path.display());
        }
    }
}

/// Kills every process in `path` and removes the directory, retrying while they exit.
fn remove_cgroup(path: &Path) -> Result<()> {
    for _ in 0..100 {
        let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if fs::remove_dir(path).is_ok() || !path.exists() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "cgroup {} still busy after killing its processes",
        path.display()
    )
}

/// Prints the line `cargo xtask test` counts as a skip: the running kernel truly lacks `what`.
///
/// Written to the process's stdout directly, not with `println!`: libtest captures what
/// `println!` prints and shows it only for failing tests, so a skip inside a passing test would
/// never reach the count.
pub fn skip(test: &str, what: &str) {
    use std::io::Write;
    let line = format!("\nkernlet-test: skipped: {test}: {what}\n");
    let mut out = std::io::stdout().lock();
    // Nothing to do if stdout is gone: the test itself still passes or fails on its own.
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}
