//! The local runtime fixture: a private containerd with the CRI plugin, for tests and the demo.
//!
//! [`RuntimeFixture::start`] runs a containerd of its own next to whatever else the machine runs
//! (the system's containerd service is never started, stopped or talked to) and tears it down
//! again without leaving anything behind. Everything the fixture or its pods create is either
//! inside one base directory or carries a name derived from the fixture's random id:
//!
//! - containerd's `root`, `state`, gRPC socket (`<base>/containerd.sock`), ttrpc socket, config
//!   and log live under the base directory, and so do runc's state (the runc v2 shim's `Root`
//!   option), the snapshotter's overlay mounts and the pods' network namespaces
//!   (`netns_mounts_under_state_dir`, so nothing lands in `/run/netns`);
//! - the CNI network `kernlet-<id>` is a `bridge` plugin on the bridge `kl<id>` with `host-local`
//!   IPAM (its `dataDir` under the base directory) handing out a `/24` of 198.18.0.0/15, a slot
//!   of which each fixture reserves under [`REGISTRY_DIR`] so fixtures side by side never share
//!   a bridge or a subnet; no masquerading, so no iptables rules;
//! - pods should be given [`RuntimeFixture::cgroup_parent`] as their cgroup parent; pods given
//!   none land in `/k8s.io/<container id>` (cgroupfs driver), which teardown removes for the
//!   container ids it finds in the fixture's own state;
//! - what containerd 1.6 always puts in shared places is cleaned by name: shim sockets
//!   `/run/containerd/s/<sha256(socket/namespace/id)>` and libcni's result caches
//!   `/var/lib/cni/results/kernlet-<id>-*` and `cni-loopback-<sandbox id>-lo` (the CRI plugin
//!   adds a loopback network to every pod itself). The directories `/run/containerd/s` and
//!   `/var/lib/cni/results` themselves stay: other runtimes share them.
//!
//! Where this process lacks `CAP_SYS_RESOURCE` (sandboxed hosts drop it from the bounding set),
//! the CRI plugin runs with `restrict_oom_score_adj`, so pods get no negative `oom_score_adj`;
//! see [`can_lower_oom_score_adj`].
//!
//! [`RuntimeFixture::stop`] (or, best effort, `Drop`) kills the pods' tasks, stops containerd,
//! kills the fixture's shims and container processes, unmounts everything under the base
//! directory, deletes the bridge, the cgroups, the shared-place files and the base directory.
//! [`Footprint::leaks`] lists whatever of the fixture is still on the host; tests assert it is
//! empty after `stop`. A fixture whose owning process died without tearing down is reaped by the
//! next [`RuntimeFixture::start`] ([`reap_stale`]).
//!
//! Needs root, `containerd`, `ctr`, `containerd-shim-runc-v2`, `runc`, `ip` and the CNI plugins
//! in [`CNI_BIN_DIR`]. Works with cgroup v1, hybrid and pure v2 hierarchies.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::images;

/// The containerd namespace the CRI plugin works in.
pub const NAMESPACE: &str = "k8s.io";
/// Where the CNI plugins are installed (Debian's `containernetworking-plugins`).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The range fixture pod subnets are taken from (RFC 2544 benchmarking range).
pub const POD_RANGE: &str = "198.18.0.0/15";
/// Default parent of fixture base directories, and the registry of subnet slots.
pub const REGISTRY_DIR: &str = "/run/kernlet-fixtures";
/// Environment variable overriding the parent of fixture base directories (e.g. a tmpfs in a
/// VM, since overlayfs cannot put its upper directory on an overlayfs).
pub const BASE_PARENT_ENV: &str = "KERNLET_FIXTURE_DIR";

