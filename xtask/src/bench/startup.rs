//! `cargo xtask bench startup`: how long pods take to start through kernlet, against the same CRI
//! calls issued directly, for N = 1, 10 and 50 pods (each one busybox container `sleep 3600`,
//! `imagePullPolicy: Never`).
//!
//! - kernlet: a fresh release kernlet in standalone mode (configured like the demo:
//!   `cgroupsPerQOS: false`, `enforceNodeAllocatable: []`, `podLogsDir` in the fixture, a free
//!   localhost port) on a fresh fixture. Once `/healthz` answers and kernlet had [`SETTLE`] to
//!   finish starting, the clock starts just before the first manifest is written into its
//!   `staticPodPath` (each written to a hidden temporary name, then renamed), and stops when
//!   `GET /pods`, polled every [`POLL`], reports all N pods with every container
//!   `state.running`. kernlet's `VmRSS` is read right then.
//! - direct CRI: the `cri_startup` example of the tests crate on a fresh fixture issues
//!   `RunPodSandbox`, `PodSandboxStatus`, `ImageStatus`, `CreateContainer` and `StartContainer`
//!   with configs like kernlet's, for the N pods one after the other (sequential) and all at once
//!   (concurrent); the clock runs from the first call to the last `StartContainer`. It is an
//!   example of the tests crate because `kernlet-cri` needs `protoc` to build, and xtask must
//!   build before `cargo xtask setup` installs it.
//!
//! Every measurement runs on its own fixture, torn down afterwards, so no run sees another's
//! pods. Each is repeated `--repeats` times (interleaved: kernlet, sequential, concurrent, then
//! again) and the table shows the median with min–max; kernlet's added latency and ratio compare
//! its median with the better direct-CRI median.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use super::{Summary, cargo_build_release, machine, markdown_table, poll, target_dir};
use crate::{
    http,
    images::TEST_IMAGE,
    runtime::{Options, RuntimeFixture},
    setup,
};

/// How often the bench polls kernlet's `/pods`.
pub const POLL: Duration = Duration::from_millis(20);
/// How long kernlet may finish starting after `/healthz` answers, before the clock starts.
pub const SETTLE: Duration = Duration::from_secs(1);
/// The tests crate's example issuing the direct CRI calls.
const CRI_TOOL: &str = "cri_startup";
/// kernlet's node name in the bench (static pods are called `<name>-<node name>`).
const NODE_NAME: &str = "kernlet-bench";

#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    /// Pod counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 50])]
    pub pods: Vec<usize>,
    /// How often each measurement is repeated; the table shows median (min–max).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Longest one measurement may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
}

/// How the direct-CRI client issues the pods' calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sequential,
    Concurrent,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Concurrent => "concurrent",
        }
    }
}

/// The binaries under test.
struct Binaries {
    kernlet: PathBuf,
    cri_tool: PathBuf,
}

/// All measurements for one pod count.
#[derive(Debug, Default)]
struct Samples {
    pods: usize,
    kernlet: Vec<f64>,
    rss_mib: Vec<f64>,
    sequential: Vec<f64>,
    concurrent: Vec<f64>,
}

