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

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::shell_quote;

/// Guest memory when none is given, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// Guest CPUs when none are given.
pub const DEFAULT_CPUS: u32 = 2;
/// How long a whole run (boot, command, power-off) may take when no timeout is given, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// The Debian package that ships the VM's kernel.
const KERNEL_PACKAGE: &str = "linux-image-amd64";
/// Static busybox: the initramfs has no libraries.
const BUSYBOX: &str = "/bin/busybox";
const QEMU: &str = "qemu-system-x86_64";
/// qemu's minimal firmware (package qemu-system-data).
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
/// Kernel command line: serial console, quiet boot, no reboot loop on panic, sysrq for power-off,
/// PSI on (Debian's kernel has it off by default), cgroup v1 unavailable so nothing can take a
/// controller away from the v2 hierarchy.
const KERNEL_CMDLINE: &str =
    "console=ttyS0 quiet panic=-1 sysrq_always_enabled=1 psi=1 cgroup_no_v1=all";
/// Where the stage 2 script and the command live inside the VM's root.
const GUEST_DIR: &str = "/.kernlet-vm";
/// Directories the VM mounts its own empty filesystems on: a working directory under one of them
/// would not exist inside.
const HIDDEN_IN_VM: [&str; 6] = ["/tmp", "/run", "/var/lib/vm", "/proc", "/sys", "/dev"];
/// `PATH` inside the VM.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Host environment variables forwarded into the VM (besides every `KERNLET_*`).
const FORWARDED_ENV: [&str; 3] = ["RUST_LOG", "RUST_BACKTRACE", "CI"];
/// Console lines quoted in an error when the VM fails.
const TAIL_LINES: usize = 30;

/// Kernel modules stage 1 loads, with their parameters; their dependencies come from
/// `modules.dep` and are loaded first. Modules built into the kernel are skipped.
const MODULES: [(&str, &str); 5] = [
    ("virtio_pci", ""),
    ("9pnet_virtio", ""),
    ("9p", ""),
    ("overlay", ""),
    // Without numdummies=0 the module creates dummy0 itself and `ip link add` would fail.
    ("dummy", "numdummies=0"),
];

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

/// What the VM needs from the host.
#[derive(Debug)]
struct HostParts {
    kernel: PathBuf,
    qemu: PathBuf,
    busybox: PathBuf,
    /// In load order.
    modules: Vec<KernelModule>,
}

#[derive(Debug)]
struct KernelModule {
    /// With `-` made `_`, as the kernel names it.
    name: String,
    path: PathBuf,
    params: &'static str,
}

impl HostParts {
    fn find() -> Result<Self> {
        let running = fs::read_to_string("/proc/sys/kernel/osrelease")
            .context("cannot read the running kernel's release")?;
        let (version, kernel) = find_kernel(
            Path::new("/lib/modules"),
            Path::new("/boot"),
            running.trim(),
        )?;
        let modules = resolve_modules(&Path::new("/lib/modules").join(&version), &MODULES)?;
        let qemu = find_in_path(QEMU).with_context(|| {
            format!(
                "{QEMU} not found in PATH: install the qemu-system-x86 package (cargo xtask setup)"
            )
        })?;
        let busybox = PathBuf::from(BUSYBOX);
        if !busybox.is_file() {
            bail!("{BUSYBOX} not found: install the busybox-static package (cargo xtask setup)");
        }
        if elf_has_interpreter(&busybox)? {
            bail!(
                "{BUSYBOX} is dynamically linked (the busybox package) and cannot run in the vm's \
                 initramfs: install the busybox-static package (cargo xtask setup)"
            );
        }
        Ok(Self {
            kernel,
            qemu,
            busybox,
            modules,
        })
    }
}

