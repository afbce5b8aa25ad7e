//! `cargo xtask bench readers`: what one stats collection round costs when it reads N cgroups
//! through cgroupfs, for the three ways of reading (`open-read-close`, `pread-reuse`,
//! `io_uring`), measured side by side in one run by the `cgroupfs_read` example of the tests
//! crate (which creates and removes the cgroups; see its doc for the method).
//!
//! On this project's hosts the v2 hierarchy has no controllers, so a cgroup has only `cpu.stat`
//! and the three PSI files; `--vm` runs the same binary again inside the node VM (pure cgroup v2,
//! every controller, so the memory, io and pids files too; qemu TCG, so absolute numbers there
//! are slower than a real machine's, ratios still compare).
use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Summary, cargo_build_release, machine, markdown_table, target_dir};
use crate::{cmd, setup, vm};

/// The tests crate's example doing the measuring.
const TOOL: &str = "cgroupfs_read";

#[derive(clap::Args, Debug)]
pub struct ReadersArgs {
    /// Cgroup counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000])]
    pub cgroups: Vec<usize>,
    /// Measured rounds per count and variant (after one warm-up round each).
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// Also run the bench inside the node VM (pure cgroup v2 with every controller).
    #[arg(long)]
    pub vm: bool,
}

/// One variant's samples for one cgroup count.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    cgroups: usize,
    variant: String,
    files_per_cgroup: usize,
    cpu_us: Vec<f64>,
    wall_us: Vec<f64>,
}

pub fn cli(args: &ReadersArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("bench readers creates cgroups and needs root");
    }
    if args.rounds == 0 || args.cgroups.is_empty() || args.cgroups.contains(&0) {
        bail!("nothing to measure: give cgroup counts above 0 and at least one round");
    }
    setup::ensure()?;
    cargo_build_release(&["-p", "kernlet-tests", "--example", TOOL])?;
    let tool = target_dir().join("release").join("examples").join(TOOL);
    let counts = args
        .cgroups
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let command = format!(
        "{} {counts} {}",
        cmd::shell_quote(&tool.to_string_lossy()),
        args.rounds
    );

    let host =
        cmd::capture(std::process::Command::new(&tool).args([&counts, &args.rounds.to_string()]))?;
    report("host", &machine(), &host, args.rounds)?;
    if args.vm {
        let options = vm::VmOptions {
            stream: false,
            ..vm::VmOptions::default()
        };
        let run = vm::run_capture(&options, &command)?;
        if run.status != 0 {
            bail!(
                "{TOOL} failed inside the vm (status {}):\n{}",
                run.status,
                run.console
            );
        }
        let place = format!(
            "node VM: qemu TCG, {} vCPUs, {} MiB",
            options.cpus, options.memory_mib
        );
        report("node VM", &place, &run.console, args.rounds)?;
    }
    Ok(())
}

/// Prints the table for one place from the tool's output.
fn report(place: &str, machine: &str, output: &str, rounds: usize) -> Result<()> {
    let Output {
        files,
        kernel,
        rows,
    } = parse_output(output)?;
    println!();
    println!("cgroupfs reads per collection round ({place}), median (min–max) of {rounds} rounds");
    println!("machine: {machine}; the tool ran on kernel {kernel}");
    println!("files per cgroup: {}", files.join(", "));
    println!();
    print!("{}", table(&rows)?);
    println!();
    println!(
        "CPU: user + system time of the process (getrusage, io-wq workers included); ratios \
         compare medians with the fastest variant for the same cgroup count; every round parses \
         each cgroup's files into a CgroupSample."
    );
    Ok(())
}

/// What the tool printed.
#[derive(Debug, Default)]
struct Output {
    /// The files each cgroup has.
    files: Vec<String>,
    /// The release of the kernel it ran on.
    kernel: String,
    rows: Vec<Row>,
}

