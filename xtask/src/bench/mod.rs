//! `cargo xtask bench <bench>`: kernlet's benchmarks, run against a release build on private
//! containerd fixtures ([`crate::runtime::RuntimeFixture`]). Each bench prints the machine it ran
//! on and its results as a Markdown table, ready to paste into `docs/perf.md`.
//!
//! - [`startup`]: pod startup latency, kernlet against the same CRI calls issued directly.
//! - [`cgroups`]: kernlet's cgroup layer against `cgroups-rs`, in the node VM.
//! - [`readers`]: cost of a stats round reading N cgroups through cgroupfs, three ways.
//! - [`stats`]: what stats collection costs: cgroupfs readers, kernlet's CPU and RSS, eBPF per
//!   event, `/stats/summary` latency.
//! - [`density`]: kernlet against the upstream kubelet with 10, 50 and 110 pods in the node VM:
//!   start-up, CPU, RSS, endpoint latency, spec-change and exit-to-status latency, as ratios.
//! - [`probes`]: kernlet's CPU per probe execution and probe latency, against the same calls
//!   issued directly.
//! - [`server`]: a bounded load of `/stats/summary` and `/healthz` on the TLS port and the
//!   read-only port: throughput and latency.
pub mod api;
pub mod cgroups;
pub mod density;
pub mod probes;
pub mod readers;
pub mod server;
pub mod startup;
pub mod stats;

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{cmd, workspace_root};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub bench: Bench,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Cluster mode's API side against a real kube-apiserver: create-to-Running for 1, 10 and 50
    /// pods, status writes and API requests per pod start; needs root and the Kubernetes binaries.
    Api(api::ApiArgs),
    /// Pod startup latency for 1, 10 and 50 pods: kernlet (static pods) against the same CRI
    /// calls issued directly; needs root.
    Startup(startup::StartupArgs),
    /// Creating, limiting and removing pod cgroups: kernlet's hand-written layer against
    /// cgroups-rs, in the node VM.
    Cgroups(cgroups::CgroupsArgs),
    /// CPU and wall time of reading 100, 500 and 1000 cgroups per stats round: open+read+close,
    /// pread on kept descriptors, batched `io_uring`; needs root.
    Readers(readers::ReadersArgs),
    /// Stats collection cost: cgroupfs readers on 10/100/500 cgroups, kernlet's CPU and RSS at
    /// 10 and 100 pods, eBPF ns per event, endpoint latency; needs root.
    Stats(stats::StatsArgs),
    /// kernlet against the upstream kubelet with 10, 50 and 110 static pods in the node VM:
    /// start-up, CPU, RSS, endpoint latency, spec change and exit-to-status latency, as ratios.
    Density(density::DensityArgs),
    /// 100 pods with exec, httpGet and tcpSocket probes every second: kernlet's CPU per probe
    /// execution and probe latency, against the same calls issued directly; needs root.
    Probes(probes::ProbesArgs),
    /// Concurrent keep-alive clients loading `/stats/summary` and `/healthz` on the kubelet port
    /// (TLS, authenticated) and the read-only port: requests per second and p99; needs root.
    Server(server::ServerArgs),
}

pub fn cli(args: &BenchArgs) -> Result<()> {
    match &args.bench {
        Bench::Api(args) => api::cli(args),
        Bench::Startup(args) => startup::cli(args),
        Bench::Cgroups(args) => cgroups::cli(args),
        Bench::Readers(args) => readers::cli(args),
        Bench::Stats(args) => stats::cli(args),
        Bench::Density(args) => density::cli(args),
        Bench::Probes(args) => probes::cli(args),
        Bench::Server(args) => server::cli(args),
    }
}

/// cargo's target directory: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// `cargo build --release <args>` in the workspace (with the cargo running xtask, if any).
pub fn cargo_build_release(args: &[&str]) -> Result<()> {
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release"])
            .args(args)
            .current_dir(workspace_root()),
    )
}

/// The median, smallest and largest of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none. An even count's median is the mean
    /// of the middle two.
    #[must_use]
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            f64::midpoint(sorted[mid - 1], sorted[mid])
        };
        Some(Self { median, min, max })
    }

    /// `median (min–max)`, each with `decimals` decimals and `unit` after the median.
    #[must_use]
    pub fn display(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.decimals$} {unit} ({:.decimals$}–{:.decimals$})",
            self.median, self.min, self.max
        )
    }
}

/// A Markdown table with padded columns (`header` and each row have the same length).
#[must_use]
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::from("|");
        for (cell, &width) in cells.zip(&widths) {
            let pad = width - cell.chars().count();
            let _ = write!(out, " {cell}{} |", " ".repeat(pad));
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().copied());
    out.push('|');
    for &width in &widths {
        let _ = write!(out, "{}|", "-".repeat(width + 2));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The machine, for reports: CPU model and count, memory, kernel, containerd and runc.
#[must_use]
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = field(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "? GiB".to_owned(),
            |kib| format!("{:.1} GiB", kib as f64 / 1_048_576.0),
        );
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = |tool: &str| {
        cmd::capture(Command::new(tool).arg("--version")).map_or_else(
            |_| format!("{tool} (version unknown)"),
            |out| out.lines().next().unwrap_or_default().trim().to_owned(),
        )
    };
    format!(
        "{cores} cores ({model}), {memory} RAM, kernel {}, {}, {}",
        kernel.trim(),
        version("containerd"),
        version("runc"),
    )
}

/// The value of `key: value` in a `/proc` file such as `cpuinfo` (first occurrence).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// Calls `check` every `period` until it returns `Some`, or fails after `timeout` with `what`.
pub fn poll<T>(
    what: &str,
    period: Duration,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_middle() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            odd,
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert!((even.median - 2.5).abs() < f64::EPSILON);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(odd.display(2, "s"), "2.00 s (1.00–3.00)");
    }

    #[test]
    fn tables_are_padded() {
        let table = markdown_table(
            &["N", "time"],
            &[
                vec!["1".into(), "0.5 s".into()],
                vec!["50".into(), "12 s".into()],
            ],
        );
        assert_eq!(
            table,
            "| N  | time  |\n|----|-------|\n| 1  | 0.5 s |\n| 50 | 12 s  |\n"
        );
    }

    #[test]
    fn reads_proc_fields() {
        assert_eq!(
            field("processor\t: 0\nmodel name\t: Some CPU\n", "model name"),
            Some("Some CPU")
        );
        assert_eq!(field("MemTotal:  1024 kB\n", "MemFree"), None);
    }
}
