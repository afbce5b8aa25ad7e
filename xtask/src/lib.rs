//! kernlet's developer tasks as a library, so the test suite uses the same code as `cargo xtask`:
//! machine setup, test images, the private containerd fixture, the node VM and the layering check.
#![expect(
    clippy::disallowed_methods,
    reason = "developer tools wait on and measure real processes: std time is the right clock"
)]

pub mod api_fault;
pub mod bench;
pub mod cmd;
pub mod control_plane;
pub mod demo;
pub mod fault_proxy;
pub mod http;
pub mod images;
pub mod k8s;
pub mod layers;
pub mod pki;
pub mod runtime;
pub mod setup;
pub mod test;
pub mod vm;

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
#[must_use]
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), std::path::Path::to_path_buf)
}

/// Where xtask keeps what it builds (images, initramfs, fixtures): `target/xtask/`.
#[must_use]
pub fn xtask_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("xtask")
}