pub fn cli(args: &StartupArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("bench startup runs containerd fixtures and needs root");
    }
    if args.repeats == 0 || args.pods.is_empty() {
        bail!("nothing to measure: give at least one pod count and one repeat");
    }
    setup::ensure()?;
    cargo_build_release(&["-p", "kernlet", "--bin", "kernlet"])?;
    cargo_build_release(&["-p", "kernlet-tests", "--example", CRI_TOOL])?;
    let release = target_dir().join("release");
    let binaries = Binaries {
        kernlet: release.join("kernlet"),
        cri_tool: release.join("examples").join(CRI_TOOL),
    };
    let timeout = Duration::from_secs(args.timeout);
    let started = Instant::now();
    let mut all = Vec::new();
    for &pods in &args.pods {
        let mut samples = Samples {
            pods,
            ..Samples::default()
        };
        for run in 1..=args.repeats {
            let log = logs_dir().join(format!("kernlet-{pods}pods-run{run}.log"));
            let (seconds, rss) = kernlet_sample(&binaries.kernlet, pods, timeout, &log)?;
            let sequential = cri_sample(&binaries.cri_tool, pods, Mode::Sequential)?;
            let concurrent = cri_sample(&binaries.cri_tool, pods, Mode::Concurrent)?;
            let rss_mib = rss as f64 / 1024.0;
            println!(
                "bench: {pods} pods, run {run}/{}: kernlet {seconds:.3} s (RSS {rss_mib:.1} MiB), \
                 direct CRI sequential {sequential:.3} s, concurrent {concurrent:.3} s",
                args.repeats
            );
            samples.kernlet.push(seconds);
            samples.rss_mib.push(rss_mib);
            samples.sequential.push(sequential);
            samples.concurrent.push(concurrent);
        }
        all.push(samples);
    }
    println!();
    println!(
        "Pod startup: kernlet against direct CRI, median (min–max) of {} runs",
        args.repeats
    );
    println!("machine: {}", machine());
    println!();
    print!("{}", table(&all)?);
    println!();
    println!(
        "kernlet: from just before the first manifest is written into staticPodPath until GET \
         /pods (polled every {} ms) shows all N pods with every container running; RSS is \
         kernlet's VmRSS then.",
        POLL.as_millis()
    );
    println!(
        "direct CRI: RunPodSandbox, PodSandboxStatus, ImageStatus, CreateContainer, \
         StartContainer per pod, from the first call until the last StartContainer returned; \
         added latency and ratio compare kernlet with the better (lower median) direct-CRI mode."
    );
    println!(
        "each run on a fresh containerd fixture (and a fresh kernlet); kernlet logs in {}; total \
         bench time {:.0} s",
        logs_dir().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The results as a Markdown table.
fn table(all: &[Samples]) -> Result<String> {
    let header = [
        "pods",
        "kernlet",
        "direct CRI sequential",
        "direct CRI concurrent",
        "kernlet added (vs best CRI)",
        "ratio",
        "kernlet RSS",
    ];
    let mut rows = Vec::new();
    for samples in all {
        let summary = |values: &[f64]| Summary::of(values).context("no samples");
        let kernlet = summary(&samples.kernlet)?;
        let sequential = summary(&samples.sequential)?;
        let concurrent = summary(&samples.concurrent)?;
        let rss = summary(&samples.rss_mib)?;
        let (best, mode) = if concurrent.median < sequential.median {
            (concurrent, Mode::Concurrent)
        } else {
            (sequential, Mode::Sequential)
        };
        rows.push(vec![
            samples.pods.to_string(),
            kernlet.display(3, "s"),
            sequential.display(3, "s"),
            concurrent.display(3, "s"),
            format!("{:.3} s ({})", kernlet.median - best.median, mode.name()),
            format!("{:.2}×", kernlet.median / best.median),
            rss.display(1, "MiB"),
        ]);
    }
    Ok(markdown_table(&header, &rows))
}

/// Runs `body` on a fresh fixture and tears the fixture down again, whatever `body` returned.
pub(super) fn with_fixture<T>(body: impl FnOnce(&RuntimeFixture) -> Result<T>) -> Result<T> {
    let fixture = RuntimeFixture::start(Options::default())?;
    let result = body(&fixture);
    let teardown = fixture.stop().context("tearing the bench fixture down");
    let value = result?;
    teardown?;
    Ok(value)
}

/// Where the kernlet logs of the runs are kept: `target/xtask/bench/startup`.
fn logs_dir() -> PathBuf {
    crate::xtask_dir().join("bench").join("startup")
}

/// One kernlet measurement: seconds until all `pods` run, and kernlet's RSS in KiB then. The
/// kernlet log is copied to `keep_log`.
fn kernlet_sample(
    binary: &Path,
    pods: usize,
    timeout: Duration,
    keep_log: &Path,
) -> Result<(f64, u64)> {
    with_fixture(|fixture| {
        let mut kernlet = Kernlet::start(binary, fixture)?;
        let result = time_kernlet(&mut kernlet, pods, timeout);
        let stopped = kernlet.stop();
        if let Err(error) = keep(&fixture.base_dir().join("bench/kernlet.log"), keep_log) {
            eprintln!("bench: keeping the kernlet log: {error:#}");
        }
        let sample = result?;
        stopped?;
        Ok(sample)
    })
}

fn time_kernlet(kernlet: &mut Kernlet, pods: usize, timeout: Duration) -> Result<(f64, u64)> {
    let manifests = kernlet.dir.join("manifests");
    let started = Instant::now();
    for index in 0..pods {
        write_manifest(&manifests, index)?;
    }
    let waited = poll("all pods run", POLL, timeout, || {
        kernlet.check_alive()?;
        let body = kernlet.get("/pods").unwrap_or_default();
        Ok((running_pods(&body) >= pods).then_some(()))
    });
    let seconds = started.elapsed().as_secs_f64();
    if let Err(error) = waited {
        bail!(
            "{error:#}: {} of {pods} pods run; kernlet log tail:\n{}",
            running_pods(&kernlet.get("/pods").unwrap_or_default()),
            kernlet.log_tail(30)
        );
    }
    Ok((seconds, kernlet.rss_kib()?))
}

/// Copies `from` to `to`, creating `to`'s directory.
pub(super) fn keep(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Writes static pod `bench-<index>` as editors do: a hidden temporary file, then a rename.
pub(super) fn write_manifest(dir: &Path, index: usize) -> Result<()> {
    let name = format!("bench-{index}");
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
         image: {TEST_IMAGE}\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n"
    );
    replace_file(dir, &format!("{name}.yaml"), &text)
}

/// Writes `dir/name` through a hidden temporary file renamed into place, so a watcher never
/// sees it half written.
pub(super) fn replace_file(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// How many pods of a `/pods` body have containers, all of them `state.running`.
pub(super) fn running_pods(body: &str) -> usize {
    let Ok(list) = serde_json::from_str::<Value>(body) else {
        return 0;
    };
    list["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|pod| {
                pod["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|statuses| {
                        !statuses.is_empty()
                            && statuses.iter().all(|c| c["state"]["running"].is_object())
                    })
            })
            .count()
    })
}

