//! Tearing a fixture down and checking that it left nothing behind. [`Footprint`] names what a
//! fixture may leave on the host; teardown asks containerd to remove its tasks, stops
//! containerd, kills what is left through runc, by command line and by cgroup, unmounts, and
//! removes the network, the cgroups, the shim sockets, the base directory and the subnet slot.
use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::Signal;

use super::NAMESPACE;
use super::files::{remove_dir_all_if_exists, remove_file_if_exists};
use super::host::{
    bridge_ports, cgroup_pids, cgroup_tree_pids, cgroups_of, cni_result_files, deepest_first,
    entry_names, is_runtime_tool, link_exists, mounts_under, pid_alive, processes_of, signal,
    subdirs,
};
use super::layout::Layout;
use super::registry;
use super::tools::{ctr_command, find_tool, run_checked, run_quiet};

/// What a fixture may leave on the host, detached from the fixture so it can be checked after
/// [`RuntimeFixture::stop`](super::RuntimeFixture::stop) consumed it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Footprint {
    layout: Arc<Layout>,
    /// Container and sandbox ids seen in the fixture's state (filled in at teardown).
    ids: Arc<Mutex<BTreeSet<String>>>,
}

impl Footprint {
    pub(super) fn new(layout: Layout) -> Self {
        Self {
            layout: Arc::new(layout),
            ids: Arc::default(),
        }
    }

    pub(super) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The fixture's id (8 hex digits).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.layout.id
    }

    /// The fixture's base directory.
    #[must_use]
    pub fn base_dir(&self) -> &Path {
        &self.layout.base
    }

    /// The containerd socket path.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.layout.socket()
    }

    /// Container and sandbox ids known to belong to the fixture.
    #[must_use]
    pub fn known_ids(&self) -> BTreeSet<String> {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, ids: impl IntoIterator<Item = String>) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
    }

    /// Everything of the fixture still present on the host, one line each: processes
    /// (containerd, shims, runc, container processes in the fixture's cgroups), mounts under the
    /// base directory, the base directory itself, the bridge and its ports, cgroups, shim
    /// sockets, CNI result caches and the subnet slot. Empty after a successful teardown.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        let layout = &self.layout;
        let mut ids = self.known_ids();
        ids.extend(ids_on_disk(layout));
        let mut leaks = Vec::new();
        for (pid, args) in processes_of(layout) {
            leaks.push(format!("process {pid}: {}", args.join(" ")));
        }
        for dir in cgroups_of(layout, &ids) {
            for pid in cgroup_tree_pids(&dir) {
                leaks.push(format!("process {pid} in cgroup {}", dir.display()));
            }
            leaks.push(format!("cgroup {}", dir.display()));
        }
        for mount in mounts_under(&layout.base) {
            leaks.push(format!("mount {}", mount.display()));
        }
        if layout.base.exists() {
            leaks.push(format!("directory {}", layout.base.display()));
        }
        let bridge = layout.bridge();
        if link_exists(&bridge) {
            leaks.push(format!("link {bridge}"));
        }
        for port in bridge_ports(&bridge) {
            leaks.push(format!("link {port} (port of {bridge})"));
        }
        for file in cni_result_files(layout, &ids) {
            leaks.push(format!("cni cache {}", file.display()));
        }
        for id in &ids {
            let socket = layout.shim_socket(id);
            if socket.exists() {
                leaks.push(format!("shim socket {} (for {id})", socket.display()));
            }
        }
        if registry::holds_slot(layout) {
            let slot = registry::slot_file(layout.slot);
            leaks.push(format!("subnet slot {}", slot.display()));
        }
        leaks
    }
}

/// Tears the fixture down; `child` is its containerd if this process started it. Errors name
/// each step that failed; the steps after a failed one still run.
pub(super) fn teardown(footprint: &Footprint, child: Option<Child>) -> anyhow::Result<()> {
    // Hold the registry lock only to release the slot: the slow part runs unlocked so that
    // other fixtures can start meanwhile.
    let result = teardown_steps(footprint, child);
    let slot_result = registry::lock().and_then(|_lock| registry::release_slot(&footprint.layout));
    match (result, slot_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(error), Err(slot)) => Err(error.context(format!("{slot:#}"))),
    }
}

/// [`teardown`] for callers already holding the registry lock.
pub(super) fn teardown_locked(footprint: &Footprint, child: Option<Child>) -> anyhow::Result<()> {
    let result = teardown_steps(footprint, child);
    let slot_result = registry::release_slot(&footprint.layout);
    result.and(slot_result)
}

