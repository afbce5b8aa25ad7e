//! `cargo xtask bench stats`: what kernlet's stats collection costs (issue 4), in one run.
//!
//! - **Readers, synthetic**: `cargo xtask bench readers`' example (`cgroupfs_read`) on 10, 100
//!   and 500 empty cgroups in the cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on a hybrid host,
//!   where a cgroup has only `cpu.stat` and the PSI files), `SYNTHETIC_ROUNDS` rounds: open+read+
//!   close per file (`read_cgroup`), descriptors kept open and re-read with `pread`
//!   (`CgroupFiles`, what kernlet's collector uses) and the kept descriptors batched through
//!   `io_uring`. CPU µs per cgroup per round, which at one round per second is CPU µs per
//!   container per second.
//! - **kernlet**: a release kernlet (configured as in `bench startup`) on a fresh fixture with 10
//!   and 100 busybox pods, run once per `--housekeeping-interval` (1 s, kernlet's default, and
//!   10 s, upstream cAdvisor's). kernlet runs in a cgroup of its own, so its CPU time (`usage_usec`
//!   of that cgroup's `cpu.stat`, every thread and child included) is exact. Once every pod runs
//!   and `SETTLE` passed, the CPU time over an idle `--window` is divided by containers ×
//!   seconds; the mean collection round comes from kernlet's
//!   `kernlet_stats_collection_duration_seconds` over the same window, RSS (`VmRSS`) is read at
//!   its end.
//! - **Endpoints** (runs at the first interval only): `--requests` sequential `GET`s of
//!   `/stats/summary` and `/metrics/cadvisor`, each on a new connection; p50, p99 and max.
//! - **eBPF** (same runs): kernlet enables the kernel's BPF run-time stats and exports them in
//!   `/metrics` every 30 collection rounds; ns per event per program is
//!   `kernlet_ebpf_program_run_time_seconds_total / kernlet_ebpf_program_runs_total`, cumulative
//!   since kernlet loaded the programs.
//! - **Burst** (`--burst N`, same runs): `N` GETs of `/metrics/cadvisor` and `/stats/summary`
//!   alternately from `BURST_CLIENTS` concurrent clients; RSS before, right after and at each
//!   of `BURST_IDLE` later, so an allocator that keeps its peak shows (issue 10, item 5).
//!   `--kernlet PATH` measures another build (for example `--no-default-features`, glibc's
//!   malloc) instead of the release kernlet.
//!
//! Every kernlet run gets its own fixture, torn down afterwards; kernlet logs are kept in
//! `target/xtask/bench/stats/`.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Summary, cargo_build_release, machine, markdown_table, poll,
    startup::{Kernlet, POLL, keep, running_pods, with_fixture, write_manifest},
    target_dir,
};
use crate::setup;

/// The tests crate's example measuring the three readers (shared with `bench readers`).
const TOOL: &str = "cgroupfs_read";
/// Rounds of the readers example per cgroup count.
const SYNTHETIC_ROUNDS: usize = 100;
/// Idle time once every pod runs, before the CPU window opens.
const SETTLE: Duration = Duration::from_secs(5);
/// Longest wait for kernlet's first export of the eBPF run-time stats.
const EBPF_WAIT: Duration = Duration::from_mins(1);
/// Concurrent clients of the burst.
const BURST_CLIENTS: usize = 32;
/// Idle times after the burst at which RSS is read again.
const BURST_IDLE: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(30)];

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Synthetic cgroup counts for the readers, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 500])]
    pub cgroups: Vec<usize>,
    /// Pod counts for the real kernlet, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100])]
    pub pods: Vec<usize>,
    /// kernlet's `--housekeeping-interval`s in seconds; endpoints and eBPF are measured at the
    /// first.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10])]
    pub intervals: Vec<u64>,
    /// Length of the idle CPU window, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub window: u64,
    /// Sequential GETs per endpoint.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Longest the pods of one run may take to start, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 180)]
    pub timeout: u64,
    /// GETs of the concurrent burst after the latency runs (0: no burst).
    #[arg(long, value_name = "GETS", default_value_t = 2000)]
    pub burst: usize,
    /// A kernlet binary to measure instead of building the release one.
    #[arg(long, value_name = "PATH")]
    pub kernlet: Option<PathBuf>,
}