/// The resident set size (`VmRSS` of `/proc/<pid>/status`) of process `pid`, in KiB.
pub(super) fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Stops `child` (called `what` in errors): SIGTERM, then SIGKILL after `grace`.
pub(super) fn terminate(child: &mut Child, what: &str, grace: Duration) -> Result<()> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let _ = kill(pid, Signal::SIGTERM);
    let exited = poll(
        &format!("{what} exits"),
        Duration::from_millis(20),
        grace,
        || {
            child
                .try_wait()
                .with_context(|| format!("waiting for {what}"))
        },
    );
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{what} did not exit within {grace:?} of SIGTERM; killed it");
    }
    Ok(())
}

/// One direct-CRI measurement: seconds until all `pods` were started.
fn cri_sample(tool: &Path, pods: usize, mode: Mode) -> Result<f64> {
    with_fixture(|fixture| {
        let logs = fixture.base_dir().join("bench-logs");
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let output = Command::new(tool)
            .arg(fixture.endpoint_uri())
            .arg(&logs)
            .arg(pods.to_string())
            .arg(mode.name())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("starting {}", tool.display()))?;
        if !output.status.success() {
            bail!(
                "{} {pods} {}: {}",
                tool.display(),
                mode.name(),
                output.status
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let result: Value =
            serde_json::from_str(line).with_context(|| format!("{CRI_TOOL} printed {stdout:?}"))?;
        result["seconds"]
            .as_f64()
            .with_context(|| format!("{CRI_TOOL} printed no seconds: {line}"))
    })
}

/// A kernlet process on a fixture, with its directories under `<fixture>/bench`; killed on drop.
pub(super) struct Kernlet {
    child: Option<Child>,
    pub(super) dir: PathBuf,
    /// The read-only port (plain HTTP).
    pub(super) port: u16,
    /// The kubelet port (TLS), with the fixture's client certificate.
    pub(super) secure: http::TlsClient,
}

impl Kernlet {
    /// Writes the config, starts kernlet, waits until `/healthz` answers, then [`SETTLE`].
    fn start(binary: &Path, fixture: &RuntimeFixture) -> Result<Self> {
        Self::start_with(binary, fixture, &[])
    }

    /// As [`Kernlet::start`], with `args` added to kernlet's command line.
    pub(super) fn start_with(
        binary: &Path,
        fixture: &RuntimeFixture,
        args: &[&str],
    ) -> Result<Self> {
        let dir = fixture.base_dir().join("bench");
        for sub in ["manifests", "root", "logs"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        // Read through the read-only port (plain HTTP, as the benches read the kubelet), so the
        // figures are the handlers', not TLS handshakes'.
        let port = http::free_port()?;
        let secure_port = http::free_port()?;
        let config = fixture.kernlet_config(
            &dir.join("manifests"),
            &dir.join("logs"),
            secure_port,
            &format!("readOnlyPort: {port}\n"),
        )?;
        let config_path = dir.join("config.yaml");
        fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log = fs::File::create(dir.join("kernlet.log")).context("creating kernlet.log")?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .arg("--root-dir")
            .arg(dir.join("root"))
            .args(["--hostname-override", NODE_NAME])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let secure = http::TlsClient {
            host: "127.0.0.1".to_owned(),
            port: secure_port,
            pki: fixture.client_pki()?,
            server_ca: dir.join("root/pki/kubelet.crt"),
            server_name: "localhost".to_owned(),
        };
        let mut kernlet = Self {
            child: Some(child),
            dir,
            port,
            secure,
        };
        let ready = poll(
            "kernlet answers /healthz",
            Duration::from_millis(50),
            Duration::from_secs(30),
            || {
                kernlet.check_alive()?;
                Ok(kernlet.get("/healthz").is_ok().then_some(()))
            },
        );
        if let Err(error) = ready {
            bail!("{error:#}; kernlet log tail:\n{}", kernlet.log_tail(30));
        }
        thread::sleep(SETTLE);
        Ok(kernlet)
    }

    pub(super) fn get(&self, path: &str) -> Result<String> {
        http::get(self.port, path)
    }

    /// Fails (with the log's tail) if kernlet has exited.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait().context("waiting for kernlet")?,
            None => bail!("kernlet was stopped"),
        };
        if let Some(status) = exited {
            self.child = None;
            bail!(
                "kernlet exited by itself ({status}); log tail:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// kernlet's process id, while it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kernlet's resident set size (`VmRSS` of `/proc/<pid>/status`) in KiB.
    pub(super) fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.child.as_ref().context("kernlet is not running")?.id())
    }

    /// The last `lines` lines of kernlet's log.
    pub(super) fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("kernlet.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s. kernlet leaves its pods running; the fixture's
    /// teardown removes them.
    pub(super) fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&mut child, "kernlet", Duration::from_secs(10))
    }
}

impl Drop for Kernlet {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pods_whose_containers_all_run() {
        let body = r#"{"items": [
            {"status": {"containerStatuses": [{"state": {"running": {"startedAt": "x"}}}]}},
            {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}},
            {"status": {"containerStatuses": [
                {"state": {"running": {}}}, {"state": {"terminated": {"exitCode": 0}}}]}},
            {"status": {}}
        ]}"#;
        assert_eq!(running_pods(body), 1);
        assert_eq!(running_pods("not json"), 0);
    }

    #[test]
    fn manifests_are_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        write_manifest(dir.path(), 7).unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["bench-7.yaml"]);
        let text = fs::read_to_string(dir.path().join("bench-7.yaml")).unwrap();
        assert!(text.contains("imagePullPolicy: Never"));
        assert!(text.contains("[\"sleep\", \"3600\"]"));
    }
}