/// The tool's JSON lines (other lines, such as a VM's console, are skipped).
fn parse_output(output: &str) -> Result<Output> {
    let mut parsed = Output::default();
    for line in output.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(names) = value["files"].as_array() {
            parsed.files = names
                .iter()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect();
            value["kernel"]
                .as_str()
                .unwrap_or("unknown")
                .clone_into(&mut parsed.kernel);
            continue;
        }
        let numbers = |key: &str| -> Result<Vec<f64>> {
            value[key]
                .as_array()
                .with_context(|| format!("no {key} in {line}"))?
                .iter()
                .map(|v| v.as_f64().with_context(|| format!("{key} in {line}")))
                .collect()
        };
        let count = |key: &str| -> Result<usize> {
            value[key]
                .as_u64()
                .map(|n| n as usize)
                .with_context(|| format!("no {key} in {line}"))
        };
        parsed.rows.push(Row {
            cgroups: count("cgroups")?,
            variant: value["variant"]
                .as_str()
                .with_context(|| format!("no variant in {line}"))?
                .to_owned(),
            files_per_cgroup: count("files_per_cgroup")?,
            cpu_us: numbers("cpu_us")?,
            wall_us: numbers("wall_us")?,
        });
    }
    if parsed.rows.is_empty() {
        bail!("{TOOL} printed no results:\n{output}");
    }
    Ok(parsed)
}

/// The Markdown table: one row per count and variant, ratios against the count's fastest.
fn table(rows: &[Row]) -> Result<String> {
    let header = [
        "cgroups",
        "variant",
        "CPU per round",
        "CPU per cgroup",
        "CPU per file",
        "wall per round",
        "CPU vs fastest",
        "wall vs fastest",
    ];
    let summary = |values: &[f64]| Summary::of(values).context("no samples");
    let mut out = Vec::new();
    for row in rows {
        let same_count: Vec<&Row> = rows.iter().filter(|r| r.cgroups == row.cgroups).collect();
        let best = |pick: fn(&Row) -> &[f64]| -> Result<f64> {
            same_count
                .iter()
                .map(|r| summary(pick(r)).map(|s| s.median))
                .try_fold(f64::INFINITY, |best, median| Ok(best.min(median?)))
        };
        let cpu = summary(&row.cpu_us)?;
        let wall = summary(&row.wall_us)?;
        let cgroups = row.cgroups as f64;
        let files = (row.cgroups * row.files_per_cgroup) as f64;
        let ms = |s: Summary| Summary {
            median: s.median / 1000.0,
            min: s.min / 1000.0,
            max: s.max / 1000.0,
        };
        out.push(vec![
            row.cgroups.to_string(),
            row.variant.clone(),
            ms(cpu).display(2, "ms"),
            format!("{:.2} µs", cpu.median / cgroups),
            format!("{:.2} µs", cpu.median / files),
            format!("{:.2} ms", wall.median / 1000.0),
            format!("{:.2}×", cpu.median / best(|r| &r.cpu_us)?),
            format!("{:.2}×", wall.median / best(|r| &r.wall_us)?),
        ]);
    }
    Ok(markdown_table(&header, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = r#"[    1.0] kernel noise
{"files":["cpu.stat"],"kernel":"6.1.0-test"}
{"cgroups":2,"variant":"fast","files_per_cgroup":1,"cpu_us":[10.0,20.0,30.0],"wall_us":[10.0,10.0,10.0]}
{"cgroups":2,"variant":"slow","files_per_cgroup":1,"cpu_us":[40.0],"wall_us":[5.0]}
"#;

    #[test]
    fn parses_the_tools_lines_among_others() {
        let Output {
            files,
            kernel,
            rows,
        } = parse_output(OUTPUT).unwrap();
        assert_eq!(files, ["cpu.stat"]);
        assert_eq!(kernel, "6.1.0-test");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].cpu_us, [10.0, 20.0, 30.0]);
        assert_eq!(rows[1].variant, "slow");
        assert!(parse_output("nothing\n").is_err());
    }

    #[test]
    fn ratios_are_against_the_fastest_of_the_same_count() {
        let table = table(&parse_output(OUTPUT).unwrap().rows).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].contains("| fast "), "{table}");
        assert!(lines[2].contains("0.02 ms (0.01–0.03)"), "{table}");
        assert!(lines[2].contains("10.00 µs"), "{table}");
        assert!(lines[2].contains("1.00×"), "{table}");
        assert!(lines[3].contains("2.00×"), "{table}");
        let wall_ratio = |line: &str| line.split('|').nth(8).map(str::trim).map(str::to_owned);
        assert_eq!(wall_ratio(lines[2]).as_deref(), Some("2.00×"), "{table}");
        assert_eq!(wall_ratio(lines[3]).as_deref(), Some("1.00×"), "{table}");
    }
}