/// One reader at one cgroup count: CPU µs per cgroup per round.
#[derive(Debug)]
struct ReaderRow {
    cgroups: usize,
    /// `open-read-close`, `pread-reuse` or `io_uring`.
    variant: String,
    cpu_us: Summary,
}

/// One endpoint's latency.
#[derive(Debug)]
pub(super) struct Latency {
    pub(super) path: &'static str,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
    pub(super) bytes: usize,
}

/// One eBPF program's cumulative cost.
#[derive(Debug)]
struct ProgramCost {
    name: String,
    runs: f64,
    seconds: f64,
}

/// RSS around the concurrent burst, in MiB.
#[derive(Debug)]
struct Burst {
    gets: usize,
    before_mib: f64,
    after_mib: f64,
    /// At each of `BURST_IDLE`.
    idle_mib: Vec<f64>,
    seconds: f64,
}

/// One kernlet run.
#[derive(Debug)]
struct KernletRun {
    pods: usize,
    interval: u64,
    /// CPU seconds per wall second over the window.
    cores: f64,
    round_ms: Option<f64>,
    rss_mib: f64,
    /// Minor page faults per second over the window (an allocator that returns memory faults
    /// it back in).
    faults_per_s: f64,
    latency: Vec<Latency>,
    ebpf: Vec<ProgramCost>,
    burst: Option<Burst>,
}

impl KernletRun {
    fn us_per_container_s(&self) -> f64 {
        self.cores * 1e6 / self.pods as f64
    }
}

pub fn cli(args: &StatsArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("bench stats creates cgroups and runs containerd fixtures; it needs root");
    }
    if args.cgroups.is_empty() || args.pods.is_empty() || args.intervals.is_empty() {
        bail!("nothing to measure: give cgroup counts, pod counts and intervals");
    }
    setup::ensure()?;
    let release = target_dir().join("release");
    let binary = match &args.kernlet {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--kernlet {}: no such file", path.display()),
        None => {
            cargo_build_release(&["-p", "kernlet", "--bin", "kernlet"])?;
            release.join("kernlet")
        }
    };
    cargo_build_release(&["-p", "kernlet-tests", "--example", TOOL])?;
    let mount = v2_mount()?;
    let started = Instant::now();
    let (files, readers) = synthetic(&release.join("examples").join(TOOL), &args.cgroups)?;
    let mut runs = Vec::new();
    for &pods in &args.pods {
        for (index, &interval) in args.intervals.iter().enumerate() {
            let run = kernlet_run(&binary, &mount, pods, interval, index == 0, args)?;
            println!(
                "bench: kernlet, {pods} pods, interval {interval}s: {:.2} CPU µs per container per s, \
                 RSS {:.1} MiB",
                run.us_per_container_s(),
                run.rss_mib
            );
            runs.push(run);
        }
    }
    println!();
    println!("Stats collection (issue 4)");
    println!("machine: {}", machine());
    println!("cgroup v2 hierarchy: {}", mount.display());
    println!("kernlet: {}", binary.display());
    println!();
    print!("{}", cost_table(&readers, &runs, args));
    println!();
    println!(
        "synthetic: empty cgroups, each read as {files}, parsed into a sample; median (min–max) \
         of {SYNTHETIC_ROUNDS} rounds, CPU of the whole process (io_uring's io-wq workers included)."
    );
    println!(
        "kernlet: whole process (its own cgroup's usage_usec) over {} s of idle steady state, \
         one busybox container per pod; eBPF run time is charged to the traced tasks and is not \
         in it.",
        args.window
    );
    println!();
    print!("{}", kernlet_table(&runs));
    println!();
    print!("{}", ebpf_table(&runs));
    println!();
    print!("{}", latency_table(&runs, args.requests));
    println!();
    if runs.iter().any(|run| run.burst.is_some()) {
        print!("{}", burst_table(&runs));
        println!();
    }
    println!(
        "kernlet logs in {}; total bench time {:.0} s",
        logs_dir().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on a hybrid host, else `/sys/fs/cgroup`.
pub(super) fn v2_mount() -> Result<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| {
            nix::sys::statfs::statfs(path)
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        })
        .context("no cgroup v2 hierarchy mounted")
}