/// Number of `/24` slots in [`POD_RANGE`].
const SLOTS: u32 = 512;
/// containerd 1.6 puts shim sockets here whatever its state directory is.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// libcni's default cache directory (containerd's CRI plugin does not configure another).
const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";
/// go-cni's loopback network, which the CRI plugin attaches to every pod before ours.
const LOOPBACK_RESULT_PREFIX: &str = "cni-loopback-";
/// The last line the CRI plugin logs before it serves requests.
const CRI_READY_LOG: &str = "Start streaming server";
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Directories searched for the tools besides `$PATH`, also given to containerd as its `PATH`.
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// How to start a [`RuntimeFixture`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The fixture's base directory; must not exist yet, or be empty. `None`: a fresh
    /// `<parent>/<id>` where parent is `$KERNLET_FIXTURE_DIR` or [`REGISTRY_DIR`].
    pub base_dir: Option<PathBuf>,
    /// containerd's `--log-level` (`trace`, `debug`, `info`, `warn`, `error`).
    pub log_level: String,
    /// Build ([`images::build_all`]) and import the test images; without them no pod can start,
    /// since the sandbox image is [`images::PAUSE_IMAGE`] and nothing can be pulled.
    pub import_images: bool,
    /// Where the images are built; `None`: `target/xtask/images`.
    pub images_dir: Option<PathBuf>,
    /// How long containerd may take to serve CRI requests after it was spawned.
    pub start_timeout: Duration,
    /// Tear down fixtures whose owning process died before starting this one.
    pub reap_stale: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            base_dir: None,
            log_level: "info".to_owned(),
            import_images: true,
            images_dir: None,
            start_timeout: Duration::from_secs(30),
            reap_stale: true,
        }
    }
}

/// Everything that names a fixture's resources; written to `<base>/fixture.json` so a fixture
/// whose owner died can be torn down by another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Layout {
    id: String,
    base: PathBuf,
    slot: u32,
    owner_pid: u32,
    owner_start: u64,
}

impl Layout {
    /// A sane record: an 8-hex-digit id, an absolute base directory that is not `/`.
    fn is_plausible(&self) -> bool {
        self.id.len() == 8
            && self.id.bytes().all(|b| b.is_ascii_hexdigit())
            && self.base.is_absolute()
            && self.base.parent().is_some()
            && self.slot < SLOTS
    }

    fn root(&self) -> PathBuf {
        self.base.join("root")
    }
    fn state(&self) -> PathBuf {
        self.base.join("state")
    }
    fn socket(&self) -> PathBuf {
        self.base.join("containerd.sock")
    }
    fn config(&self) -> PathBuf {
        self.base.join("config.toml")
    }
    fn log(&self) -> PathBuf {
        self.base.join("containerd.log")
    }
    fn record(&self) -> PathBuf {
        self.base.join("fixture.json")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("cni/net.d")
    }
    fn cni_data_dir(&self) -> PathBuf {
        self.base.join("cni/networks")
    }
    fn runc_root(&self) -> PathBuf {
        self.state().join("runc")
    }
    fn netns_dir(&self) -> PathBuf {
        self.state().join("io.containerd.grpc.v1.cri/netns")
    }
    fn bridge(&self) -> String {
        format!("kl{}", self.id)
    }
    fn network(&self) -> String {
        format!("kernlet-{}", self.id)
    }
    fn cgroup_parent(&self) -> String {
        format!("/kernlet-{}", self.id)
    }
    /// The slot's `/24` as its first three octets.
    fn subnet_prefix(&self) -> [u8; 3] {
        slot_prefix(self.slot)
    }
    fn subnet(&self) -> String {
        let [a, b, c] = self.subnet_prefix();
        format!("{a}.{b}.{c}.0/24")
    }
}

fn slot_prefix(slot: u32) -> [u8; 3] {
    [198, 18 + (slot / 256) as u8, (slot % 256) as u8]
}

/// What a fixture may leave on the host, detached from the fixture so it can be checked after
/// [`RuntimeFixture::stop`] consumed it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Footprint {
    layout: Arc<Layout>,
    /// Container and sandbox ids seen in the fixture's state (filled in at teardown).
    ids: Arc<Mutex<BTreeSet<String>>>,
}

impl Footprint {
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
            let socket = shim_socket(layout, id);
            if socket.exists() {
                leaks.push(format!("shim socket {} (for {id})", socket.display()));
            }
        }
        let slot = slot_file(layout.slot);
        if fs::read_to_string(&slot).is_ok_and(|owner| Path::new(owner.trim()) == layout.base) {
            leaks.push(format!("subnet slot {}", slot.display()));
        }
        leaks
    }
}

/// A private containerd with the CRI plugin; see the module documentation.
#[derive(Debug)]
pub struct RuntimeFixture {
    footprint: Footprint,
    options: Options,
    containerd: Option<Child>,
    torn_down: bool,
}

