//! `cargo xtask setup`: installs what a fresh Debian bookworm machine lacks to build, run and test
//! kernlet, and nothing else. Every step checks first, so a second run only checks (seconds).
//!
//! Steps: Debian packages (runtime, VM, eBPF toolchain libraries, protoc, test tools), the nightly
//! toolchain's `rust-src` (for `-Z build-std=core`), and `bpf-linker` built against Debian's LLVM 22.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::cmd::{capture, run};

/// Debian packages and why kernlet needs each.
const PACKAGES: &[(&str, &str)] = &[
    (
        "containerd",
        "the container runtime kernlet drives through CRI",
    ),
    ("runc", "the OCI runtime containerd starts containers with"),
    (
        "containernetworking-plugins",
        "CNI bridge/host-local/loopback for pod networking",
    ),
    ("busybox-static", "test images and the node VM's initramfs"),
    ("iproute2", "network checks in tests and the node VM"),
    ("qemu-system-x86", "the node VM (pure cgroup v2)"),
    (
        "linux-image-amd64",
        "the node VM's kernel (Debian 6.1, cgroup v2 controllers)",
    ),
    ("cpio", "inspecting the node VM's initramfs"),
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links against LLVM 22"),
    ("libzstd-dev", "bpf-linker links against LLVM 22"),
    ("zlib1g-dev", "bpf-linker links against LLVM 22"),
    (
        "clang-22",
        "compiling C eBPF programs where CO-RE struct walks need it",
    ),
    (
        "libbpf-dev",
        "bpf_helpers.h and bpf_core_read.h for the C eBPF programs",
    ),
    ("protobuf-compiler", "protoc for the CRI bindings in proto/"),
    (
        "bpftool",
        "vmlinux.h for the C eBPF programs; inspecting loaded programs",
    ),
    ("prometheus", "promtool checks every metrics endpoint"),
    ("kmod", "loading kernel modules in the node VM"),
    (
        "xz-utils",
        "decompressing kernel modules for the node VM and the Kubernetes binaries (k8s)",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

#[derive(clap::Args, Debug, Default)]
pub struct SetupArgs {
    /// Only report what is missing; install nothing (exit status 1 if anything is missing).
    #[arg(long)]
    pub check: bool,
}

/// What is missing on this machine.
#[derive(Debug, Default)]
pub struct Missing {
    pub packages: Vec<&'static str>,
    pub nightly: bool,
    pub rust_src: bool,
    pub bpf_linker: bool,
}

impl Missing {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && !self.nightly && !self.rust_src && !self.bpf_linker
    }
}

/// Looks at the machine and lists what is missing, without changing anything.
pub fn check() -> Result<Missing> {
    Ok(Missing {
        packages: missing_packages()?,
        nightly: !nightly_installed()?,
        rust_src: !rust_src_installed(),
        bpf_linker: !bpf_linker_ok(),
    })
}

/// Installs whatever [`check`] reports missing; prints each step.
pub fn ensure() -> Result<()> {
    let missing = check()?;
    if missing.is_empty() {
        println!("setup: nothing is missing");
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("setup must install {missing:?} and needs root: run it as root");
    }
    if !missing.packages.is_empty() {
        install_packages(&missing.packages)?;
    }
    if missing.nightly {
        step("rustup: installing the nightly toolchain (minimal profile)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("installing the nightly toolchain")?;
    }
    if missing.nightly || missing.rust_src {
        step("rustup: adding rust-src to nightly (for -Z build-std=core)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain")?;
    }
    if missing.bpf_linker {
        step(&format!(
            "cargo: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (~5 min)"
        ));
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("cargo")
            .args(["install", "--locked", "bpf-linker", "--version"])
            .arg(format!("~{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX))
        .context("building bpf-linker (needs llvm-22-dev and libpolly-22-dev)")?;
    }
    let left = check()?;
    if !left.is_empty() {
        bail!("setup finished but these are still missing: {left:?}");
    }
    println!("setup: done");
    Ok(())
}

pub fn cli(args: &SetupArgs) -> Result<bool> {
    if args.check {
        let missing = check()?;
        if missing.is_empty() {
            println!("setup: nothing is missing");
        } else {
            println!("setup: missing {missing:?}");
        }
        return Ok(missing.is_empty());
    }
    ensure().map(|()| true)
}

fn step(what: &str) {
    println!("setup: {what}");
}

fn missing_packages() -> Result<Vec<&'static str>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status}\n"])
        .args(PACKAGES.iter().map(|(name, _)| *name))
        .stderr(Stdio::null())
        .output()
        .context("running dpkg-query (is this a Debian machine?)")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.strip_suffix(" installed"))
        .collect();
    Ok(PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !installed.contains(name))
        .collect())
}

fn install_packages(packages: &[&'static str]) -> Result<()> {
    for name in packages {
        let why = PACKAGES
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, why)| *why);
        step(&format!("apt: {name} ({why})"));
    }
    run(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update")?;
    let install = |names: &[&str]| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(names)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install(packages).is_ok() {
        return Ok(());
    }
    // Retry one by one so the error names exactly what could not be installed.
    let failed: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|name| install(&[name]).is_err())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("apt-get could not install: {}", failed.join(", "))
    }
}

fn nightly_installed() -> Result<bool> {
    let list = capture(Command::new("rustup").args(["toolchain", "list"]))
        .context("running rustup (kernlet's eBPF build needs rustup's nightly)")?;
    Ok(list.lines().any(|line| line.starts_with("nightly")))
}

fn rust_src_installed() -> bool {
    let list = capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    list.is_ok_and(|list| list.lines().any(|line| line.starts_with("rust-src")))
}

fn bpf_linker_ok() -> bool {
    let candidates = [
        Some(PathBuf::from("bpf-linker")),
        std::env::var_os("CARGO_HOME").map(|home| PathBuf::from(home).join("bin/bpf-linker")),
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/bpf-linker")),
    ];
    candidates.into_iter().flatten().any(|path| {
        capture(Command::new(path).arg("--version"))
            .is_ok_and(|v| v.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")))
    })
}
