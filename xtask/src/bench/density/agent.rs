//! The two agents under test, started the same way on the same fixture: one
//! `KubeletConfiguration` for both (static pods, cgroupfs driver, `QoS` cgroups under the
//! fixture's cgroup subtree, node allocatable enforced on pods, 250 max pods, anonymous reads),
//! each exec'd from a shell that first moved itself into the agent's own cgroup, so every CPU
//! microsecond the agent or anything it forks spends is in that cgroup's `cpu.stat`.
use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::super::startup::{rss_kib, terminate};
use crate::{http, runtime::RuntimeFixture};

/// The node name both agents use (static pods are called `<name>-<node name>`).
pub const NODE_NAME: &str = "density";
/// The node VM's own address (`dummy0`, see `vm/initramfs.rs`), for the kubelet's `--node-ip`.
const NODE_IP: &str = "192.0.2.10";
/// The read-only plain-HTTP port, where the bench reads both agents.
const READ_PORT: u16 = 10255;
/// The authenticated HTTPS port of both.
const SECURE_PORT: u16 = 10250;
/// How long an agent may take to exit on SIGTERM (kernlet took over 10 s under TCG).
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest wait for a response: the kubelet's `/stats/summary` of 110 pods takes seconds under
/// TCG.
const READ_TIMEOUT: Duration = Duration::from_mins(1);

/// Which agent a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AgentKind {
    /// The upstream kubelet at its defaults.
    Kubelet,
    /// kernlet with `--housekeeping-interval` of this many seconds (its default is 1).
    Kernlet { housekeeping_s: u64 },
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kubelet => f.write_str("kubelet"),
            Self::Kernlet { housekeeping_s: 1 } => f.write_str("kernlet"),
            Self::Kernlet { housekeeping_s } => write!(f, "kernlet {housekeeping_s} s"),
        }
    }
}

/// The executables the bench runs inside the node VM.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kernlet: PathBuf,
    pub kubelet: PathBuf,
}

/// An agent's directories on a fixture: `<fixture>/agent/{manifests,root,logs}`.
pub struct AgentDirs {
    pub base: PathBuf,
}

impl AgentDirs {
    pub fn create(fixture: &RuntimeFixture) -> Result<Self> {
        let base = fixture.base_dir().join("agent");
        for sub in ["manifests", "root", "logs"] {
            let path = base.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(Self { base })
    }

    #[must_use]
    pub fn manifests(&self) -> PathBuf {
        self.base.join("manifests")
    }

    #[must_use]
    pub fn log(&self) -> PathBuf {
        self.base.join("agent.log")
    }
}

/// The one `KubeletConfiguration` both agents get. Fields kernlet does not know it ignores
/// (with a warning). Both serve `readOnlyPort`, where the bench reads them, anonymously.
#[must_use]
pub fn config(dirs: &AgentDirs, endpoint_uri: &str, cgroup_root: &str) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         staticPodPath: {manifests}\n\
         podLogsDir: {logs}\n\
         containerRuntimeEndpoint: {endpoint_uri}\n\
         cgroupDriver: cgroupfs\n\
         cgroupsPerQOS: true\n\
         cgroupRoot: {cgroup_root}\n\
         enforceNodeAllocatable: [pods]\n\
         failSwapOn: false\n\
         maxPods: 250\n\
         resolvConf: \"\"\n\
         address: 127.0.0.1\n\
         port: {SECURE_PORT}\n\
         readOnlyPort: {READ_PORT}\n\
         healthzBindAddress: 127.0.0.1\n\
         healthzPort: 10248\n\
         authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
         authorization: {{mode: AlwaysAllow}}\n",
        manifests = dirs.manifests().display(),
        logs = dirs.base.join("logs").display(),
    )
}

/// Creates the fixture's cgroup subtree (the agents' `cgroupRoot`; the kubelet insists it
/// exists) with every controller it has enabled for its children. Fixture teardown removes it.
pub fn create_cgroup_root(mount: &Path, fixture: &RuntimeFixture) -> Result<String> {
    let root = fixture.cgroup_parent();
    let dir = mount.join(root.trim_start_matches('/'));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let controllers = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    for controller in controllers.split_whitespace() {
        let control = dir.join("cgroup.subtree_control");
        fs::write(&control, format!("+{controller}"))
            .with_context(|| format!("enabling {controller} in {}", control.display()))?;
    }
    Ok(root)
}

/// A running agent; killed on drop.
pub struct Agent {
    pub kind: AgentKind,
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    /// Just before the agent's process was spawned.
    pub spawned: Instant,
}

impl Agent {
    /// Writes the config and spawns the agent into cgroup `cgroup` (a directory in the v2
    /// hierarchy): a shell writes its own pid into `cgroup.procs`, then execs the agent.
    pub fn spawn(
        kind: AgentKind,
        binaries: &Binaries,
        dirs: &AgentDirs,
        config_text: &str,
        cgroup: &Path,
    ) -> Result<Self> {
        let config = dirs.base.join("config.yaml");
        fs::write(&config, config_text).with_context(|| format!("writing {}", config.display()))?;
        let root = dirs.base.join("root");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(cgroup.join("cgroup.procs"));
        match kind {
            AgentKind::Kubelet => {
                command
                    .arg(&binaries.kubelet)
                    .arg("--config")
                    .arg(&config)
                    .arg("--root-dir")
                    .arg(&root)
                    .args(["--hostname-override", NODE_NAME, "--node-ip", NODE_IP]);
            }
            AgentKind::Kernlet { housekeeping_s } => {
                command
                    .arg(&binaries.kernlet)
                    .arg("--config")
                    .arg(&config)
                    .arg("--root-dir")
                    .arg(&root)
                    .args(["--hostname-override", NODE_NAME])
                    .arg("--housekeeping-interval")
                    .arg(format!("{housekeeping_s}s"));
            }
        }
        let log_path = dirs.log();
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let spawned = Instant::now();
        let child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {kind}"))?;
        Ok(Self {
            kind,
            child: Some(child),
            port: READ_PORT,
            log: log_path,
            spawned,
        })
    }

    /// `GET path` on the agent's read-only port.
    pub fn get(&self, path: &str) -> Result<String> {
        http::get_timeout(self.port, path, READ_TIMEOUT)
    }

    /// Fails (with the log's tail) if the agent has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait().context("waiting for the agent")?,
            None => bail!("{} was stopped", self.kind),
        };
        if let Some(status) = exited {
            self.child = None;
            bail!(
                "{} exited by itself ({status}); log tail:\n{}",
                self.kind,
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The agent's resident set size in MiB.
    pub fn rss_mib(&self) -> Result<f64> {
        let child = self.child.as_ref().context("the agent is not running")?;
        Ok(rss_kib(child.id())? as f64 / 1024.0)
    }

    /// The agent's log so far (empty if it cannot be read).
    #[must_use]
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the agent's log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_text();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 30 s (`STOP_GRACE`). Both agents leave their pods running; the
    /// fixture's teardown removes them.
    pub fn stop(mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => terminate(&mut child, &self.kind.to_string(), STOP_GRACE),
            None => Ok(()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
