//! `cargo xtask test`: the whole suite, tier by tier, as CI runs it (`.ci/run` calls exactly this).
//!
//! Tiers (docs/dev.md has the details):
//! - `lint`: rustfmt and clippy `-D warnings` on every crate, the eBPF crate included, and
//!   rustdoc `-D warnings` (broken intra-doc links) on the workspace;
//! - `unit`: `cargo test --workspace`, nothing needing root;
//! - `host`: `tests/tests/host_*.rs` and `kernel_*.rs` with `--ignored`, on the host (root, real
//!   containerd, runc and eBPF);
//! - `vm`: `tests/tests/vm.rs` (boots node VMs from the host), then `vm_*.rs` and `kernel_*.rs`
//!   inside one node VM (pure cgroup v2, Debian 6.1 kernel).
//!
//! Tests that need root, the runtime or a VM are `#[ignore]`d, so a plain `cargo test` never
//! pretends to have run them; each tier here runs exactly its own and counts them.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{describe, run, shell_quote},
    k8s, layers, setup, vm, workspace_root,
};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Lint,
    Unit,
    Host,
    Vm,
}

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Run only these tiers (repeatable); default: all, in the order lint, unit, host, vm.
    #[arg(long = "tier", value_enum)]
    pub tiers: Vec<Tier>,
    /// Only tests whose name contains this (passed to the test binaries).
    pub filter: Option<String>,
}

/// Test counts parsed from libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds the numbers of one libtest summary line, if `line` is one.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// Lines tests print when the running kernel truly lacks what they check (see docs/dev.md).
pub const SKIP_MARKER: &str = "kernlet-test: skipped:";

pub fn cli(args: &TestArgs) -> Result<bool> {
    setup::ensure()?;
    let tiers = if args.tiers.is_empty() {
        vec![Tier::Lint, Tier::Unit, Tier::Host, Tier::Vm]
    } else {
        args.tiers.clone()
    };
    let mut total = Counts::default();
    let mut skipped = 0u64;
    let mut failures = Vec::new();
    for tier in tiers {
        let started = Instant::now();
        println!("\n==> tier {tier:?}");
        let result = match tier {
            Tier::Lint => lint().map(|()| Outcome::default()),
            Tier::Unit => unit(args.filter.as_deref()),
            Tier::Host => host(args.filter.as_deref()),
            Tier::Vm => in_vm(args.filter.as_deref()),
        };
        match result {
            Ok(outcome) => {
                total.add(outcome.counts);
                skipped += outcome.skipped;
                if outcome.counts.failed > 0 {
                    failures.push(format!("{tier:?}: {} failed", outcome.counts.failed));
                }
            }
            Err(e) => failures.push(format!("{tier:?}: {e:#}")),
        }
        println!("==> tier {tier:?} took {:.0?}", started.elapsed());
    }
    for failure in &failures {
        println!("FAILED {failure}");
    }
    // The closing line CI reads.
    println!(
        "summary: {} passed, {} failed, {skipped} skipped",
        total.passed,
        total.failed.max(u64::from(!failures.is_empty()))
    );
    Ok(failures.is_empty())
}

#[derive(Debug, Default)]
struct Outcome {
    counts: Counts,
    skipped: u64,
}

fn lint() -> Result<()> {
    let root = workspace_root();
    layers::check(&root)?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    let programs = root.join("ebpf/programs");
    run(Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .arg(programs.join("src/main.rs")))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Broken intra-doc links are only warnings to rustdoc; fail on them here.
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    let mut bpf_clippy = Command::new("rustup");
    bpf_clippy
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--release",
            "--target-dir",
        ])
        .arg(root.join("target/bpf"))
        .args(["--", "-D", "warnings"])
        .current_dir(&programs)
        .env_remove("RUSTUP_TOOLCHAIN");
    run(&mut bpf_clippy)
}

fn unit(filter: Option<&str>) -> Result<Outcome> {
    let mut command = cargo();
    command.args(["test", "--workspace"]);
    if let Some(filter) = filter {
        command.args(["--", filter]);
    }
    run_tests(&mut command)
}

fn host(filter: Option<&str>) -> Result<Outcome> {
    let targets = test_targets(&["host_", "kernel_"])?;
    let mut command = cargo();
    command.args(["test", "-p", "kernlet-tests"]);
    for target in &targets {
        command.args(["--test", target]);
    }
    command.args(["--", "--ignored", "--test-threads=1"]);
    command.args(filter);
    run_tests(&mut command)
}

