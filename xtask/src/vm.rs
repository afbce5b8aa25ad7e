//! Node VM (stub: being written by a helper; the public names below are the contract).

#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// Command to run inside the VM.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs `args.command` in a fresh VM; returns the inner command's exit status.
pub fn cli(args: &VmArgs) -> anyhow::Result<i32> {
    let _ = args;
    anyhow::bail!("not written yet")
}