impl RuntimeFixture {
    /// Starts a fixture: reserves a subnet slot, writes containerd's config and the CNI
    /// conflist, starts containerd, waits until its CRI plugin serves and imports the images.
    /// On failure whatever was set up is torn down again.
    pub fn start(options: Options) -> anyhow::Result<Self> {
        preflight()?;
        if options.reap_stale {
            for error in reap_stale() {
                eprintln!("runtime fixture: reaping a stale fixture: {error:#}");
            }
        }
        let layout = create_layout(options.base_dir.as_deref())?;
        let mut fixture = Self {
            footprint: Footprint {
                layout: Arc::new(layout),
                ids: Arc::default(),
            },
            options,
            containerd: None,
            torn_down: false,
        };
        // From here on a failure drops `fixture`, which tears down what exists.
        fixture.write_configs()?;
        fixture.spawn_and_wait()?;
        if fixture.options.import_images {
            fixture.import_images()?;
        }
        Ok(fixture)
    }

    fn layout(&self) -> &Layout {
        &self.footprint.layout
    }

    /// The fixture's id (8 hex digits), part of the bridge, network and cgroup names.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.layout().id
    }

    /// The containerd socket path (the CRI endpoint).
    #[must_use]
    pub fn endpoint(&self) -> PathBuf {
        self.layout().socket()
    }

    /// The CRI endpoint as a URI: `unix:///…/containerd.sock`.
    #[must_use]
    pub fn endpoint_uri(&self) -> String {
        format!("unix://{}", self.layout().socket().display())
    }

    /// The containerd namespace the CRI plugin uses ([`NAMESPACE`]).
    #[must_use]
    pub fn namespace(&self) -> &'static str {
        NAMESPACE
    }

    /// The base directory holding everything below.
    #[must_use]
    pub fn base_dir(&self) -> &Path {
        &self.layout().base
    }

    /// containerd's `root`.
    #[must_use]
    pub fn root_dir(&self) -> PathBuf {
        self.layout().root()
    }

    /// containerd's `state`.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.layout().state()
    }

    /// containerd's log (stdout and stderr, appended across restarts).
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.layout().log()
    }

    /// The generated containerd config.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.layout().config()
    }

    /// runc's state root (`<state>/runc`; runc's `--root` is `<this>/k8s.io`).
    #[must_use]
    pub fn runc_root(&self) -> PathBuf {
        self.layout().runc_root()
    }

    /// Where the CRI plugin bind-mounts the pods' network namespaces.
    #[must_use]
    pub fn netns_dir(&self) -> PathBuf {
        self.layout().netns_dir()
    }

    /// The CNI bridge's name (`kl<id>`).
    #[must_use]
    pub fn bridge(&self) -> String {
        self.layout().bridge()
    }

    /// The CNI network's name (`kernlet-<id>`).
    #[must_use]
    pub fn network(&self) -> String {
        self.layout().network()
    }

    /// The pods' subnet, a `/24` of [`POD_RANGE`], e.g. `198.18.7.0/24`.
    #[must_use]
    pub fn subnet(&self) -> String {
        self.layout().subnet()
    }

    /// Whether `ip` is in [`Self::subnet`].
    #[must_use]
    pub fn subnet_contains(&self, ip: std::net::Ipv4Addr) -> bool {
        let [a, b, c, _] = ip.octets();
        [a, b, c] == self.layout().subnet_prefix()
    }

    /// The cgroup parent (cgroupfs form) to give the fixture's pods: `/kernlet-<id>`. Teardown
    /// removes this subtree in every hierarchy.
    #[must_use]
    pub fn cgroup_parent(&self) -> String {
        self.layout().cgroup_parent()
    }

    /// containerd's pid, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// A detached handle on what the fixture may leave behind.
    #[must_use]
    pub fn footprint(&self) -> Footprint {
        self.footprint.clone()
    }

    /// Everything of the fixture present on the host; see [`Footprint::leaks`]. While the
    /// fixture runs this lists its live resources.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        self.footprint.leaks()
    }

    /// `ctr` talking to this fixture's containerd in its namespace; add the subcommand.
    #[must_use]
    pub fn ctr(&self) -> Command {
        ctr_command(self.layout())
    }

    /// The last `lines` lines of containerd's log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.layout().log(), lines)
    }

    /// Stops containerd gracefully (SIGTERM) and starts it again on the same directories and
    /// config. Shims are separate processes, so running pods keep running across it.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Err(error) = self.stop_containerd() {
            // It is stopped all the same (SIGKILLed); say so and start it again.
            eprintln!("runtime fixture {}: {error:#}", self.id());
        }
        self.spawn_and_wait()
    }

    /// Tears everything down; see [`Footprint::leaks`] for what is checked. Errors name each
    /// step that failed; the steps after a failed one still run.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.torn_down = true;
        let child = self.containerd.take();
        teardown(&self.footprint, child)
    }

    fn write_configs(&self) -> anyhow::Result<()> {
        let layout = self.layout();
        for dir in [
            layout.root(),
            layout.state(),
            layout.cni_conf_dir(),
            layout.cni_data_dir(),
        ] {
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create fixture directory {}", dir.display()))?;
        }
        let runc = find_tool("runc")?;
        let config = containerd_config(layout, &runc);
        write_file(&layout.config(), &config)?;
        let conflist = serde_json::to_string_pretty(&cni_conflist(layout))
            .context("cannot serialise the cni conflist")?;
        write_file(
            &layout.cni_conf_dir().join("10-kernlet.conflist"),
            &conflist,
        )
    }

    /// Spawns containerd and waits until its CRI plugin serves.
    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let layout = self.layout().clone();
        let log_path = layout.log();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open containerd log {}", log_path.display()))?;
        let log_start = log.metadata().map_or(0, |m| m.len());
        let log_err = log
            .try_clone()
            .with_context(|| format!("cannot duplicate containerd log {}", log_path.display()))?;
        let containerd = find_tool("containerd")?;
        // containerd refuses to listen on a socket path that exists and is not a socket, and
        // would otherwise answer the readiness probe before it has restarted.
        remove_file_if_exists(&layout.socket())?;
        let child = Command::new(&containerd)
            .arg("--config")
            .arg(layout.config())
            .arg("--log-level")
            .arg(&self.options.log_level)
            .env("PATH", tool_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("cannot spawn {}", containerd.display()))?;
        self.containerd = Some(child);
        let logs_info = matches!(self.options.log_level.as_str(), "trace" | "debug" | "info");
        self.wait_ready(log_start, logs_info)
    }

    fn wait_ready(&mut self, log_start: u64, logs_info: bool) -> anyhow::Result<()> {
        let layout = self.layout().clone();
        let deadline = Instant::now() + self.options.start_timeout;
        let mut answered = false;
        loop {
            if let Some(child) = self.containerd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.containerd = None;
                bail!(
                    "containerd ({}) exited with {status} before serving; log tail:\n{}",
                    layout.config().display(),
                    log_tail(&layout.log(), 30)
                );
            }
            if !answered && UnixStream::connect(layout.socket()).is_ok() {
                answered = run_quiet(ctr_command(&layout).arg("version"), Duration::from_secs(5))
                    .is_ok_and(|out| out.status.success());
                if answered {
                    check_cri_plugin(&layout)?;
                }
            }
            if answered
                && (!logs_info || log_since(&layout.log(), log_start).contains(CRI_READY_LOG))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not {} within {:?} (socket {}); log tail:\n{}",
                    if answered {
                        "start its cri plugin"
                    } else {
                        "answer on its socket"
                    },
                    self.options.start_timeout,
                    layout.socket().display(),
                    log_tail(&layout.log(), 30)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop_containerd(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.containerd.take() else {
            return Ok(());
        };
        stop_child(&mut child, Duration::from_secs(10))
    }

    fn import_images(&self) -> anyhow::Result<()> {
        let dir = self
            .options
            .images_dir
            .clone()
            .unwrap_or_else(|| crate::xtask_dir().join("images"));
        let built = build_images(&dir)?;
        let layout = self.layout();
        for image in &built {
            let out = run_quiet(
                ctr_command(layout)
                    .args(["images", "import", "--all-platforms"])
                    .arg(&image.path),
                Duration::from_mins(2),
            )?;
            if !out.status.success() {
                bail!(
                    "ctr images import {} failed ({}): {}",
                    image.path.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let out = run_quiet(
            ctr_command(layout).args(["images", "ls"]),
            Duration::from_secs(10),
        )?;
        let listing = String::from_utf8_lossy(&out.stdout);
        for image in &built {
            let found = listing.lines().any(|line| {
                let mut cols = line.split_whitespace();
                cols.next() == Some(image.name.as_str()) && line.contains(&image.digest)
            });
            if !found {
                bail!(
                    "image {} ({}) is not listed after importing {}; ctr images ls:\n{listing}",
                    image.name,
                    image.digest,
                    image.path.display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for RuntimeFixture {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let child = self.containerd.take();
        if let Err(error) = teardown(&self.footprint, child) {
            eprintln!(
                "runtime fixture {}: teardown on drop: {error:#}",
                self.footprint.layout.base.display()
            );
        }
    }
}

/// Tears down every fixture in the registry whose owning process is gone. Returns one error
/// per fixture that could not be torn down completely.
#[must_use = "the errors say which stale fixtures could not be torn down"]
pub fn reap_stale() -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    let Ok(_lock) = registry_lock() else {
        return errors;
    };
    let Ok(entries) = fs::read_dir(slots_dir()) else {
        return errors;
    };
    for entry in entries.flatten() {
        let slot_path = entry.path();
        let Ok(owner) = fs::read_to_string(&slot_path) else {
            continue;
        };
        let base = PathBuf::from(owner.trim());
        let layout = fs::read(base.join("fixture.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Layout>(&bytes).ok());
        match layout {
            Some(layout) if owner_alive(&layout) => {}
            // A record that does not describe the directory it sits in is left alone: teardown
            // removes `base` recursively.
            Some(layout) if layout.base != base || !layout.is_plausible() => {}
            Some(layout) => {
                let footprint = Footprint {
                    layout: Arc::new(layout),
                    ids: Arc::default(),
                };
                // The registry lock is held already, so the slot is released without retaking it.
                match teardown_locked(&footprint, None) {
                    Ok(()) => eprintln!(
                        "runtime fixture: reaped stale fixture {} (its owner is gone)",
                        base.display()
                    ),
                    Err(error) => {
                        errors.push(error.context(format!("stale fixture {}", base.display())));
                    }
                }
            }
            None if !base.exists() => {
                let _ = fs::remove_file(&slot_path);
            }
            None => {}
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Setup

fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the runtime fixture needs root (containerd, mounts, cgroups, links)");
    }
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc", "ip"] {
        find_tool(tool)?;
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = Path::new(CNI_BIN_DIR).join(plugin);
        if !path.exists() {
            bail!(
                "cni plugin {} is missing (apt-get install containernetworking-plugins)",
                path.display()
            );
        }
    }
    Ok(())
}

fn registry_dir() -> PathBuf {
    PathBuf::from(REGISTRY_DIR)
}

fn slots_dir() -> PathBuf {
    registry_dir().join(".slots")
}

fn slot_file(slot: u32) -> PathBuf {
    slots_dir().join(slot.to_string())
}

/// Exclusive lock over slot allocation and reaping, across processes.
fn registry_lock() -> anyhow::Result<File> {
    let dir = registry_dir();
    fs::create_dir_all(dir.join(".slots"))
        .with_context(|| format!("cannot create fixture registry {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open registry lock {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

fn create_layout(base_dir: Option<&Path>) -> anyhow::Result<Layout> {
    let _lock = registry_lock()?;
    let (id, base) = loop {
        let id = random_id()?;
        let base = match base_dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::var_os(BASE_PARENT_ENV)
                .map_or_else(registry_dir, PathBuf::from)
                .join(&id),
        };
        if base_dir.is_some() || (!base.exists() && !link_exists(&format!("kl{id}"))) {
            break (id, base);
        }
    };
    if !base.is_absolute() {
        bail!("fixture base directory {} must be absolute", base.display());
    }
    if mountinfo().iter().any(|(point, _)| *point == base) {
        bail!(
            "fixture base directory {} is a mount point; give a directory below it",
            base.display()
        );
    }
    if fs::read_dir(&base).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "fixture base directory {} exists and is not empty",
            base.display()
        );
    }
    let socket_len = base.join("containerd.sock.ttrpc").as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        bail!(
            "fixture base directory {} is too long for unix sockets ({socket_len} > {MAX_SOCKET_PATH} bytes)",
            base.display()
        );
    }
    let slot = free_slot(&id)?;
    let owner_pid = std::process::id();
    let layout = Layout {
        id,
        base,
        slot,
        owner_pid,
        owner_start: process_start(owner_pid).unwrap_or(0),
    };
    fs::create_dir_all(&layout.base)
        .with_context(|| format!("cannot create fixture directory {}", layout.base.display()))?;
    let record =
        serde_json::to_string_pretty(&layout).context("cannot serialise fixture record")?;
    write_file(&layout.record(), &record)?;
    write_file(&slot_file(slot), &format!("{}\n", layout.base.display()))?;
    Ok(layout)
}

/// A slot not reserved by a live fixture and not overlapping any route on the host. Called with
/// the registry lock held.
fn free_slot(id: &str) -> anyhow::Result<u32> {
    let routes = ipv4_routes();
    let start = u32::from_str_radix(id, 16).unwrap_or(0) % SLOTS;
    for n in 0..SLOTS {
        let slot = (start + n) % SLOTS;
        if let Ok(owner) = fs::read_to_string(slot_file(slot))
            && Path::new(owner.trim()).exists()
        {
            continue;
        }
        let [a, b, c] = slot_prefix(slot);
        let net = u32::from_be_bytes([a, b, c, 0]);
        let overlaps = routes.iter().any(|&(dst, mask)| {
            let common = mask & 0xffff_ff00;
            mask != 0 && (dst & common) == (net & common)
        });
        if !overlaps {
            return Ok(slot);
        }
    }
    bail!(
        "no free /24 left in {POD_RANGE} (slots under {})",
        slots_dir().display()
    )
}

/// `(destination, mask)` of every IPv4 route, from `/proc/net/route`.
fn ipv4_routes() -> Vec<(u32, u32)> {
    let Ok(table) = fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let parse = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|raw| u32::from_be_bytes(raw.to_ne_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some((parse(cols.get(1)?)?, parse(cols.get(7)?)?))
        })
        .collect()
}

fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn containerd_config(layout: &Layout, runc: &Path) -> String {
    let q = |p: &Path| toml_string(&p.display().to_string());
    let disabled = [
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.internal.v1.opt",
        "io.containerd.internal.v1.tracing",
        "io.containerd.tracing.processor.v1.otlp",
    ]
    .map(toml_string)
    .join(", ");
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"# Generated by xtask::runtime for fixture {id}; private to this fixture.
version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[{cri}]
  sandbox_image = {sandbox}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = {restrict_oom}
  systemd_cgroup = false
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true

[{cri}.cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
  max_conf_num = 1

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = {runc}
  Root = {runc_root}
"#,
        id = layout.id,
        root = q(&layout.root()),
        state = q(&layout.state()),
        socket = q(&layout.socket()),
        sandbox = toml_string(images::PAUSE_IMAGE),
        cni_bin = toml_string(CNI_BIN_DIR),
        cni_conf = q(&layout.cni_conf_dir()),
        runc = q(runc),
        runc_root = q(&layout.runc_root()),
        restrict_oom = !can_lower_oom_score_adj(),
    )
}

/// Whether this process may lower `oom_score_adj` (`CAP_SYS_RESOURCE` in its effective set).
/// Sandboxed hosts may drop that capability from the bounding set; runc then fails every pod
/// with `failed to update /proc/self/oom_score_adj: Permission denied` (reported by CRI as
/// `can't get final child's PID from pipe: EOF`) unless the CRI plugin is told to clamp the
/// scores to its own (`restrict_oom_score_adj`).
#[must_use]
pub fn can_lower_oom_score_adj() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The bridge network; containerd's CRI plugin adds a loopback network of its own (go-cni's
/// `WithLoNetwork`), so `lo` is not part of this list.
fn cni_conflist(layout: &Layout) -> serde_json::Value {
    let [a, b, c] = layout.subnet_prefix();
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": layout.network(),
        "plugins": [{
            "type": "bridge",
            "bridge": layout.bridge(),
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": layout.subnet(), "gateway": format!("{a}.{b}.{c}.1") }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": layout.cni_data_dir(),
            },
        }],
    })
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn check_cri_plugin(layout: &Layout) -> anyhow::Result<()> {
    let out = run_quiet(
        ctr_command(layout).args(["plugins", "ls"]),
        Duration::from_secs(5),
    )?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let cri = listing.lines().find(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.first() == Some(&"io.containerd.grpc.v1") && cols.get(1) == Some(&"cri")
    });
    match cri {
        Some(line) if line.split_whitespace().last() == Some("ok") => Ok(()),
        Some(line) => bail!(
            "containerd's cri plugin did not load: {}; log tail:\n{}",
            line.trim(),
            log_tail(&layout.log(), 30)
        ),
        None => bail!(
            "containerd lists no cri plugin; ctr plugins ls:\n{listing}\nlog tail:\n{}",
            log_tail(&layout.log(), 30)
        ),
    }
}

/// Builds the images once at a time (process-wide and across processes: they share the
/// output directory).
fn build_images(dir: &Path) -> anyhow::Result<Vec<images::BuiltImage>> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create image directory {}", dir.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    images::build_all(dir).with_context(|| format!("cannot build test images in {}", dir.display()))
}

// ---------------------------------------------------------------------------------------------
// Teardown

fn teardown(footprint: &Footprint, child: Option<Child>) -> anyhow::Result<()> {
    // Hold the registry lock only to release the slot: the slow part runs unlocked so that
    // other fixtures can start meanwhile.
    let result = teardown_steps(footprint, child);
    let slot_result = registry_lock().and_then(|_lock| release_slot(&footprint.layout));
    match (result, slot_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(error), Err(slot)) => Err(error.context(format!("{slot:#}"))),
    }
}

/// [`teardown`] for callers already holding the registry lock.
fn teardown_locked(footprint: &Footprint, child: Option<Child>) -> anyhow::Result<()> {
    let result = teardown_steps(footprint, child);
    let slot_result = release_slot(&footprint.layout);
    result.and(slot_result)
}

fn release_slot(layout: &Layout) -> anyhow::Result<()> {
    let slot = slot_file(layout.slot);
    match fs::read_to_string(&slot) {
        Ok(owner) if Path::new(owner.trim()) == layout.base => fs::remove_file(&slot)
            .with_context(|| format!("cannot release subnet slot {}", slot.display())),
        _ => Ok(()),
    }
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

    // 2. Stop containerd.
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
            remove_file_if_exists(&shim_socket(layout, id)),
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
    let mut ids = BTreeSet::new();
    for dir in dirs {
        if let Ok(entries) = fs::read_dir(&dir) {
            ids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|name| is_container_id(name)),
            );
        }
    }
    ids
}

