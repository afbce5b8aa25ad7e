//! The test images in a fixture: built once at a time (they share an output directory across
//! processes), imported with `ctr` and checked to be listed with the digests that were built.
use std::fs;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};

use super::files::lock_file;
use super::layout::Layout;
use super::tools::{ctr_command, run_checked};
use crate::images;

/// Builds the test images in `dir` and imports them into the fixture's containerd.
pub(super) fn import_images(layout: &Layout, dir: &Path) -> anyhow::Result<()> {
    let built = build_images(dir)?;
    for image in &built {
        run_checked(
            ctr_command(layout)
                .args(["images", "import", "--all-platforms"])
                .arg(&image.path),
            Duration::from_mins(2),
        )?;
    }
    let listing = run_checked(
        ctr_command(layout).args(["images", "ls"]),
        Duration::from_secs(10),
    )?;
    for image in &built {
        let found = listing.lines().any(|line| {
            let mut cols = line.split_whitespace();
            cols.next() == Some(image.name.as_str()) && line.contains(&image.digest)
        });
        if !found {
            bail!(
                "image {} ({}) is not listed after importing {}; ctr images ls:\n{listing}",
                image.name,
                image.digest,
                image.path.display()
            );
        }
    }
    Ok(())
}

/// Builds the images once at a time (process-wide and across processes: they share the
/// output directory).
fn build_images(dir: &Path) -> anyhow::Result<Vec<images::BuiltImage>> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create image directory {}", dir.display()))?;
    let _lock = lock_file(&dir.with_extension("lock"))?;
    images::build_all(dir).with_context(|| format!("cannot build test images in {}", dir.display()))
}
