//! `cargo xtask bench cgroups`: kernlet's hand-written cgroup layer against `cgroups-rs`, in the
//! node VM (the only place with a pure cgroup v2 hierarchy here). The `cgroup_layers` example of
//! the tests crate does the work and prints the table; this builds it and runs it in the VM.
use anyhow::{Result, bail};

use super::{cargo_build_release, machine, target_dir};
use crate::{cmd::shell_quote, setup, vm};

/// The tests crate's example that measures both layers.
const TOOL: &str = "cgroup_layers";

#[derive(clap::Args, Debug)]
pub struct CgroupsArgs {
    /// Pod cgroups each layer creates, configures and removes per round.
    #[arg(long, default_value_t = 200)]
    pub cgroups: usize,
}

pub fn cli(args: &CgroupsArgs) -> Result<()> {
    setup::ensure()?;
    cargo_build_release(&["-p", "kernlet-tests", "--example", TOOL])?;
    let tool = target_dir().join("release/examples").join(TOOL);
    let script = format!("{} {}", shell_quote(&tool.to_string_lossy()), args.cgroups);
    let run = vm::run_capture(&vm::VmOptions::default(), &script)?;
    if run.status != 0 {
        bail!(
            "{TOOL} failed in the node VM (status {}):\n{}",
            run.status,
            run.console
        );
    }
    println!("{}", machine());
    println!("node VM (qemu TCG, Debian 6.1 kernel, pure cgroup v2)\n");
    for line in run
        .console
        .lines()
        .filter(|l| l.starts_with('|') || l.contains("cgroups,"))
    {
        println!("{line}");
    }
    Ok(())
}