fn in_vm(filter: Option<&str>) -> Result<Outcome> {
    // The VM's own checks boot VMs from the host.
    let mut outcome = {
        let mut command = cargo();
        command.args(["test", "-p", "kernlet-tests", "--test", "vm", "--"]);
        command.args(["--ignored", "--test-threads=1"]).args(filter);
        run_tests(&mut command)?
    };
    let targets = test_targets(&["vm_", "kernel_"])?;
    let binaries = build_test_binaries(&targets)?;
    // The VM has no cargo: tests that run kernlet get the binary built here.
    crate::cmd::run(cargo().args(["build", "-p", "kernlet", "--bin", "kernlet"]))?;
    let kernlet = crate::bench::target_dir().join("debug/kernlet");
    let mut script = String::from("set -u; status=0\n");
    for binary in &binaries {
        let mut line = format!(
            "{} --ignored --test-threads=1 --color=never",
            shell_quote(&binary.to_string_lossy())
        );
        if let Some(filter) = filter {
            line.push(' ');
            line.push_str(&shell_quote(filter));
        }
        script.push_str(&line);
        script.push_str(" || status=1\n");
    }
    script.push_str("exit $status\n");
    let mut env = vec![(
        "KERNLET_BIN".to_owned(),
        kernlet.to_string_lossy().into_owned(),
    )];
    // The VM cannot unpack the Kubernetes binaries (its root is a throw-away overlay): unpack
    // here. Without them the tests needing them print their skip.
    match k8s::find()? {
        k8s::K8sBin::Found(dir) => {
            env.push((k8s::ENV.to_owned(), dir.to_string_lossy().into_owned()));
        }
        k8s::K8sBin::Missing(reason) => println!("vm tier: {reason}"),
    }
    let options = vm::VmOptions {
        memory_mib: 4096,
        // Every vm_ and kernel_ test in one boot, under TCG emulation: about 20 minutes (the
        // vm_density smoke alone takes 4-5).
        timeout: std::time::Duration::from_mins(40),
        env,
        ..vm::VmOptions::default()
    };
    let vm::VmRun { status, console } = vm::run_capture(&options, &script)?;
    let mut inner = Outcome::default();
    for line in console.lines() {
        inner.counts.add_line(line);
        inner.skipped += u64::from(line.contains(SKIP_MARKER));
    }
    if status != 0 && inner.counts.failed == 0 {
        bail!("tests inside the node VM exited with status {status}");
    }
    outcome.counts.add(inner.counts);
    outcome.skipped += inner.skipped;
    Ok(outcome)
}

/// Names of `tests/tests/<prefix>*.rs` targets of the kernlet-tests crate, sorted.
fn test_targets(prefixes: &[&str]) -> Result<Vec<String>> {
    let dir = workspace_root().join("tests/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".rs")
            && prefixes.iter().any(|p| stem.starts_with(p))
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds the given test targets and returns their executables (to run inside the VM, which sees
/// this machine's filesystem at the same paths).
fn build_test_binaries(targets: &[String]) -> Result<Vec<PathBuf>> {
    let mut command = cargo();
    command.args([
        "test",
        "-p",
        "kernlet-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for target in targets {
        command.args(["--test", target]);
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("building VM test binaries")?;
    if !output.status.success() {
        bail!("building VM test binaries failed: {}", output.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test =
            message["reason"] == "compiler-artifact" && message["profile"]["test"] == true;
        if let (true, Some(executable)) = (is_test, message["executable"].as_str()) {
            binaries.push(PathBuf::from(executable));
        }
    }
    if binaries.len() != targets.len() {
        bail!(
            "expected {} VM test binaries, cargo built {}",
            targets.len(),
            binaries.len()
        );
    }
    Ok(binaries)
}

/// Runs a test command, echoing its output and counting libtest's results and skip lines.
fn run_tests(command: &mut Command) -> Result<Outcome> {
    println!("$ {}", describe(command));
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", describe(command)))?;
    let mut outcome = Outcome::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            outcome.counts.add_line(&line);
            outcome.skipped += u64::from(line.contains(SKIP_MARKER));
        }
    }
    let status = child.wait()?;
    if !status.success() && outcome.counts.failed == 0 {
        bail!("{} failed: {status}", describe(command));
    }
    Ok(outcome)
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    // A suite run builds each crate once: incremental caches would only add gigabytes to the
    // target directory (the disk a CI machine ran out of).
    command.env("CARGO_INCREMENTAL", "0");
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_summary_lines() {
        let mut counts = Counts::default();
        counts.add_line(
            "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        counts.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        counts.add_line("running 3 tests");
        assert_eq!(
            counts,
            Counts {
                passed: 13,
                failed: 2,
                ignored: 3
            }
        );
    }
}
