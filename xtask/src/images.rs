//! Test images (stub: being written by a helper; the public names below are the contract).
use std::path::{Path, PathBuf};

/// Image used as the CRI plugin's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "kernlet.local/pause:1";
/// busybox-based image for test containers.
pub const TEST_IMAGE: &str = "kernlet.local/busybox:1";

/// One built OCI image-layout tarball.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub name: String,
    pub path: PathBuf,
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
}

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {}

/// Builds every test image into `out_dir` (reusing tarballs whose inputs did not change).
pub fn build_all(out_dir: &Path) -> anyhow::Result<Vec<BuiltImage>> {
    let _ = out_dir;
    anyhow::bail!("not written yet")
}

pub fn cli(args: &ImagesArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("not written yet")
}
