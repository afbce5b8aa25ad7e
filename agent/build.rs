//! Builds the eBPF programs in `ebpf/programs` (nightly, `-Z build-std=core`, bpf-linker) and puts
//! the object in `OUT_DIR` for `include_bytes_aligned!`. A nested cargo with its own target dir
//! avoids waiting on the outer build's lock.
//!
//! `KERNLET_EBPF_OBJECT=/path/to/obj` skips the nested build and embeds a prebuilt object instead.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const OBJECT: &str = "kernlet.bpf.o";

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

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("bpf");
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
