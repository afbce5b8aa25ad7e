//! Builds the eBPF programs and puts the objects in `OUT_DIR` for `include_bytes_aligned!`:
//! - `ebpf/programs` (Rust: nightly, `-Z build-std=core`, bpf-linker) with a nested cargo and its
//!   own target dir, which avoids waiting on the outer build's lock;
//! - `ebpf/c/*.bpf.c` (C with CO-RE: clang `-target bpf -g -O2` against a `vmlinux.h` that
//!   `bpftool btf dump` writes from this machine's `/sys/kernel/btf/vmlinux`, and libbpf's headers).
//!
//! `KERNLET_EBPF_OBJECT=/path/to/obj` skips the nested Rust build and embeds a prebuilt object;
//! `KERNLET_CLANG` and `KERNLET_BPFTOOL` name the tools (default `clang-22`, then `clang`, and
//! `bpftool`); `KERNLET_VMLINUX_BTF` a BTF file other than the running kernel's.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const OBJECT: &str = "kernlet.bpf.o";
/// The C programs in `ebpf/c`, each its own object so one that a kernel refuses cannot take the
/// others down (aya creates an object's maps all at once).
const C_PROGRAMS: [&str; 3] = ["runqlat", "block", "oom"];
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

fn main() {
    if let Err(message) = run() {
        // A build script reports failure by panicking; the message is what the user sees.
        #[expect(clippy::panic, reason = "build scripts fail by panicking")]
        {
            panic!("{message}");
        }
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let root = manifest
        .parent()
        .ok_or("agent crate has no parent directory")?;
    let programs = root.join("ebpf/programs");
    let dest = out_dir.join(OBJECT);

    build_c(&root.join("ebpf/c"), &out_dir)?;

    println!("cargo:rerun-if-env-changed=KERNLET_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("KERNLET_EBPF_OBJECT") {
        std::fs::copy(&prebuilt, &dest).map_err(|e| {
            format!(
                "copying KERNLET_EBPF_OBJECT {}: {e}",
                Path::new(&prebuilt).display()
            )
        })?;
        return Ok(());
    }
    for watched in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            programs.join(watched).display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("ebpf/common/src").display()
    );

    // Keyed by the checkout: worktrees sharing one CARGO_TARGET_DIR would otherwise reuse each
    // other's objects (cargo judges freshness by mtime, and the nested build's paths are relative).
    let checkout = root
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned());
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("bpf")
        .join(format!("{checkout}-{:016x}", path_hash(root)));
    let mut cargo = Command::new("rustup");
    cargo
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--release",
            "--bins",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(&programs);
    // The outer build's compiler settings are for the host and must not leak into the BPF build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo.status().map_err(|e| {
        format!("cannot run rustup to build the eBPF programs ({e}); run `cargo xtask setup`")
    })?;
    if !status.success() {
        return Err(format!(
            "building the eBPF programs in {} failed ({status}); if nightly, rust-src or bpf-linker \
             is missing, run `cargo xtask setup`",
            programs.display()
        ));
    }
    let built = target_dir.join("bpfel-unknown-none/release/kernlet");
    std::fs::copy(&built, &dest)
        .map_err(|e| format!("copying eBPF object {}: {e}", built.display()))?;
    Ok(())
}

/// FNV-1a of the path, stable across runs (std's hasher is randomly seeded per process).
fn path_hash(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Compiles every `ebpf/c/<name>.bpf.c` of [`C_PROGRAMS`] into `OUT_DIR/<name>.bpf.o`.
fn build_c(sources: &Path, out_dir: &Path) -> Result<(), String> {
    for var in ["KERNLET_CLANG", "KERNLET_BPFTOOL", "KERNLET_VMLINUX_BTF"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed={}", sources.display());
    let btf = env::var_os("KERNLET_VMLINUX_BTF")
        .map_or_else(|| PathBuf::from(VMLINUX_BTF), PathBuf::from);
    let bpftool = env::var_os("KERNLET_BPFTOOL").unwrap_or_else(|| "bpftool".into());
    let vmlinux = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(&btf)
        .args(["format", "c"])
        .output()
        .map_err(|e| {
            format!("cannot run bpftool to write vmlinux.h ({e}); run `cargo xtask setup`")
        })?;
    if !vmlinux.status.success() {
        return Err(format!(
            "bpftool btf dump file {} failed ({}): {}; the kernel needs CONFIG_DEBUG_INFO_BTF, or set \
             KERNLET_VMLINUX_BTF",
            btf.display(),
            vmlinux.status,
            String::from_utf8_lossy(&vmlinux.stderr).trim()
        ));
    }
    let include = out_dir.join("include");
    std::fs::create_dir_all(&include)
        .map_err(|e| format!("creating {}: {e}", include.display()))?;
    let header = include.join("vmlinux.h");
    std::fs::write(&header, &vmlinux.stdout)
        .map_err(|e| format!("writing {}: {e}", header.display()))?;

    // bpf_tracing.h picks the register layout of the target the agent is built for.
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("s390x") => "s390",
        Ok("powerpc64") => "powerpc",
        _ => "x86",
    };
    let clang = clang()?;
    for name in C_PROGRAMS {
        let source = sources.join(format!("{name}.bpf.c"));
        let object = out_dir.join(format!("{name}.bpf.o"));
        let output = Command::new(&clang)
            .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            // One size for the Rust and C cgroup maps: kernlet-ebpf-common's.
            .arg(format!(
                "-DKERNLET_CGROUP_ENTRIES={}",
                kernlet_ebpf_common::CGROUP_ENTRIES
            ))
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(sources)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .output()
            .map_err(|e| {
                format!(
                    "cannot run {} on {}: {e}",
                    clang.display(),
                    source.display()
                )
            })?;
        if !output.status.success() {
            return Err(format!(
                "compiling {} failed ({}); if bpf/bpf_helpers.h is missing, run `cargo xtask setup` \
                 (libbpf-dev):\n{}",
                source.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

/// `KERNLET_CLANG`, else the first of `clang-22` and `clang` that runs.
fn clang() -> Result<PathBuf, String> {
    if let Some(clang) = env::var_os("KERNLET_CLANG") {
        return Ok(PathBuf::from(clang));
    }
    ["clang-22", "clang"]
        .into_iter()
        .map(PathBuf::from)
        .find(|candidate| {
            Command::new(candidate)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| {
            "no clang-22 or clang to compile the C eBPF programs; run `cargo xtask setup`".into()
        })
}
