//! The host tools the fixture drives (containerd, ctr, runc, ip, the CNI plugins): checking
//! they are installed, finding them, and running them quietly with a timeout so that a hung
//! containerd cannot hang a test.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::layout::Layout;
use super::{CNI_BIN_DIR, NAMESPACE};
use crate::cmd::describe;

/// Directories searched for the tools besides `$PATH`, also given to containerd as its `PATH`.
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Root and every tool the fixture needs, checked before anything is created.
pub(super) fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the runtime fixture needs root (containerd, mounts, cgroups, links)");
    }
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc", "ip"] {
        find_tool(tool)?;
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = Path::new(CNI_BIN_DIR).join(plugin);
        if !path.exists() {
            bail!(
                "cni plugin {} is missing (apt-get install containernetworking-plugins)",
                path.display()
            );
        }
    }
    Ok(())
}

/// `$PATH` followed by whichever [`SYSTEM_PATH`] directories it lacks.
pub(super) fn tool_path() -> String {
    let mut dirs: Vec<String> = std::env::var("PATH")
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for dir in SYSTEM_PATH {
        if !dirs.iter().any(|d| d == dir) {
            dirs.push((*dir).to_owned());
        }
    }
    dirs.join(":")
}

pub(super) fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    tool_path()
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .with_context(|| {
            format!("{name} not found in $PATH or {SYSTEM_PATH:?} (apt-get install containerd runc iproute2)")
        })
}

/// `ctr` talking to the fixture's containerd in [`NAMESPACE`]; add the subcommand.
pub(super) fn ctr_command(layout: &Layout) -> Command {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(layout.socket())
        .args(["--connect-timeout", "2s", "--namespace", NAMESPACE])
        .env("PATH", tool_path());
    cmd
}

/// Runs `cmd` with stdin closed and output captured, killing it after `timeout`. Its exit
/// status is the caller's to judge; see [`run_checked`].
pub(super) fn run_quiet(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let line = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {line}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot wait for {line}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{line} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// [`run_quiet`], failing unless `cmd` exits successfully; the error names the command, its
/// status and its stderr. Returns stdout.
pub(super) fn run_checked(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let out = run_quiet(cmd, timeout)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            stderr.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_command_status_and_stderr() {
        let error = run_checked(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "sh -c echo oops >&2; exit 3 failed (exit status: 3): oops"
        );
    }

    #[test]
    fn slow_commands_are_killed() {
        let started = Instant::now();
        let error =
            run_quiet(Command::new("sleep").arg("10"), Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(error.to_string(), "sleep 10 did not finish within 100ms");
    }
}