/// Where the kernlet logs of the runs are kept: `target/xtask/bench/stats`.
fn logs_dir() -> PathBuf {
    crate::xtask_dir().join("bench").join("stats")
}

/// Runs the readers example; the files each cgroup has, and its rows.
fn synthetic(tool: &Path, counts: &[usize]) -> Result<(String, Vec<ReaderRow>)> {
    let counts: Vec<String> = counts.iter().map(ToString::to_string).collect();
    let output = Command::new(tool)
        .arg(counts.join(","))
        .arg(SYNTHETIC_ROUNDS.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", tool.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}", tool.display(), output.status);
    }
    let (mut files, mut rows) = (String::new(), Vec::new());
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{TOOL} printed {line:?}"))?;
        if let Some(names) = value["files"].as_array() {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            files = names.join(", ");
            continue;
        }
        let cgroups = value["cgroups"].as_u64().context("no cgroups")? as usize;
        let variant = value["variant"].as_str().context("no variant")?.to_owned();
        let per_cgroup: Vec<f64> = value["cpu_us"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|us| us / cgroups as f64)
            .collect();
        let cpu_us = Summary::of(&per_cgroup).context("no CPU samples")?;
        println!(
            "bench: {cgroups} cgroups, {variant}: {:.2} CPU µs per cgroup per round",
            cpu_us.median
        );
        rows.push(ReaderRow {
            cgroups,
            variant,
            cpu_us,
        });
    }
    Ok((files, rows))
}

/// A cgroup an agent is moved into, to read its CPU time; removed on drop.
pub(super) struct CpuCgroup {
    pub(super) dir: PathBuf,
}

impl CpuCgroup {
    /// Creates cgroup `name` under the v2 `mount`.
    pub(super) fn create(mount: &Path, name: &str) -> Result<Self> {
        let dir = mount.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub(super) fn adopt(&self, pid: u32) -> Result<()> {
        let procs = self.dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).with_context(|| format!("writing {}", procs.display()))
    }

    /// The CPU time of everything that ran in the cgroup.
    pub(super) fn usage(&self) -> Result<Duration> {
        let path = self.dir.join("cpu.stat");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .find_map(|line| line.strip_prefix("usage_usec "))
            .and_then(|value| value.trim().parse().ok())
            .map(Duration::from_micros)
            .with_context(|| format!("no usage_usec in {}", path.display()))
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir(&self.dir) {
            eprintln!("bench: removing {}: {error}", self.dir.display());
        }
    }
}

/// One kernlet run on a fresh fixture; `probe` adds the endpoint and eBPF measurements.
fn kernlet_run(
    binary: &Path,
    mount: &Path,
    pods: usize,
    interval: u64,
    probe: bool,
    args: &StatsArgs,
) -> Result<KernletRun> {
    with_fixture(|fixture| {
        let cgroup = CpuCgroup::create(mount, &format!("kernlet-bench-stats-{}", fixture.id()))?;
        let interval_arg = format!("{interval}s");
        let mut kernlet =
            Kernlet::start_with(binary, fixture, &["--housekeeping-interval", &interval_arg])?;
        let result = kernlet
            .pid()
            .context("kernlet is not running")
            .and_then(|pid| cgroup.adopt(pid))
            .and_then(|()| measure(&mut kernlet, &cgroup, pods, interval, probe, args));
        let stopped = kernlet.stop();
        let log = logs_dir().join(format!("kernlet-{pods}pods-{interval}s.log"));
        if let Err(error) = keep(&fixture.base_dir().join("bench/kernlet.log"), &log) {
            eprintln!("bench: keeping the kernlet log: {error:#}");
        }
        let run = result?;
        stopped?;
        Ok(run)
    })
}

