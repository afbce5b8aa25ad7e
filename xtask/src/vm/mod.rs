//! `cargo xtask vm`: run one command inside a throw-away node VM whose kernel has pure cgroup v2.
//!
//! The development and CI machines run a kernel with hybrid cgroups whose v2 hierarchy has no
//! controllers, so kernlet's cgroup, PSI and eBPF paths cannot be exercised on the host itself. This
//! boots Debian's own kernel (the `linux-image-amd64` package, not the running kernel) under qemu,
//! shares the host's root filesystem read-only over 9p with a tmpfs overlay on top (so nothing the
//! command does reaches the host), mounts cgroup2 with every controller enabled, gives the VM a
//! default route over a `dummy0` interface for node-IP detection, runs the command in the host's
//! current directory and hands back its exit status. Nothing outlives the run: the initramfs is
//! built in a temporary directory removed afterwards.
//!
//! Acceleration is TCG (software emulation) by default: `/dev/kvm` exists on these machines but a
//! KVM guest hangs at boot there. TCG boots in a few seconds and always works; `--kvm` is there for
//! machines where KVM does work.
//!
//! Boot sequence: qemu loads the kernel with an uncompressed newc initramfs written here (busybox,
//! the virtio/9p/overlay/dummy modules, two scripts). Stage 1 (busybox, in the initramfs) loads the
//! modules, sets up the network, builds the root overlay and the mounts, and `switch_root`s into
//! stage 2, which runs on the host's own `/bin/sh`: it runs the command, prints an exit marker that
//! carries a per-run random nonce and powers the VM off with sysrq.
//!
//! Layout: this module holds the public API and the run's checks (working directory,
//! environment); `host` finds the kernel, qemu and busybox, `kernel_modules` picks the modules
//! stage 1 loads, `initramfs` writes the initramfs and its two stage scripts through `cpio`, and
//! `qemu` boots the VM and reads the exit status off its console.

mod cpio;
mod host;
mod initramfs;
mod kernel_modules;
mod qemu;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::shell_quote;
use host::HostParts;
use initramfs::{stage2_script, write_initramfs};
use qemu::{boot, random_nonce};

/// Guest memory when none is given, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// Guest CPUs when none are given.
pub const DEFAULT_CPUS: u32 = 2;
/// How long a whole run (boot, command, power-off) may take when no timeout is given, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Directories the VM mounts its own empty filesystems on: a working directory under one of them
/// would not exist inside. `/tmp` stays the host's (through the overlay, writes stay in the VM),
/// so a checkout under /tmp works.
const HIDDEN_IN_VM: [&str; 5] = ["/run", "/var/lib/vm", "/proc", "/sys", "/dev"];
/// Host environment variables forwarded into the VM (besides every `KERNLET_*`).
const FORWARDED_ENV: [&str; 3] = ["RUST_LOG", "RUST_BACKTRACE", "CI"];

#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory_mib: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = DEFAULT_CPUS)]
    pub cpus: u32,
    /// Kill the VM and fail after this many seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout_secs: u64,
    /// Use KVM instead of TCG (a KVM guest hangs at boot on the project's machines).
    #[arg(long)]
    pub kvm: bool,
    /// Command to run inside the VM: one argument is a shell command line, several are quoted and
    /// joined into one.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How qemu runs the guest's CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: slower, works everywhere.
    #[default]
    Tcg,
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
}

/// How to boot the VM.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Limit for the whole run; qemu is killed when it is reached.
    pub timeout: Duration,
    pub accel: Accel,
    /// Variables set inside after the ones forwarded from the host (and so overriding them).
    pub env: Vec<(String, String)>,
    /// Directory the command starts in; `None` is the host's current directory.
    pub cwd: Option<PathBuf>,
    /// Copy the console to our stdout as it arrives.
    pub stream: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            accel: Accel::Tcg,
            env: Vec::new(),
            cwd: None,
            stream: true,
        }
    }
}

/// What one VM run gave.
#[derive(Clone, Debug)]
pub struct VmRun {
    /// The command's exit status.
    pub status: i32,
    /// Everything the VM printed on its console (kernel, command, exit marker), `\r\n` made `\n`.
    pub console: String,
}

/// The VM ended without telling the command's exit status. `run` returns it inside its error.
#[derive(Debug)]
pub enum VmFailure {
    /// The VM stopped (qemu exited) before the command's exit marker.
    Died { reason: String, tail: String },
    /// The run went past its timeout and qemu was killed.
    TimedOut { after: Duration, tail: String },
}

impl VmFailure {
    /// The exit status `cargo xtask vm` uses for this failure: 125 when the VM died, 124 (as
    /// `timeout(1)`) when it timed out.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Died { .. } => 125,
            Self::TimedOut { .. } => 124,
        }
    }
}