fn teardown_steps(footprint: &Footprint, child: Option<Child>) -> anyhow::Result<()> {
    let layout = &*footprint.layout;
    let mut errors: Vec<String> = Vec::new();
    let mut note = |step: &str, result: anyhow::Result<()>| {
        if let Err(error) = result {
            errors.push(format!("{step}: {error:#}"));
        }
    };
    footprint.remember(ids_on_disk(layout));

    // 1. Let containerd and the shims remove the tasks and containers: the shims then exit on
    //    their own, unmount the rootfs, delete runc state and cgroups and remove their sockets.
    let containerd_up = child.is_some() || UnixStream::connect(layout.socket()).is_ok();
    if containerd_up {
        footprint.remember(remove_tasks_via_ctr(layout));
    }

    // 2. Stop containerd: ours, and one a dead owner started (found by its config).
    if let Some(mut child) = child {
        note(
            "stopping containerd",
            stop_child(&mut child, Duration::from_secs(10)),
        );
    }
    let config = layout.config().display().to_string();
    let daemons: Vec<u32> = processes_of(layout)
        .into_iter()
        .filter(|(_, args)| {
            args.windows(2)
                .any(|w| w[0] == "--config" && w[1] == config)
        })
        .map(|(pid, _)| pid)
        .collect();
    note(
        "stopping containerd",
        terminate(&daemons, Duration::from_secs(10)),
    );
    footprint.remember(ids_on_disk(layout));

    // 3. Whatever is still running: kill it through runc, then kill shims and anything left in
    //    the fixture's cgroups.
    note("runc cleanup", runc_cleanup(layout));
    let ids = footprint.known_ids();
    note("killing processes", kill_processes(layout, &ids));

    // 4. Unmount everything under the base directory (rootfs overlays, netns, shm).
    note("unmounting", unmount_under(&layout.base));

    // 5. Network: ports of the bridge (veths whose netns is gone vanish on their own), the
    //    bridge, libcni's result cache.
    note("removing network", remove_network(layout, &ids));

    // 6. Cgroups.
    for dir in cgroups_of(layout, &ids) {
        note("removing cgroups", remove_cgroup_tree(&dir));
    }

    // 7. Shim sockets in containerd's shared directory.
    for id in &ids {
        note(
            "removing shim socket",
            remove_file_if_exists(&layout.shim_socket(id)),
        );
    }

    // 8. The base directory, unless something is still mounted below it.
    let remaining = mounts_under(&layout.base);
    if remaining.is_empty() {
        note(
            "removing base directory",
            remove_dir_all_if_exists(&layout.base),
        );
    } else {
        errors.push(format!(
            "not removing {}: still mounted below it: {}",
            layout.base.display(),
            remaining
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    if errors.is_empty() {
        Ok(())
    } else {
        bail!(
            "teardown of fixture {} incomplete: {}",
            layout.base.display(),
            errors.join("; ")
        )
    }
}

/// Container and sandbox ids found in the fixture's state and root.
fn ids_on_disk(layout: &Layout) -> BTreeSet<String> {
    let dirs = [
        layout
            .state()
            .join("io.containerd.runtime.v2.task")
            .join(NAMESPACE),
        layout.root().join("io.containerd.grpc.v1.cri/sandboxes"),
        layout.root().join("io.containerd.grpc.v1.cri/containers"),
        layout.runc_root().join(NAMESPACE),
    ];
    dirs.iter()
        .flat_map(|dir| entry_names(dir))
        .filter(|name| is_container_id(name))
        .collect()
}

/// CRI ids are 64 hex digits; ctr users pick anything, but never path separators.
fn is_container_id(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

/// Kills and deletes every task and deletes every container; returns the ids seen.
fn remove_tasks_via_ctr(layout: &Layout) -> BTreeSet<String> {
    let list = |what: &str| -> Vec<String> {
        run_checked(
            ctr_command(layout).args([what, "ls", "-q"]),
            Duration::from_secs(10),
        )
        .map(|stdout| {
            stdout
                .lines()
                .map(str::trim)
                .filter(|id| is_container_id(id))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let tasks = list("tasks");
    for id in &tasks {
        let _ = run_quiet(
            ctr_command(layout).args(["tasks", "rm", "-f", id]),
            Duration::from_secs(15),
        );
    }
    let containers = list("containers");
    for id in &containers {
        let _ = run_quiet(
            ctr_command(layout).args(["containers", "rm", id]),
            Duration::from_secs(15),
        );
    }
    tasks.into_iter().chain(containers).collect()
}

/// Kills and force-deletes every container runc still knows in the fixture's runc root.
fn runc_cleanup(layout: &Layout) -> anyhow::Result<()> {
    let root = layout.runc_root().join(NAMESPACE);
    if !root.exists() {
        return Ok(());
    }
    let runc = find_tool("runc")?;
    let runc_cmd = || {
        let mut cmd = Command::new(&runc);
        cmd.arg("--root").arg(&root);
        cmd
    };
    let out = run_quiet(runc_cmd().args(["list", "-q"]), Duration::from_secs(10))?;
    let mut failed = Vec::new();
    for id in String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        let _ = run_quiet(
            runc_cmd().args(["kill", "--all", id, "KILL"]),
            Duration::from_secs(10),
        );
        if let Err(error) = run_checked(
            runc_cmd().args(["delete", "--force", id]),
            Duration::from_secs(15),
        ) {
            failed.push(format!("{error:#}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{}", failed.join("; "))
    }
}

/// SIGKILLs the fixture's runtime processes (shims, runc, a containerd that ignored SIGTERM)
/// and every process in its cgroups, and waits until they are gone. Other processes that merely
/// name the base directory (someone's `tail -f` of the log) are left alone; `leaks` reports them.
fn kill_processes(layout: &Layout, ids: &BTreeSet<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids: BTreeSet<u32> = processes_of(layout)
            .into_iter()
            .filter(|(_, args)| is_runtime_tool(args))
            .map(|(pid, _)| pid)
            .collect();
        for dir in cgroups_of(layout, ids) {
            pids.extend(cgroup_tree_pids(&dir));
        }
        pids.remove(&std::process::id());
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("processes still alive after SIGKILL: {pids:?}");
        }
        for &pid in &pids {
            signal(pid, Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Unmounts everything mounted below `base`, deepest first; lazily if busy.
fn unmount_under(base: &Path) -> anyhow::Result<()> {
    for _ in 0..5 {
        let mut mounts = mounts_under(base);
        if mounts.is_empty() {
            return Ok(());
        }
        deepest_first(&mut mounts);
        for mount in mounts {
            if umount2(&mount, MntFlags::UMOUNT_NOFOLLOW).is_err() {
                match umount2(&mount, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                    Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
                    Err(errno) => bail!("cannot unmount {}: {errno}", mount.display()),
                }
            }
        }
    }
    let left = mounts_under(base);
    if left.is_empty() {
        Ok(())
    } else {
        bail!("still mounted after 5 rounds: {left:?}")
    }
}

/// Deletes the bridge's ports and the bridge, and libcni's cached results for the pods.
fn remove_network(layout: &Layout, ids: &BTreeSet<String>) -> anyhow::Result<()> {
    let bridge = layout.bridge();
    let mut failed = Vec::new();
    for link in bridge_ports(&bridge)
        .into_iter()
        .chain(std::iter::once(bridge.clone()))
    {
        if !link_exists(&link) {
            continue;
        }
        // A veth may vanish between the check and the delete when its netns is freed.
        if let Err(error) = run_checked(
            Command::new("ip").args(["link", "del", &link]),
            Duration::from_secs(10),
        ) && link_exists(&link)
        {
            failed.push(format!("{error:#}"));
        }
    }
    for file in cni_result_files(layout, ids) {
        if let Err(error) = remove_file_if_exists(&file) {
            failed.push(format!("{error:#}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{}", failed.join("; "))
    }
}

/// Kills what is left in the cgroup subtree and removes it, deepest first.
fn remove_cgroup_tree(top: &Path) -> anyhow::Result<()> {
    let mut dirs = subdirs(top);
    deepest_first(&mut dirs);
    for dir in dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(error) if error.kind() == ErrorKind::NotFound => break,
                Err(error) => {
                    if Instant::now() >= deadline {
                        return Err(error)
                            .with_context(|| format!("cannot remove cgroup {}", dir.display()));
                    }
                    for pid in cgroup_pids(&dir) {
                        signal(pid, Signal::SIGKILL);
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    Ok(())
}

/// Stops `child` (containerd) like [`terminate`] and reaps it.
pub(super) fn stop_child(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    // Once reaped, its pid may be someone else's: never signal it then.
    if matches!(child.try_wait(), Ok(Some(_))) {
        return Ok(());
    }
    let pid = child.id();
    let stopped = terminate(&[pid], grace);
    child
        .wait()
        .with_context(|| format!("cannot reap containerd {pid}"))?;
    stopped
}

/// SIGTERM, then SIGKILL after `grace` unless all are gone. A zombie counts as gone, so this
/// also serves our own children, which the caller then reaps.
fn terminate(pids: &[u32], grace: Duration) -> anyhow::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    for &pid in pids {
        signal(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if pids.iter().all(|&pid| !pid_alive(pid)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids {
        signal(pid, Signal::SIGKILL);
    }
    bail!("processes {pids:?} ignored SIGTERM for {grace:?} and were killed")
}
