//! Boots qemu on the kernel and initramfs, copies and keeps its serial console, and reads the
//! command's exit status off the per-run exit marker (or tells why there is none).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::host::HostParts;
use super::{Accel, VmFailure, VmOptions, VmRun};

/// qemu's minimal firmware (package qemu-system-data).
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// Kernel command line: serial console, quiet boot, no reboot loop on panic, sysrq for power-off,
/// PSI on (Debian's kernel has it off by default), cgroup v1 unavailable so nothing can take a
/// controller away from the v2 hierarchy.
const KERNEL_CMDLINE: &str =
    "console=ttyS0 quiet panic=-1 sysrq_always_enabled=1 psi=1 cgroup_no_v1=all";
/// Console lines quoted in an error when the VM fails.
const TAIL_LINES: usize = 30;

pub(super) fn random_nonce() -> Result<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the vm's exit marker")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// The exit marker's text up to the status digits.
pub(super) fn marker_prefix(nonce: &str) -> String {
    format!("__KERNLET_VM_EXIT_{nonce}__=")
}

/// The status in the last exit marker of `console`.
fn parse_marker(console: &str, nonce: &str) -> Option<i32> {
    let prefix = marker_prefix(nonce);
    let at = console.rfind(&prefix)? + prefix.len();
    let digits: String = console[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
/// Turns serial console bytes into text: `\r` before `\n` dropped, across chunk boundaries.
#[derive(Default)]
struct CrStripper {
    pending_cr: usize,
}

impl CrStripper {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        for &b in chunk {
            match b {
                b'\r' => self.pending_cr += 1,
                b'\n' => {
                    self.pending_cr = 0;
                    out.push(b'\n');
                }
                _ => {
                    out.extend(std::iter::repeat_n(b'\r', self.pending_cr));
                    self.pending_cr = 0;
                    out.push(b);
                }
            }
        }
    }
}

/// Boots qemu, streams and keeps its console, and reads the command's status from the marker.
pub(super) fn boot(
    opts: &VmOptions,
    host: &HostParts,
    initrd: &Path,
    nonce: &str,
) -> Result<VmRun> {
    let mut qemu = qemu_command(opts, host, initrd);
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("cannot start {}", host.qemu.display()))?;
    let Some(mut stdout) = child.stdout.take() else {
        bail!("qemu's stdout was not captured");
    };

    let marker = marker_prefix(nonce).into_bytes();
    let marker_seen = Arc::new(AtomicBool::new(false));
    let reader = {
        let marker_seen = Arc::clone(&marker_seen);
        let stream = opts.stream;
        thread::spawn(move || read_console(&mut stdout, stream, &marker, &marker_seen))
    };

    let deadline = started + opts.timeout;
    let mut timed_out = false;
    let exit: Option<ExitStatus> = loop {
        if let Some(status) = child.try_wait().context("cannot wait for qemu")? {
            break Some(status);
        }
        // Everything the command printed is on the console before its marker, and nothing in
        // the VM needs a clean shutdown: stop it as soon as the marker is complete.
        let done = marker_seen.load(Ordering::Relaxed);
        if done || Instant::now() >= deadline {
            timed_out = !done;
            child.kill().context("cannot kill qemu")?;
            child.wait().context("cannot wait for qemu")?;
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let console = match reader.join() {
        Ok(result) => result.context("cannot read the vm's console")?,
        Err(_) => bail!("the vm's console reader panicked"),
    };
    let console = String::from_utf8_lossy(&console).into_owned();

    if let Some(status) = parse_marker(&console, nonce) {
        return Ok(VmRun { status, console });
    }
    let tail = last_lines(&console, TAIL_LINES);
    let failure = if timed_out {
        VmFailure::TimedOut {
            after: opts.timeout,
            tail,
        }
    } else {
        let reason = match exit {
            Some(status) if status.success() => {
                format!("qemu exited after {} s", started.elapsed().as_secs())
            }
            Some(status) => format!("qemu failed: {status}"),
            None => "qemu was killed".to_owned(),
        };
        VmFailure::Died { reason, tail }
    };
    Err(failure.into())
}

fn qemu_command(opts: &VmOptions, host: &HostParts, initrd: &Path) -> Command {
    let mut qemu = Command::new(&host.qemu);
    match opts.accel {
        Accel::Tcg => qemu.args(["-accel", "tcg"]),
        Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host"]),
    };
    qemu.args(["-m", &opts.memory_mib.to_string()])
        .args(["-smp", &opts.cpus.to_string()])
        .args(["-nographic", "-no-reboot"])
        // No NIC: the VM's network is dummy0, and a NIC would only bring iPXE's banner.
        .args(["-net", "none"])
        .arg("-kernel")
        .arg(&host.kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", KERNEL_CMDLINE])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // qboot (qemu's minimal firmware) boots a -kernel faster than SeaBIOS and prints nothing;
    // SeaBIOS writes terminal escapes (a full reset among them) to the serial console.
    if Path::new(QBOOT).is_file() {
        qemu.args(["-bios", QBOOT]);
    }
    qemu
}

/// Reads the console until qemu closes it: copies it to our stdout when `stream`, keeps it, and
/// raises `marker_seen` once `marker` went by.
fn read_console(
    console_in: &mut impl Read,
    stream: bool,
    marker: &[u8],
    marker_seen: &AtomicBool,
) -> io::Result<Vec<u8>> {
    let mut console = Vec::new();
    let mut stripper = CrStripper::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match console_in.read(&mut buf) {
            Ok(0) => return Ok(console),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let before = console.len();
        stripper.push(&buf[..n], &mut console);
        if stream {
            let mut out = io::stdout().lock();
            // Our stdout going away must not stop the run.
            let _ = out.write_all(&console[before..]).and_then(|()| out.flush());
        }
        // The marker line may arrive in pieces: look back far enough to see it whole.
        let from = before.saturating_sub(marker.len() + 16);
        if has_complete_marker(&console[from..], marker) {
            marker_seen.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether `console` holds `marker` followed by the status digits and the end of the line.
fn has_complete_marker(console: &[u8], marker: &[u8]) -> bool {
    console
        .windows(marker.len())
        .enumerate()
        .filter(|(_, window)| *window == marker)
        .any(|(at, _)| {
            let rest = &console[at + marker.len()..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            digits > 0 && rest.get(digits) == Some(&b'\n')
        })
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return "(the console stayed empty)".to_owned();
    }
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_needs_the_nonce_and_takes_the_last() {
        let nonce = "0123abcd";
        let console = "__KERNLET_VM_EXIT_ffff__=9\n__KERNLET_VM_EXIT_0123abcd__=%s\n\
                       [ 1.0] __KERNLET_VM_EXIT_0123abcd__=3\n__KERNLET_VM_EXIT_0123abcd__=42\n";
        assert_eq!(parse_marker(console, nonce), Some(42));
        assert_eq!(parse_marker("__KERNLET_VM_EXIT_ffff__=9\n", nonce), None);
    }

    #[test]
    fn carriage_returns_before_newlines_are_dropped() {
        let mut stripper = CrStripper::default();
        let mut out = Vec::new();
        stripper.push(b"a\r\nb\r", &mut out);
        stripper.push(b"\r\nc\rd\n", &mut out);
        assert_eq!(out, b"a\nb\nc\rd\n");
    }
}