/// CRI ids are 64 hex digits; ctr users pick anything, but never path separators.
fn is_container_id(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

/// Kills and deletes every task and deletes every container; returns the ids seen.
fn remove_tasks_via_ctr(layout: &Layout) -> BTreeSet<String> {
    let list = |what: &str| -> Vec<String> {
        run_quiet(
            ctr_command(layout).args([what, "ls", "-q"]),
            Duration::from_secs(10),
        )
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
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
        let out = run_quiet(
            runc_cmd().args(["delete", "--force", id]),
            Duration::from_secs(15),
        )?;
        if !out.status.success() {
            failed.push(format!(
                "{id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "runc --root {} delete --force failed for {}",
            root.display(),
            failed.join(", ")
        )
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
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
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
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
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
        let out = run_quiet(
            Command::new("ip").args(["link", "del", &link]),
            Duration::from_secs(10),
        )?;
        // A veth may vanish between the check and the delete when its netns is freed.
        if !out.status.success() && link_exists(&link) {
            failed.push(format!(
                "ip link del {link}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
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
    let mut dirs = Vec::new();
    collect_dirs(top, &mut dirs);
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
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
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn stop_child(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    let pid = child.id();
    if matches!(child.try_wait(), Ok(Some(_))) {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    child
        .kill()
        .with_context(|| format!("cannot kill containerd {pid}"))?;
    child
        .wait()
        .with_context(|| format!("cannot reap containerd {pid}"))?;
    bail!("containerd {pid} ignored SIGTERM for {grace:?} and was killed")
}

/// SIGTERM, then SIGKILL after `grace`, for processes that are not our children.
fn terminate(pids: &[u32], grace: Duration) -> anyhow::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if pids.iter().all(|&pid| !pid_alive(pid)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    bail!("processes {pids:?} ignored SIGTERM for {grace:?} and were killed")
}

// ---------------------------------------------------------------------------------------------
// Host inspection

/// Live processes whose command line names the fixture's base directory or socket
/// (containerd, its shims, runc).
fn processes_of(layout: &Layout) -> Vec<(u32, Vec<String>)> {
    let base = layout.base.display().to_string();
    let base_prefix = format!("{base}/");
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
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
fn is_runtime_tool(args: &[String]) -> bool {
    args.first()
        .and_then(|argv0| Path::new(argv0).file_name())
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("containerd") || name == "runc")
}

/// Alive and not a zombie (nothing may reap zombies promptly when PID 1 is not an init).
fn pid_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn owner_alive(layout: &Layout) -> bool {
    pid_alive(layout.owner_pid) && process_start(layout.owner_pid) == Some(layout.owner_start)
}

/// Mount points strictly below `base`, from `/proc/self/mountinfo`.
fn mounts_under(base: &Path) -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|(point, _)| point.starts_with(base) && point != base)
        .map(|(point, _)| point)
        .collect()
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

/// Every cgroup hierarchy's mount point (v1 controllers, named v1 hierarchies, v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(point, _)| point)
        .collect()
}

/// The fixture's cgroups that exist: `/kernlet-<id>` and `/k8s.io/<known id>` in every
/// hierarchy.
fn cgroups_of(layout: &Layout, ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let parent = layout.cgroup_parent();
    let parent = parent.trim_start_matches('/');
    let mut found = Vec::new();
    for mount in cgroup_mounts() {
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

fn cgroup_pids(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cgroup_tree_pids(top: &Path) -> Vec<u32> {
    let mut dirs = Vec::new();
    collect_dirs(top, &mut dirs);
    dirs.iter()
        .flat_map(|d| cgroup_pids(d))
        .filter(|&pid| pid_alive(pid))
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Links enslaved to `bridge`.
fn bridge_ports(bridge: &str) -> Vec<String> {
    fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// libcni's cached results of the fixture's pods: `<network>-<sandbox id>-<ifname>` for the
/// fixture's network and `cni-loopback-<sandbox id>-lo` for the loopback network the CRI plugin
/// adds to every pod.
fn cni_result_files(layout: &Layout, ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let network = format!("{}-", layout.network());
    let ours = |name: &str| {
        name.starts_with(&network)
            || name
                .strip_prefix(LOOPBACK_RESULT_PREFIX)
                .and_then(|rest| rest.rsplit_once('-'))
                .is_some_and(|(id, _)| ids.contains(id))
    };
    fs::read_dir(CNI_RESULTS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(ours))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Where containerd 1.6 puts the socket of the shim for task `id`:
/// `/run/containerd/s/<hex sha256 of "<socket>/<namespace>/<id>">`.
fn shim_socket(layout: &Layout, id: &str) -> PathBuf {
    let key = layout.socket().join(NAMESPACE).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let hex = digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    Path::new(SHIM_SOCKET_DIR).join(hex)
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn ctr_command(layout: &Layout) -> Command {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(layout.socket())
        .args(["--connect-timeout", "2s", "--namespace", NAMESPACE])
        .env("PATH", tool_path());
    cmd
}

fn tool_path() -> String {
    let mut dirs: Vec<String> = std::env::var("PATH")
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for dir in SYSTEM_PATH {
        if !dirs.iter().any(|d| d == dir) {
            dirs.push((*dir).to_owned());
        }
    }
    dirs.join(":")
}

fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    tool_path()
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .with_context(|| {
            format!("{name} not found in $PATH or {SYSTEM_PATH:?} (apt-get install containerd runc iproute2)")
        })
}

/// Runs `cmd` with stdin closed and output captured, killing it after `timeout`.
fn run_quiet(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let program = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot wait for {program}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

fn remove_file_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn remove_dir_all_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = log_since(path, 0);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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
    fn slots_cover_the_benchmarking_range() {
        assert_eq!(slot_prefix(0), [198, 18, 0]);
        assert_eq!(slot_prefix(255), [198, 18, 255]);
        assert_eq!(slot_prefix(256), [198, 19, 0]);
        assert_eq!(slot_prefix(SLOTS - 1), [198, 19, 255]);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn shim_socket_matches_containerd() {
        let layout = Layout {
            id: "00000000".into(),
            base: "/run/containerd".into(),
            slot: 0,
            owner_pid: 0,
            owner_start: 0,
        };
        let socket = shim_socket(&layout, "x");
        let expected = Sha256::digest(b"/run/containerd/containerd.sock/k8s.io/x");
        assert!(socket.ends_with(format!("{expected:x}")));
    }
}
