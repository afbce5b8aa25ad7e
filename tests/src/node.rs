//! A test node: the real `kernlet` binary in standalone mode on a private containerd fixture, with
//! its own manifest directory, root and log directories, and an HTTP port to read `/pods` from.
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::http::TlsClient;
use xtask::runtime::{Options, RuntimeFixture};

/// The node name every test node runs as (`--hostname-override`).
pub const NODE_NAME: &str = "testnode";

/// Where the kernlet binary is: `KERNLET_BIN` (set by `cargo xtask test` for the node VM), else the workspace's
/// debug build, built now if missing.
pub fn kernlet_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KERNLET_BIN") {
        return Ok(PathBuf::from(path));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| xtask::workspace_root().join("target"), PathBuf::from);
    let binary = target.join("debug/kernlet");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "-q", "-p", "kernlet", "--bin", "kernlet"])
        .current_dir(xtask::workspace_root())
        .status()
        .context("building kernlet")?;
    if !status.success() {
        bail!("building kernlet failed: {status}");
    }
    Ok(binary)
}

/// kernlet plus its runtime and directories; everything is torn down on drop.
pub struct TestNode {
    pub fixture: Option<RuntimeFixture>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// A client of kernlet's TLS port with the fixture's client certificate.
    pub client: TlsClient,
    kernlet: Option<Child>,
    binary: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl TestNode {
    /// Starts a fixture and kernlet with an empty manifest directory.
    pub fn start() -> Result<Self> {
        Self::start_with("", &[])
    }

    /// As [`TestNode::start`], with `extra_yaml` (whole `key: value` lines) appended to the
    /// generated `KubeletConfiguration` and `env` set for every kernlet started. `{cgroup_root}`
    /// in `extra_yaml` becomes the fixture's cgroup subtree (torn down with the fixture), the
    /// place for `cgroupRoot` when `cgroupsPerQOS` is on.
    pub fn start_with(extra_yaml: &str, env: &[(&str, &str)]) -> Result<Self> {
        Self::start_full(extra_yaml, env, &[], None)
    }

    /// As [`TestNode::start_with`], with extra command-line `args` for kernlet and, when given,
    /// `client` as the credentials of [`TestNode::client`] (e.g. a cluster's admin, when
    /// `extra_yaml` points `clientCAFile` at the cluster's CA).
    pub fn start_full(
        extra_yaml: &str,
        env: &[(&str, &str)],
        args: &[String],
        client: Option<xtask::pki::ClientPki>,
    ) -> Result<Self> {
        let fixture = RuntimeFixture::start(Options::default())?;
        let dir = tempfile::Builder::new()
            .prefix("kernlet-node-")
            .tempdir_in(fixture.base_dir())?;
        for sub in ["manifests", "root", "logs"] {
            fs::create_dir_all(dir.path().join(sub))?;
        }
        let port = xtask::http::free_port()?;
        let pki = match client {
            Some(pki) => pki,
            None => fixture.client_pki()?,
        };
        // A serving certificate from the cluster (serverTLSBootstrap) is signed by the CA of
        // the cluster's clients and names the node.
        let (server_ca, server_name) = if args.iter().any(|a| a == "--rotate-server-certificates") {
            (pki.ca.clone(), NODE_NAME.to_owned())
        } else {
            (
                dir.path().join("root/pki/kubelet.crt"),
                "localhost".to_owned(),
            )
        };
        let config = fixture.kernlet_config(
            &dir.path().join("manifests"),
            &dir.path().join("logs"),
            port,
            &format!(
                "resolvConf: \"\"\n{}",
                extra_yaml.replace("{cgroup_root}", &fixture.cgroup_parent())
            ),
        )?;
        fs::write(dir.path().join("config.yaml"), config)?;
        let mut node = Self {
            fixture: Some(fixture),
            port,
            client: TlsClient {
                host: "127.0.0.1".to_owned(),
                port,
                pki,
                server_ca,
                server_name,
            },
            dir,
            kernlet: None,
            binary: kernlet_binary()?,
            env: env
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            args: args.to_vec(),
        };
        node.start_kernlet()?;
        Ok(node)
    }

    /// The fixture's cgroup subtree (what `{cgroup_root}` stands for), e.g. `/kernlet-3`.
    #[must_use]
    pub fn cgroup_root(&self) -> String {
        self.fixture
            .as_ref()
            .map(RuntimeFixture::cgroup_parent)
            .unwrap_or_default()
    }

    #[must_use]
    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    #[must_use]
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Starts kernlet (again) with the node's config.
    pub fn start_kernlet(&mut self) -> Result<()> {
        let log = fs::File::create(self.dir.path().join("kernlet.log"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .arg("--root-dir")
            .arg(self.dir.path().join("root"))
            .args(["--hostname-override", NODE_NAME])
            .args(&self.args)
            .env("RUST_LOG", "kernlet=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.kernlet = Some(child);
        // /pods answers 200 once kernlet knows every pod it runs (503 before).
        self.wait_until("kernlet serves /pods", Duration::from_mins(1), |node| {
            Ok(node.get("/pods").is_ok())
        })
    }

    /// Kills kernlet with `signal` and waits for it to exit.
    pub fn stop_kernlet(&mut self, signal: nix::sys::signal::Signal) -> Result<()> {
        if let Some(mut child) = self.kernlet.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            nix::sys::signal::kill(pid, signal)?;
            child.wait()?;
        }
        Ok(())
    }

    /// Writes manifest `name` atomically (write then rename, as editors and config tools do).
    pub fn write_manifest(&self, name: &str, text: &str) -> Result<()> {
        let tmp = self.manifests().join(format!(".{name}.tmp"));
        fs::write(&tmp, text)?;
        fs::rename(&tmp, self.manifests().join(name))?;
        Ok(())
    }

    pub fn remove_manifest(&self, name: &str) -> Result<()> {
        Ok(fs::remove_file(self.manifests().join(name))?)
    }

    /// `GET path` on kernlet's port: the body of a 200 response.
    pub fn get(&self, path: &str) -> Result<String> {
        self.client.get(path)
    }

    /// The pods kernlet reports, as JSON objects.
    pub fn pods(&self) -> Result<Vec<Value>> {
        let list: Value = serde_json::from_str(&self.get("/pods")?)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The names of the pods kernlet reports, in its order.
    pub fn pod_names(&self) -> Result<Vec<String>> {
        Ok(self
            .pods()?
            .iter()
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect())
    }

    /// The pod whose metadata.name is `name`, if reported.
    pub fn pod(&self, name: &str) -> Result<Option<Value>> {
        Ok(self
            .pods()?
            .into_iter()
            .find(|p| p["metadata"]["name"] == name))
    }

    /// Polls `check` every 100 ms until it is true or `timeout` passes (then fails with the
    /// kernlet log's tail).
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            match check(self) {
                Ok(true) => return Ok(()),
                Ok(false) => last = None,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = fs::read_to_string(self.dir.path().join("kernlet.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "timed out after {timeout:?} waiting until {what} (last error: {last:?})\nkernlet log tail:\n{}",
            tail.join("\n")
        )
    }

    /// The kernlet log so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("kernlet.log")).unwrap_or_default()
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.stop_kernlet(nix::sys::signal::Signal::SIGKILL);
        if let Some(fixture) = self.fixture.take()
            && let Err(e) = fixture.stop()
        {
            eprintln!("fixture teardown failed: {e:#}");
        }
    }
}