/// Picks the newest kernel that has both `/boot/vmlinuz-<version>` and
/// `/lib/modules/<version>/modules.dep`, preferring one that is not the running kernel (the host's
/// own kernel usually ships no modules there).
fn find_kernel(modules_root: &Path, boot: &Path, running: &str) -> Result<(String, PathBuf)> {
    let mut versions: Vec<String> = match fs::read_dir(modules_root) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|version| {
                boot.join(format!("vmlinuz-{version}")).is_file()
                    && modules_root.join(version).join("modules.dep").is_file()
            })
            .collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot list {}", modules_root.display()));
        }
    };
    versions.sort_by(|a, b| version_cmp(a, b));
    let chosen = versions
        .iter()
        .rev()
        .find(|version| *version != running)
        .or_else(|| versions.last());
    match chosen {
        Some(version) => {
            let kernel = boot.join(format!("vmlinuz-{version}"));
            Ok((version.clone(), kernel))
        }
        None => bail!(
            "no kernel for the vm: found no {}/vmlinuz-<version> with {}/<version>/modules.dep \
             (the running kernel is {running}); install the {KERNEL_PACKAGE} package (cargo xtask setup)",
            boot.display(),
            modules_root.display()
        ),
    }
}

/// Compares version strings as `sort -V` roughly does: runs of digits numerically, the rest
/// byte-wise.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, sa), (db, sb)) in ca.iter().zip(&cb) {
        let order = if *da && *db {
            let (ta, tb) = (sa.trim_start_matches('0'), sb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            sa.cmp(sb)
        };
        if order.is_ne() {
            return order;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Module name as the kernel reports it, from a `modules.dep` path (`kernel/fs/9p/9p.ko.xz` is `9p`).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Lists the modules in `wanted` and their dependencies (from `modules.dep`) in load order,
/// skipping modules built into the kernel (`modules.builtin`).
fn resolve_modules(
    module_dir: &Path,
    wanted: &[(&str, &'static str)],
) -> Result<Vec<KernelModule>> {
    let dep_path = module_dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_path)
        .with_context(|| format!("cannot read {}", dep_path.display()))?;
    let table: Vec<DepEntry<'_>> = deps
        .lines()
        .filter_map(|line| {
            let (module, rest) = line.split_once(':')?;
            Some((
                module_name(module),
                module,
                rest.split_whitespace().collect(),
            ))
        })
        .collect();
    let builtin = fs::read_to_string(module_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();

    let mut order = Vec::new();
    for (name, params) in wanted {
        if table.iter().any(|(n, _, _)| n == name) {
            add_module(&table, module_dir, name, params, &mut order, 0)?;
        } else if !builtin.contains(*name) {
            bail!(
                "kernel module {name} is neither in {} nor built in: the vm cannot boot without it",
                dep_path.display()
            );
        }
    }
    Ok(order)
}

/// One `modules.dep` line: module name, its path, its dependencies' paths.
type DepEntry<'a> = (String, &'a str, Vec<&'a str>);

/// Appends module `name` to `order` after its dependencies (depth-first), once.
fn add_module(
    table: &[DepEntry<'_>],
    module_dir: &Path,
    name: &str,
    params: &'static str,
    order: &mut Vec<KernelModule>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|m| m.name == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("kernel module dependencies of {name} loop in modules.dep");
    }
    let Some((_, path, deps)) = table.iter().find(|(n, _, _)| n == name) else {
        bail!("kernel module {name} is a dependency but not in modules.dep");
    };
    for dep in deps {
        add_module(table, module_dir, &module_name(dep), "", order, depth + 1)?;
    }
    order.push(KernelModule {
        name: name.to_owned(),
        path: module_dir.join(path),
        params,
    });
    Ok(())
}

/// A module's object code, decompressed when the kernel ships it compressed (busybox's insmod
/// cannot be relied on to decompress).
fn module_bytes(module: &KernelModule) -> Result<Vec<u8>> {
    let path = &module.path;
    let tool = match path.extension().and_then(|ext| ext.to_str()) {
        Some("ko") => {
            return fs::read(path).with_context(|| format!("cannot read {}", path.display()));
        }
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("kernel module {} has an unknown file type", path.display()),
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {tool} to decompress {}", path.display()))?;
    if !output.status.success() {
        bail!("{tool} -dc {} failed ({})", path.display(), output.status);
    }
    Ok(output.stdout)
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Whether the 64-bit little-endian ELF file at `path` asks for a program interpreter (is
/// dynamically linked).
fn elf_has_interpreter(path: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let field = |at: usize, len: usize| -> Option<u64> {
        let bytes = data.get(at..at + len)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    let header_ok =
        data.starts_with(b"\x7fELF") && data.get(4) == Some(&2) && data.get(5) == Some(&1);
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (field(0x20, 8), field(0x36, 2), field(0x38, 2))
    else {
        bail!("{} is not a 64-bit ELF executable", path.display());
    };
    if !header_ok {
        bail!(
            "{} is not a 64-bit little-endian ELF executable",
            path.display()
        );
    }
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize)?;
        match field(at, 4) {
            Some(kind) if kind == u64::from(PT_INTERP) => return Ok(true),
            Some(_) => {}
            None => bail!(
                "{} has a truncated ELF program header table",
                path.display()
            ),
        }
    }
    Ok(false)
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

fn random_nonce() -> Result<String> {
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
fn marker_prefix(nonce: &str) -> String {
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

/// Stage 1, `/init` in the initramfs (busybox sh): modules, network, the root overlay, the VM's
/// own filesystems, every cgroup controller, then `switch_root` into stage 2.
fn stage1_script(modules: &[KernelModule]) -> String {
    let mut insmods = String::new();
    for module in modules {
        let params = if module.params.is_empty() {
            String::new()
        } else {
            format!(" {}", module.params)
        };
        let _ = writeln!(
            insmods,
            "insmod /lib/modules/{name}.ko{params} || die \"insmod {name} failed\"",
            name = module.name
        );
    }
    format!(
        r#"#!/bin/busybox sh
# kernlet node VM, stage 1 (PID 1 in the initramfs).
/bin/busybox mkdir -p /proc /sys /dev /host /newroot /up
/bin/busybox --install -s /bin
export PATH=/bin
die() {{ echo "kernlet-vm: $*" >&2; sleep 1; poweroff -f; sleep 30; }}
mount -t proc proc /proc || die "mounting /proc failed"
mount -t sysfs sysfs /sys || die "mounting /sys failed"
mount -t devtmpfs devtmpfs /dev || die "mounting /dev failed"
{insmods}ip link set lo up || die "bringing lo up failed"
ip link add dummy0 type dummy || die "creating dummy0 failed"
ip addr add 192.0.2.10/24 dev dummy0 || die "addressing dummy0 failed"
ip link set dummy0 up || die "bringing dummy0 up failed"
ip route add default via 192.0.2.1 dev dummy0 || die "adding the default route failed"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 host /host || die "mounting the host's root over 9p failed"
mount -t tmpfs -o mode=0755 tmpfs /up && mkdir -p /up/upper /up/work || die "mounting the overlay's tmpfs failed"
mount -t overlay -o lowerdir=/host,upperdir=/up/upper,workdir=/up/work overlay /newroot || die "mounting the root overlay failed"
mkdir -p /newroot{GUEST_DIR} && cp /vm/run /vm/cmd /newroot{GUEST_DIR}/ || die "copying the command failed"
for d in proc sys dev; do mount --move /$d /newroot/$d || die "moving /$d failed"; done
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts || die "mounting /dev/pts failed"
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm || die "mounting /dev/shm failed"
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || die "mounting cgroup2 failed"
mount -t bpf bpf /newroot/sys/fs/bpf || die "mounting bpffs failed"
mount -t tracefs tracefs /newroot/sys/kernel/tracing || die "mounting tracefs failed"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || die "mounting /run failed"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || die "mounting /tmp failed"
# Container state: overlayfs cannot use the root overlay as an upper layer.
mkdir -p /newroot/var/lib/vm && mount -t tmpfs -o mode=0755 tmpfs /newroot/var/lib/vm || die "mounting /var/lib/vm failed"
for c in $(cat /newroot/sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control || die "enabling the $c cgroup controller failed"
done
exec switch_root /newroot /bin/sh {GUEST_DIR}/run
die "switch_root failed"
"#
    )
}

/// Stage 2, PID 1 on the overlay root (the host's `/bin/sh`): environment, working directory,
/// the command, its exit marker, power-off.
fn stage2_script(env: &[(String, String)], cwd: &Path, nonce: &str) -> Result<String> {
    let Some(cwd) = cwd.to_str() else {
        bail!("the working directory {} is not utf-8", cwd.display());
    };
    let mut exports = String::new();
    for (name, value) in [("PATH", GUEST_PATH), ("HOME", "/root")]
        .into_iter()
        .chain(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        let _ = writeln!(exports, "export {name}={}", shell_quote(value));
    }
    let cwd = shell_quote(cwd);
    // The marker is printed through a format string, so this script's text never holds it whole:
    // a command that prints the script cannot fake the status.
    Ok(format!(
        r#"#!/bin/sh
# kernlet node VM, stage 2 (PID 1 on the overlay root).
{exports}cd {cwd} || {{ echo "kernlet-vm: cannot enter "{cwd} >&2; sleep 1; echo o > /proc/sysrq-trigger; sleep 30; }}
/bin/sh {GUEST_DIR}/cmd < /dev/null
status=$?
printf '\n__KERNLET_VM_EXIT_%s__=%s\n' {nonce} "$status"
# The host stops qemu once it has read the marker; powering off is the fallback, late enough
# for the marker to leave the serial port first.
sleep 5
echo o > /proc/sysrq-trigger
sleep 30
"#
    ))
}

/// Writes the initramfs: busybox, the modules, both stages and the command.
fn write_initramfs(path: &Path, host: &HostParts, stage2: &str, command: &str) -> Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    let busybox = fs::read(&host.busybox)
        .with_context(|| format!("cannot read {}", host.busybox.display()))?;
    let write = |cpio: &mut CpioWriter<_>| -> Result<()> {
        for dir in ["bin", "dev", "lib", "lib/modules", "vm"] {
            cpio.dir(dir)?;
        }
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        cpio.char_device("dev/console", 0o600, 5, 1)?;
        cpio.file("bin/busybox", 0o755, &busybox)?;
        for module in &host.modules {
            let bytes = module_bytes(module)?;
            cpio.file(&format!("lib/modules/{}.ko", module.name), 0o644, &bytes)?;
        }
        cpio.file("init", 0o755, stage1_script(&host.modules).as_bytes())?;
        cpio.file("vm/run", 0o755, stage2.as_bytes())?;
        let mut command = command.to_owned();
        command.push('\n');
        cpio.file("vm/cmd", 0o644, command.as_bytes())?;
        Ok(())
    };
    write(&mut cpio)?;
    cpio.finish()
        .and_then(|mut out| out.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a newc ("070701") cpio archive, the format the kernel unpacks as an initramfs.
struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFCHR: u32 = 0o020_000;

    fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        self.entry(name, Self::S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(name, Self::S_IFREG | perm, 1, (0, 0), data)
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(name, Self::S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// Ends the archive with its trailer and hands back the writer.
    fn finish(mut self) -> io::Result<W> {
        self.raw_entry(0, "TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(ino, name, mode, nlink, rdev, data)
            .with_context(|| format!("cannot add {name} to the initramfs"))
    }

    fn raw_entry(
        &mut self,
        ino: u32,
        name: &str,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let too_big = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} too large for cpio"),
            )
        };
        let size = u32::try_from(data.len()).map_err(|_| too_big("file"))?;
        let name_size = u32::try_from(name.len() + 1).map_err(|_| too_big("name"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            let _ = write!(header, "{field:08X}");
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads with NULs to a multiple of 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..pad as usize])
    }
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
fn boot(opts: &VmOptions, host: &HostParts, initrd: &Path, nonce: &str) -> Result<VmRun> {
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
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.dir("bin").unwrap();
        cpio.file("bin/x", 0o755, b"hello").unwrap();
        let out = cpio.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let header = std::str::from_utf8(&out[..110]).unwrap();
        // namesize of "bin" with its NUL.
        assert_eq!(&header[6 + 11 * 8..6 + 12 * 8], "00000004");
        // 110 + 4 = 114, padded to 116.
        assert!(out[116..].starts_with(b"070701"));
        let file_header = std::str::from_utf8(&out[116..226]).unwrap();
        assert_eq!(&file_header[6 + 6 * 8..6 + 7 * 8], "00000005");
        assert_eq!(&file_header[6 + 8..6 + 2 * 8], "000081ED");
        // 116 + 110 + "bin/x\0" (6) = 232, data at 232..237, padded to 240.
        assert_eq!(&out[232..237], b"hello");
        assert_eq!(&out[240..246], b"070701");
        let trailer = &out[240 + 110..240 + 110 + 10];
        assert_eq!(trailer, b"TRAILER!!!");
    }

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
    fn versions_sort_numerically() {
        use std::cmp::Ordering::Less;
        assert_eq!(version_cmp("6.1.0-9-amd64", "6.1.0-56-amd64"), Less);
        assert_eq!(version_cmp("5.10.0-30-amd64", "6.1.0-1-amd64"), Less);
        assert_eq!(version_cmp("6.1", "6.1.0"), Less);
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(module_name("kernel/drivers/x/foo-bar.ko.zst"), "foo_bar");
    }

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

    #[test]
    fn stage2_quotes_what_it_forwards() {
        let env = vec![("KERNLET_X".to_owned(), "a'b $c\nd".to_owned())];
        let script = stage2_script(&env, Path::new("/work/my dir"), "00ff").unwrap();
        assert!(script.contains("export KERNLET_X='a'\\''b $c\nd'\n"));
        assert!(script.contains("cd '/work/my dir' ||"));
        assert!(!script.contains(&marker_prefix("00ff")));
    }

    #[test]
    fn the_kernel_is_the_newest_one_that_is_not_running() {
        let root = tempfile::tempdir().unwrap();
        let (modules, boot) = (root.path().join("modules"), root.path().join("boot"));
        let err = find_kernel(&modules, &boot, "6.18.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux-image-amd64") && err.contains("cargo xtask setup"),
            "{err}"
        );
        for version in [
            "6.1.0-9-amd64",
            "6.1.0-56-amd64",
            "6.18.0",
            "7.0.0-no-vmlinuz",
        ] {
            fs::create_dir_all(modules.join(version)).unwrap();
            fs::write(modules.join(version).join("modules.dep"), "").unwrap();
        }
        fs::create_dir_all(&boot).unwrap();
        for version in ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.18.0"] {
            fs::write(boot.join(format!("vmlinuz-{version}")), "").unwrap();
        }
        let (version, kernel) = find_kernel(&modules, &boot, "6.18.0").unwrap();
        assert_eq!(version, "6.1.0-56-amd64");
        assert_eq!(kernel, boot.join("vmlinuz-6.1.0-56-amd64"));
        // Any kernel but the running one, newer or older.
        let (version, _) = find_kernel(&modules, &boot, "6.1.0-56-amd64").unwrap();
        assert_eq!(version, "6.18.0");
    }

    #[test]
    fn modules_load_after_their_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet.ko.xz:\n\
             kernel/fs/netfs/netfs.ko.xz:\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        )
        .unwrap();
        let order =
            resolve_modules(dir.path(), &[("9p", ""), ("overlay", ""), ("9pnet", "")]).unwrap();
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["9pnet", "netfs", "9p"]);
        assert!(order[2].path.ends_with("kernel/fs/9p/9p.ko.xz"));
        let err = resolve_modules(dir.path(), &[("dummy", "")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kernel module dummy"), "{err}");
    }

    #[test]
    fn hidden_working_directories_are_refused() {
        assert!(check_cwd(Path::new("/tmp/x")).is_err());
        assert!(check_cwd(Path::new("/work/main")).is_ok());
        assert!(check_cwd(Path::new("/tmpfoo")).is_ok());
    }
}
