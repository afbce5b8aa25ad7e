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
//!
//! The pieces: `layout` names everything, `config` writes containerd's config and the CNI
//! conflist, `registry` hands out ids and subnet slots and reaps stale fixtures, `import` loads
//! the test images, `teardown` removes it all again, `host` inspects `/proc` and `/sys`, `tools`
//! runs the host's tools and `files` holds shared file helpers.
mod config;
mod files;
mod host;
mod import;
mod layout;
mod registry;
mod teardown;
mod tools;

use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use config::can_lower_oom_score_adj;
pub use registry::reap_stale;
pub use teardown::Footprint;

use files::{log_since, log_tail, remove_file_if_exists};
use layout::Layout;

use crate::pki::ClientPki;
use tools::{ctr_command, find_tool, run_checked, tool_path};

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

/// The last line the CRI plugin logs before it serves requests.
const CRI_READY_LOG: &str = "Start streaming server";

/// How to start a [`RuntimeFixture`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The fixture's base directory; must not exist yet, or be empty. `None`: a fresh
    /// `<parent>/<id>` where parent is `$KERNLET_FIXTURE_DIR` or [`REGISTRY_DIR`].
    pub base_dir: Option<PathBuf>,
    /// containerd's `--log-level` (`trace`, `debug`, `info`, `warn`, `error`).
    pub log_level: String,
    /// Build ([`crate::images::build_all`]) and import the test images; without them no pod
    /// can start, since the sandbox image is [`crate::images::PAUSE_IMAGE`] and nothing can be
    /// pulled.
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
        tools::preflight()?;
        if options.reap_stale {
            for error in reap_stale() {
                eprintln!("runtime fixture: reaping a stale fixture: {error:#}");
            }
        }
        let layout = registry::create_layout(options.base_dir.as_deref())?;
        let mut fixture = Self {
            footprint: Footprint::new(layout),
            options,
            containerd: None,
            torn_down: false,
        };
        // From here on a failure drops `fixture`, which tears down what exists.
        config::write(fixture.layout())?;
        fixture.spawn_and_wait()?;
        if fixture.options.import_images {
            let dir = fixture
                .options
                .images_dir
                .clone()
                .unwrap_or_else(|| crate::xtask_dir().join("images"));
            import::import_images(fixture.layout(), &dir)?;
        }
        Ok(fixture)
    }

    fn layout(&self) -> &Layout {
        self.footprint.layout()
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

    /// A standalone-mode `KubeletConfiguration` for kernlet on this fixture: static pods from
    /// `manifests`, container logs under `logs`, the kubelet port on `127.0.0.1:port` (TLS;
    /// clients authenticate with [`Self::client_pki`]'s certificate, every authenticated client
    /// is allowed). `QoS` cgroups are off (`cgroupsPerQOS: false`, which upstream supports)
    /// because the development host has no cgroup v2 controllers. `extra` (whole YAML lines) is
    /// appended; a top-level key it sets replaces the default line for that key
    /// (`cgroupsPerQOS: true` in the node VM).
    pub fn kernlet_config(
        &self,
        manifests: &Path,
        logs: &Path,
        port: u16,
        extra: &str,
    ) -> Result<String> {
        let mut defaults = vec![
            ("apiVersion", "kubelet.config.k8s.io/v1beta1".to_owned()),
            ("kind", "KubeletConfiguration".to_owned()),
            ("staticPodPath", manifests.display().to_string()),
            ("podLogsDir", logs.display().to_string()),
            ("containerRuntimeEndpoint", self.endpoint_uri()),
            ("cgroupsPerQOS", "false".to_owned()),
            ("enforceNodeAllocatable", "[]".to_owned()),
            ("address", "127.0.0.1".to_owned()),
            ("port", port.to_string()),
            ("healthzPort", "0".to_owned()),
        ];
        defaults.extend(self.client_pki()?.kernlet_config());
        let overridden = |key: &str| {
            extra
                .lines()
                .any(|line| line.split_once(':').is_some_and(|(k, _)| k == key))
        };
        let mut config = String::new();
        for (key, value) in defaults.iter().filter(|(key, _)| !overridden(key)) {
            config.push_str(key);
            config.push_str(": ");
            config.push_str(value);
            config.push('\n');
        }
        config.push_str(extra);
        Ok(config)
    }

    /// The client CA and certificate for kernlet's TLS port (created on first use, in the
    /// fixture's directory).
    pub fn client_pki(&self) -> Result<ClientPki> {
        ClientPki::ensure(&self.base_dir().join("client-pki"))
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
        if let Some(mut child) = self.containerd.take()
            && let Err(error) = teardown::stop_child(&mut child, Duration::from_secs(10))
        {
            // It is stopped all the same (SIGKILLed); say so and start it again.
            eprintln!(
                "runtime fixture {}: stopping containerd: {error:#}",
                self.id()
            );
        }
        self.spawn_and_wait()
    }

    /// Tears everything down; see [`Footprint::leaks`] for what is checked. Errors name each
    /// step that failed; the steps after a failed one still run.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.torn_down = true;
        let child = self.containerd.take();
        teardown::teardown(&self.footprint, child)
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

    /// Waits until containerd answers `ctr`, lists its CRI plugin as loaded and, if its log
    /// level shows it, has logged [`CRI_READY_LOG`] since `log_start`.
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
                answered = run_checked(ctr_command(&layout).arg("version"), Duration::from_secs(5))
                    .is_ok();
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
}

impl Drop for RuntimeFixture {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let child = self.containerd.take();
        if let Err(error) = teardown::teardown(&self.footprint, child) {
            eprintln!(
                "runtime fixture {}: teardown on drop: {error:#}",
                self.base_dir().display()
            );
        }
    }
}

/// Fails unless containerd lists its CRI plugin as loaded (`ok`).
fn check_cri_plugin(layout: &Layout) -> anyhow::Result<()> {
    let listing = run_checked(
        ctr_command(layout).args(["plugins", "ls"]),
        Duration::from_secs(5),
    )?;
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