fn measure(
    kernlet: &mut Kernlet,
    cgroup: &CpuCgroup,
    pods: usize,
    interval: u64,
    probe: bool,
    args: &StatsArgs,
) -> Result<KernletRun> {
    let manifests = kernlet.dir.join("manifests");
    for index in 0..pods {
        write_manifest(&manifests, index)?;
    }
    let timeout = Duration::from_secs(args.timeout);
    let waited = poll("all pods run", POLL * 10, timeout, || {
        kernlet.check_alive()?;
        let body = kernlet.get("/pods").unwrap_or_default();
        Ok((running_pods(&body) >= pods).then_some(()))
    });
    if let Err(error) = waited {
        bail!("{error:#}; kernlet log tail:\n{}", kernlet.log_tail(30));
    }
    thread::sleep(SETTLE);
    let before = rounds(&kernlet.get("/metrics")?);
    let pid = kernlet.pid().context("kernlet is not running")?;
    let (cpu, faults, opened) = (cgroup.usage()?, minor_faults(pid)?, Instant::now());
    thread::sleep(Duration::from_secs(args.window));
    let (used, wall) = (cgroup.usage()?.saturating_sub(cpu), opened.elapsed());
    kernlet.check_alive()?;
    let faults = minor_faults(pid)?.saturating_sub(faults);
    let rss_mib = kernlet.rss_kib()? as f64 / 1024.0;
    let after = rounds(&kernlet.get("/metrics")?);
    let round_ms = match (before, after) {
        (Some((sum0, count0)), Some((sum1, count1))) if count1 > count0 => {
            Some((sum1 - sum0) * 1e3 / (count1 - count0))
        }
        _ => None,
    };
    let mut run = KernletRun {
        pods,
        interval,
        cores: used.as_secs_f64() / wall.as_secs_f64(),
        round_ms,
        rss_mib,
        faults_per_s: faults as f64 / wall.as_secs_f64(),
        latency: Vec::new(),
        ebpf: Vec::new(),
        burst: None,
    };
    if probe {
        for path in ["/stats/summary", "/metrics/cadvisor"] {
            run.latency
                .push(latency(|p| kernlet.get(p), path, args.requests)?);
        }
        run.ebpf = ebpf_costs(kernlet);
        if args.burst > 0 {
            run.burst = Some(burst(kernlet, args.burst)?);
        }
    }
    Ok(run)
}

/// The minor page faults of process `pid` so far (`minflt` of `/proc/<pid>/stat`, every thread).
fn minor_faults(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_minflt(&stat).with_context(|| format!("no minflt in /proc/{pid}/stat"))
}

/// `minflt`, the 10th field of a `/proc/<pid>/stat` line (the 8th after the command's `)`).
fn parse_minflt(stat: &str) -> Option<u64> {
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(7)?.parse().ok()
}

