//! The measurement behind `kernlet::cgroup`'s choice of a hand-written layer over `cgroups-rs`:
//! both create N pod-like cgroups with the same limits (cpu weight from 1024 shares, a 200m CFS
//! quota, a 64 MiB memory limit, 64 pids), then remove them; wall and CPU time per cgroup, and
//! the `cpu.weight` each layer wrote for 1024 shares. Needs a pure cgroup v2 host (the node VM):
//! `cargo xtask bench cgroups` runs it there and prints its table.
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time against a real kernel and runtime"
)]
use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cgroups_rs::fs::{MaxValue, cgroup_builder::CgroupBuilder, hierarchies};
use kernlet::cgroup::{Cgroupfs, ResourceConfig};
use kernlet::resources::convert::{CpuMax, shares_to_weight};
use nix::sys::resource::{UsageWho, getrusage};

const PARENT: &str = "/kernlet-bench-layers";
const ROUNDS: usize = 5;

fn cpu_time() -> Duration {
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let user = usage.user_time();
        let system = usage.system_time();
        Duration::from_micros(
            (user.tv_sec() * 1_000_000
                + user.tv_usec()
                + system.tv_sec() * 1_000_000
                + system.tv_usec()) as u64,
        )
    })
}

fn config() -> ResourceConfig {
    ResourceConfig {
        cpu_weight: Some(shares_to_weight(1024)),
        cpu_max: Some(CpuMax {
            quota_us: Some(20_000),
            period_us: 100_000,
        }),
        memory_max: Some(64 << 20),
        pids_max: Some(64),
        memory_min: None,
    }
}

fn kernlet_round(fs: &Cgroupfs, n: usize) -> Result<String> {
    let config = config();
    for i in 0..n {
        let name = format!("{PARENT}/pod{i}");
        fs.create(&name)?;
        for (file, value) in config.writes() {
            fs.write(&name, file, &value)?;
        }
    }
    let weight = fs.read(&format!("{PARENT}/pod0"), "cpu.weight")?;
    for i in 0..n {
        fs.remove(&format!("{PARENT}/pod{i}"), Duration::from_secs(5))?;
    }
    Ok(weight.trim().to_owned())
}

fn cgroups_rs_round(n: usize) -> Result<String> {
    let mut created = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{}/pod{i}", PARENT.trim_start_matches('/'));
        let cgroup = CgroupBuilder::new(&name)
            .cpu()
            .shares(1024)
            .quota(20_000)
            .period(100_000)
            .done()
            .memory()
            .memory_hard_limit(64 << 20)
            .done()
            .pid()
            .maximum_number_of_processes(MaxValue::Value(64))
            .done()
            .build(hierarchies::auto())
            .map_err(|e| anyhow::anyhow!("cgroups-rs build: {e}"))?;
        created.push(cgroup);
    }
    let weight = fs::read_to_string(format!("/sys/fs/cgroup{PARENT}/pod0/cpu.weight"))?;
    for cgroup in created {
        cgroup
            .delete()
            .map_err(|e| anyhow::anyhow!("cgroups-rs delete: {e}"))?;
    }
    Ok(weight.trim().to_owned())
}

struct Row {
    layer: &'static str,
    wall: Duration,
    cpu: Duration,
    weight: String,
}

fn measure(
    layer: &'static str,
    n: usize,
    mut round: impl FnMut() -> Result<String>,
) -> Result<Row> {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut weight = String::new();
    for _ in 0..ROUNDS {
        let (wall, cpu) = (Instant::now(), cpu_time());
        weight = round()?;
        walls.push(wall.elapsed());
        cpus.push(cpu_time().saturating_sub(cpu));
    }
    walls.sort();
    cpus.sort();
    let per = |d: Duration| d / u32::try_from(n).unwrap_or(1);
    Ok(Row {
        layer,
        wall: per(walls[ROUNDS / 2]),
        cpu: per(cpus[ROUNDS / 2]),
        weight,
    })
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("the argument is the number of cgroups")?
        .unwrap_or(200);
    let fs = Cgroupfs::new("/sys/fs/cgroup");
    if !fs.exists("/") || fs.controllers("/").map_or(true, |c| !c.contains("memory")) {
        bail!("needs a cgroup v2 hierarchy with controllers at /sys/fs/cgroup (the node VM)");
    }
    fs.create(PARENT)?;
    fs.enable_controllers(PARENT, &["cpu", "memory", "pids"])?;
    let result = (|| -> Result<Vec<Row>> {
        Ok(vec![
            measure("kernlet::cgroup (hand-written)", n, || {
                kernlet_round(&fs, n)
            })?,
            measure("cgroups-rs 0.5", n, || cgroups_rs_round(n))?,
        ])
    })();
    fs.remove(PARENT, Duration::from_secs(5))?;
    let rows = result?;
    let best = rows.iter().map(|r| r.cpu).min().unwrap_or_default();
    println!("{n} cgroups, create + 4 limits + remove, median of {ROUNDS} rounds, per cgroup:\n");
    println!("| layer | wall (µs) | CPU (µs) | CPU ratio | cpu.weight for 1024 shares |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {} |",
            row.layer,
            row.wall.as_secs_f64() * 1e6,
            row.cpu.as_secs_f64() * 1e6,
            row.cpu.as_secs_f64() / best.as_secs_f64().max(1e-9),
            row.weight
        );
    }
    Ok(())
}
