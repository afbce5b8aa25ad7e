//! Generates the CRI `runtime.v1` messages and tonic client/server stubs from
//! `proto/runtime/v1/api.proto` with the system `protoc`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

const PROTO: &str = "proto/runtime/v1/api.proto";
/// containerd's event service and task events (the PLEG's exit events on containerd).
const CONTAINERD: [&str; 3] = [
    "proto/containerd/services/events/v1/events.proto",
    "proto/containerd/events/task.proto",
    "proto/containerd/wire.proto",
];
const INCLUDE: &str = "proto";

fn main() {
    println!("cargo:rerun-if-changed={PROTO}");
    for proto in CONTAINERD {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    let Some(protoc) = find_protoc() else {
        fail(
            "protoc (the Protocol Buffers compiler) was not found: set PROTOC or put protoc on \
             PATH. Run `cargo xtask setup` to install it (Debian package protobuf-compiler).",
        );
    };
    // prost-build finds the same binary (PROTOC, else PATH); make sure it actually runs so a
    // broken install gets the same advice as a missing one.
    check_runs(&protoc);

    let result = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Test doubles and fake runtimes only implement the calls they need.
        .generate_default_stubs(true)
        // Registry secrets must not end up in logs: lib.rs has a redacting Debug.
        .skip_debug(["runtime.v1.AuthConfig"])
        .compile_protos(&[PROTO], &[INCLUDE]);
    if let Err(err) = result {
        fail(&format!(
            "compiling {PROTO} with {} failed: {err}",
            protoc.display()
        ));
    }
    let result = tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_protos(&CONTAINERD, &[INCLUDE]);
    if let Err(err) = result {
        fail(&format!(
            "compiling containerd's event protos with {} failed: {err}",
            protoc.display()
        ));
    }
}

/// The protoc prost-build will use: `$PROTOC` if set, else the first `protoc` on `PATH`.
fn find_protoc() -> Option<PathBuf> {
    if let Some(explicit) = env::var_os("PROTOC") {
        let path = PathBuf::from(explicit);
        return path.is_file().then_some(path);
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join("protoc"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn check_runs(protoc: &Path) {
    match Command::new(protoc).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => fail(&format!(
            "{} does not run: run `cargo xtask setup` to install protoc \
             (Debian package protobuf-compiler)",
            protoc.display()
        )),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: kernlet-cri: {message}");
    println!("cargo:warning=kernlet-cri: {message}");
    process::exit(1);
}