/// `gets` GETs from `BURST_CLIENTS` concurrent clients, RSS around them.
fn burst(kernlet: &mut Kernlet, gets: usize) -> Result<Burst> {
    let before_mib = kernlet.rss_kib()? as f64 / 1024.0;
    let started = Instant::now();
    thread::scope(|scope| {
        let kernlet = &*kernlet;
        let clients: Vec<_> = (0..BURST_CLIENTS)
            .map(|client| {
                scope.spawn(move || -> Result<()> {
                    for get in (client..gets).step_by(BURST_CLIENTS) {
                        let path = ["/metrics/cadvisor", "/stats/summary"][get % 2];
                        kernlet.get(path)?;
                    }
                    Ok(())
                })
            })
            .collect();
        clients.into_iter().try_for_each(|client| {
            client
                .join()
                .map_err(|_| anyhow::anyhow!("a burst client panicked"))?
        })
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let after_mib = kernlet.rss_kib()? as f64 / 1024.0;
    let mut idle_mib = Vec::new();
    let mut slept = Duration::ZERO;
    for idle in BURST_IDLE {
        thread::sleep(idle.saturating_sub(slept));
        slept = idle;
        kernlet.check_alive()?;
        idle_mib.push(kernlet.rss_kib()? as f64 / 1024.0);
    }
    Ok(Burst {
        gets,
        before_mib,
        after_mib,
        idle_mib,
        seconds,
    })
}

/// `requests` sequential GETs of `path` through `get`.
pub(super) fn latency(
    get: impl Fn(&str) -> Result<String>,
    path: &'static str,
    requests: usize,
) -> Result<Latency> {
    let mut millis = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests.max(1) {
        let sent = Instant::now();
        bytes = get(path)?.len();
        millis.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    millis.sort_by(f64::total_cmp);
    Ok(Latency {
        path,
        p50_ms: percentile(&millis, 50.0),
        p99_ms: percentile(&millis, 99.0),
        max_ms: millis.last().copied().unwrap_or_default(),
        bytes,
    })
}

/// The nearest-rank `p`th percentile of `sorted` (ascending, not empty).
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The eBPF programs' costs once kernlet exported them (every 30 rounds); empty if it did not
/// within [`EBPF_WAIT`] (no program loaded, or no run-time stats).
fn ebpf_costs(kernlet: &mut Kernlet) -> Vec<ProgramCost> {
    let found = poll(
        "kernlet exports eBPF run-time stats",
        POLL * 25,
        EBPF_WAIT,
        || {
            kernlet.check_alive()?;
            let costs = programs(&kernlet.get("/metrics")?);
            Ok((costs.iter().any(|c| c.runs > 0.0)).then_some(costs))
        },
    );
    found.unwrap_or_else(|error| {
        eprintln!("bench: {error:#}");
        Vec::new()
    })
}

/// Samples `name{labels} value` of family `name` in a Prometheus text exposition.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = rest.rsplit_once(' ')?;
        if !(labels.is_empty() || labels.starts_with('{')) {
            return None;
        }
        Some((labels, value.parse().ok()?))
    })
}

/// `(sum, count)` of kernlet's collection round histogram.
fn rounds(metrics: &str) -> Option<(f64, f64)> {
    let family = "kernlet_stats_collection_duration_seconds";
    let sum = samples(metrics, &format!("{family}_sum")).next()?.1;
    let count = samples(metrics, &format!("{family}_count")).next()?.1;
    Some((sum, count))
}

/// Every program's cumulative run time and runs from kernlet's `/metrics`.
fn programs(metrics: &str) -> Vec<ProgramCost> {
    let program = |labels: &str| {
        labels
            .strip_prefix("{program=\"")
            .and_then(|l| l.strip_suffix("\"}"))
            .map(str::to_owned)
    };
    let mut costs: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (labels, value) in samples(metrics, "kernlet_ebpf_program_runs_total") {
        if let Some(name) = program(labels) {
            costs.entry(name).or_default().0 = value;
        }
    }
    for (labels, value) in samples(metrics, "kernlet_ebpf_program_run_time_seconds_total") {
        if let Some(name) = program(labels) {
            costs.entry(name).or_default().1 = value;
        }
    }
    costs
        .into_iter()
        .map(|(name, (runs, seconds))| ProgramCost {
            name,
            runs,
            seconds,
        })
        .collect()
}

mod tables;
#[cfg(test)]
mod tests;

use tables::{burst_table, cost_table, ebpf_table, kernlet_table, latency_table};
