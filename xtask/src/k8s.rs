//! The upstream Kubernetes binaries (kubelet, kube-apiserver, etcd, kube-controller-manager,
//! kube-scheduler) for side-by-side benchmarks and cluster-mode tests.
//!
//! They are not built here: the machines carry them xz-compressed next to the checkouts
//! (`<workspace parent>/shared/k8s`, with an `unpack` script checking `SHA256SUMS`). [`find`]
//! hands back a directory holding the executables: `$KERNLET_K8S_BIN` if set, else that copy
//! unpacked into `target/k8s-bin` (a second unpack only checks the checksums). When neither is
//! there the caller gets the reason and skips; the node VM cannot unpack (its root is a
//! throw-away overlay), so hosts unpack first and pass [`ENV`] in.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{bench::target_dir, cmd, workspace_root};

/// Environment variable naming a directory that already holds the executables.
pub const ENV: &str = "KERNLET_K8S_BIN";
/// The executables a directory from [`find`] holds.
pub const BINARIES: [&str; 5] = [
    "kubelet",
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Where the Kubernetes binaries are, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K8sBin {
    /// A directory holding every one of [`BINARIES`].
    Found(PathBuf),
    /// Neither `$KERNLET_K8S_BIN` nor the shared copy exists; the reason, for a skip line.
    Missing(String),
}

/// The shared, compressed copy: `<workspace parent>/shared/k8s` (e.g. `/work/shared/k8s` for
/// `/work/main`).
#[must_use]
pub fn shared_dir() -> PathBuf {
    let root = workspace_root();
    root.parent().unwrap_or(&root).join("shared").join("k8s")
}

/// Where [`find`] unpacks the shared copy: `target/k8s-bin`.
#[must_use]
pub fn cache_dir() -> PathBuf {
    target_dir().join("k8s-bin")
}

/// Finds the binaries: `$KERNLET_K8S_BIN`, else the shared copy unpacked into [`cache_dir`].
/// Errors are real failures (a set variable naming an incomplete directory, a failed unpack or
/// checksum); a machine without either is [`K8sBin::Missing`].
pub fn find() -> Result<K8sBin> {
    if let Some(dir) = std::env::var_os(ENV) {
        let dir = PathBuf::from(dir);
        check_complete(&dir).with_context(|| format!("${ENV}={}", dir.display()))?;
        return Ok(K8sBin::Found(dir));
    }
    let shared = shared_dir();
    let unpack = shared.join("unpack");
    if !unpack.is_file() {
        return Ok(K8sBin::Missing(format!(
            "no Kubernetes binaries: ${ENV} is not set and {} does not exist",
            unpack.display()
        )));
    }
    let cache = cache_dir();
    cmd::run(Command::new(&unpack).arg(&cache))
        .with_context(|| format!("unpacking {} into {}", shared.display(), cache.display()))?;
    check_complete(&cache)?;
    Ok(K8sBin::Found(cache))
}

/// Fails unless `dir` holds every one of [`BINARIES`].
fn check_complete(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = BINARIES
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} lacks {}", dir.display(), missing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = check_complete(dir.path()).unwrap_err().to_string();
        assert!(error.contains("kubelet, kube-apiserver"), "{error}");
        for name in BINARIES {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        check_complete(dir.path()).unwrap();
    }

    #[test]
    fn the_shared_copy_sits_next_to_the_checkout() {
        assert!(shared_dir().ends_with("shared/k8s"));
        assert!(cache_dir().ends_with("k8s-bin"));
    }
}