impl fmt::Display for VmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Died { reason, tail } => write!(
                f,
                "the vm stopped without reporting the command's exit status ({reason}); last console lines:\n{tail}"
            ),
            Self::TimedOut { after, tail } => write!(
                f,
                "the vm did not finish within {} s and qemu was killed; last console lines:\n{tail}",
                after.as_secs()
            ),
        }
    }
}

impl std::error::Error for VmFailure {}

/// Runs `args.command` in a fresh VM; returns the inner command's exit status, or 125 (VM died) or
/// 124 (timed out) after printing the error.
pub fn cli(args: &VmArgs) -> Result<i32> {
    let opts = VmOptions {
        memory_mib: args.memory_mib,
        cpus: args.cpus,
        timeout: Duration::from_secs(args.timeout_secs),
        accel: if args.kvm { Accel::Kvm } else { Accel::Tcg },
        ..VmOptions::default()
    };
    match run(&opts, &join_command(&args.command)) {
        Ok(status) => Ok(status),
        Err(err) => match err.downcast_ref::<VmFailure>() {
            Some(failure) => {
                eprintln!("error: {failure}");
                Ok(failure.exit_code())
            }
            None => Err(err),
        },
    }
}

/// Boots a fresh VM, runs the shell command line `command` in it and returns its exit status.
/// A VM that dies or times out is an error holding a [`VmFailure`].
pub fn run(opts: &VmOptions, command: &str) -> Result<i32> {
    run_capture(opts, command).map(|run| run.status)
}

/// As [`run`], also returning the console output.
pub fn run_capture(opts: &VmOptions, command: &str) -> Result<VmRun> {
    let host = HostParts::find()?;
    let cwd = match &opts.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    check_cwd(&cwd)?;
    let mut env = forwarded_env();
    env.push(("KERNLET_IN_VM".to_owned(), "1".to_owned()));
    env.extend(opts.env.iter().cloned());
    for (name, _) in &env {
        if !is_shell_name(name) {
            bail!("cannot set {name:?} inside the vm: not a shell variable name");
        }
    }
    let nonce = random_nonce()?;

    let work = tempfile::Builder::new()
        .prefix("kernlet-vm-")
        .tempdir()
        .context("cannot create a temporary directory for the vm")?;
    let initrd = work.path().join("initramfs.cpio");
    let stage2 = stage2_script(&env, &cwd, &nonce)?;
    write_initramfs(&initrd, &host, &stage2, command)?;
    let result = boot(opts, &host, &initrd, &nonce);
    work.close()
        .context("cannot remove the vm's temporary directory")?;
    result
}

/// Joins arguments into one shell command line: a single argument is taken as a command line
/// itself, several are each quoted.
#[must_use]
pub fn join_command(args: &[String]) -> String {
    match args {
        [one] => one.clone(),
        _ => args
            .iter()
            .map(|arg| shell_quote(arg))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn check_cwd(cwd: &Path) -> Result<()> {
    if !cwd.is_absolute() {
        bail!(
            "the vm's working directory {} is not absolute",
            cwd.display()
        );
    }
    if let Some(hidden) = HIDDEN_IN_VM.iter().find(|dir| cwd.starts_with(dir)) {
        bail!(
            "the working directory {} does not exist inside the vm, which mounts its own empty \
             {hidden}: run from another directory",
            cwd.display()
        );
    }
    Ok(())
}

fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The host variables forwarded into the VM: `RUST_LOG`, `RUST_BACKTRACE`, `CI` and `KERNLET_*`
/// (except `KERNLET_IN_VM`, which the VM sets itself).
fn forwarded_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            let forwarded = FORWARDED_ENV.contains(&name.as_str())
                || (name.starts_with("KERNLET_") && name != "KERNLET_IN_VM");
            if !forwarded || !is_shell_name(&name) {
                return None;
            }
            let value = value.into_string().ok();
            if value.is_none() {
                eprintln!("warning: not forwarding {name} into the vm: its value is not utf-8");
            }
            Some((name, value?))
        })
        .collect();
    env.sort();
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("abc/d-e.f"), "abc/d-e.f");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$x"), "'$x'");
        let args = ["sh", "-c", "echo hi; exit 3"].map(String::from);
        assert_eq!(join_command(&args), "sh -c 'echo hi; exit 3'");
        assert_eq!(join_command(&["exit 3".to_owned()]), "exit 3");
    }

    #[test]
    fn hidden_working_directories_are_refused() {
        assert!(check_cwd(Path::new("/run/x")).is_err());
        assert!(check_cwd(Path::new("/tmp/x")).is_ok());
        assert!(check_cwd(Path::new("/work/main")).is_ok());
        assert!(check_cwd(Path::new("/runfoo")).is_ok());
    }
}
