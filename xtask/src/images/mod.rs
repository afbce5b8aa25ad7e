//! Reproducible OCI test images, built without a registry or a container tool.
//!
//! kernlet's tests run against a real containerd but no registry is reachable, so the images
//! they need are built here from the host's static busybox (`/bin/busybox`) and imported with
//! `ctr -n k8s.io images import`:
//!
//! - [`PAUSE_IMAGE`]: the CRI plugin's `sandbox_image`. Its entrypoint runs forever and exits 0
//!   promptly on `SIGTERM` or `SIGINT` (as PID 1 of a pid namespace it traps both, since the
//!   kernel drops signals PID 1 has no handler for).
//! - [`TEST_IMAGE`]: busybox with the applets tests use (`sh`, `sleep`, `httpd`, `nc`, ...), no
//!   entrypoint and `Cmd ["/bin/sh"]`.
//!
//! Each image is a tarball of an OCI image layout as in the OCI image-layout specification
//! v1.0 (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>): an
//! `oci-layout` file, an `index.json` whose single manifest descriptor carries the annotations
//! `io.containerd.image.name` (the full image name, which `ctr images import` uses) and
//! `org.opencontainers.image.ref.name` (the tag), and content-addressed `blobs/sha256/<hex>`
//! holding the image manifest (`application/vnd.oci.image.manifest.v1+json`), the image config
//! (`application/vnd.oci.image.config.v1+json`) and one uncompressed layer
//! (`application/vnd.oci.image.layer.v1.tar`, so its diff id equals its digest).
//!
//! Builds are reproducible: every tar entry has mtime 0, uid/gid 0, no user names and a fixed
//! mode, entries are sorted by path and JSON is serialised from structs in declaration order,
//! so the same busybox binary always gives byte-identical tarballs and the same manifest digest.
//! A `<file>.stamp` next to each tarball records the hash of the inputs (busybox binary, image
//! definition, [`FORMAT_VERSION`]); a build whose recorded inputs are unchanged is skipped.
//!
//! Layout: this module holds the image definitions and the build with its input stamps;
//! `layer` builds the shared busybox layer, `oci` the image config, manifest and index around
//! it, and `archive` writes both as reproducible tar archives.

mod archive;
mod layer;
mod oci;
#[cfg(test)]
mod test_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use layer::{Layer, build_layer};
use oci::image_layout;

/// Image used as the CRI plugin's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "kernlet.local/pause:1";
/// busybox-based image for test containers.
pub const TEST_IMAGE: &str = "kernlet.local/busybox:1";

/// Bump whenever the layout, the layer contents or the JSON written here changes: it is part of
/// the recorded input hash, so existing tarballs are rebuilt.
pub const FORMAT_VERSION: &str = "kernlet-test-images/1";

/// The busybox binary copied into the images.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// One built OCI image-layout tarball.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub name: String,
    pub path: PathBuf,
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
}

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Directory to write the image tarballs into.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::xtask_dir().join("images"))]
    pub out: PathBuf,
    /// Rebuild even when the recorded inputs are unchanged.
    #[arg(long)]
    pub force: bool,
}

/// Builds every test image into `out_dir` (reusing tarballs whose inputs did not change).
pub fn build_all(out_dir: &Path) -> anyhow::Result<Vec<BuiltImage>> {
    build_images(out_dir, Path::new(HOST_BUSYBOX), false)
}

/// Builds every test image into `out_dir` from the busybox binary at `busybox`; with `force`
/// the tarballs are rewritten even when their recorded inputs are unchanged.
pub fn build_images(
    out_dir: &Path,
    busybox: &Path,
    force: bool,
) -> anyhow::Result<Vec<BuiltImage>> {
    fs::create_dir_all(out_dir)
        .with_context(|| format!("creating image output directory {}", out_dir.display()))?;
    let binary = fs::read(busybox)
        .with_context(|| format!("reading busybox binary {}", busybox.display()))?;
    let busybox_hash = sha256_hex(&binary);

    let mut layer: Option<Layer> = None;
    let mut built = Vec::with_capacity(IMAGES.len());
    for spec in &IMAGES {
        let path = out_dir.join(spec.file);
        let stamp_path = out_dir.join(format!("{}.stamp", spec.file));
        let inputs = input_hash(spec, &busybox_hash)?;
        if !force && let Some(digest) = up_to_date(&path, &stamp_path, &inputs) {
            built.push(BuiltImage {
                name: spec.name.to_owned(),
                path,
                digest,
            });
            continue;
        }
        let layer = match &mut layer {
            Some(layer) => layer,
            empty @ None => empty.insert(build_layer(busybox, &binary)?),
        };
        let (tarball, digest) = image_layout(spec, layer)?;
        write_file_atomically(out_dir, &path, &tarball)?;
        let stamp = serde_json::to_vec(&Stamp {
            inputs,
            digest: digest.clone(),
        })
        .context("serialising image stamp")?;
        write_file_atomically(out_dir, &stamp_path, &stamp)?;
        built.push(BuiltImage {
            name: spec.name.to_owned(),
            path,
            digest,
        });
    }
    Ok(built)
}

/// `cargo xtask images`: builds the images and prints name, manifest digest and path of each.
pub fn cli(args: &ImagesArgs) -> anyhow::Result<()> {
    let images = build_images(&args.out, Path::new(HOST_BUSYBOX), args.force)?;
    for image in images {
        println!("{}\t{}\t{}", image.name, image.digest, image.path.display());
    }
    Ok(())
}

/// What goes into one image besides the shared busybox layer.
#[derive(Debug, Serialize)]
struct ImageSpec {
    name: &'static str,
    /// Tarball file name inside the output directory.
    file: &'static str,
    entrypoint: Option<&'static [&'static str]>,
    cmd: Option<&'static [&'static str]>,
    env: &'static [&'static str],
}

/// Runs forever; exits 0 on SIGTERM/SIGINT. `wait` returns as soon as a trapped signal arrives
/// (a foreground `sleep` would delay the trap until it ends). The orphaned `sleep` dies with the
/// pid namespace when PID 1 exits.
const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

const IMAGES: [ImageSpec; 2] = [
    ImageSpec {
        name: PAUSE_IMAGE,
        file: "pause.tar",
        entrypoint: Some(&["/bin/sh", "-c", PAUSE_SCRIPT]),
        cmd: None,
        env: &["PATH=/bin"],
    },
    ImageSpec {
        name: TEST_IMAGE,
        file: "busybox.tar",
        entrypoint: None,
        cmd: Some(&["/bin/sh"]),
        env: &["PATH=/bin"],
    },
];

/// Recorded next to each tarball to skip unchanged rebuilds.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    inputs: String,
    digest: String,
}

fn input_hash(spec: &ImageSpec, busybox_hash: &str) -> anyhow::Result<String> {
    let spec_json = serde_json::to_string(spec).context("serialising image definition")?;
    Ok(sha256_hex(
        format!("{FORMAT_VERSION}\n{busybox_hash}\n{spec_json}\n").as_bytes(),
    ))
}

/// The recorded manifest digest, if `path` exists and its stamp records the same `inputs`.
fn up_to_date(path: &Path, stamp_path: &Path, inputs: &str) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let stamp: Stamp = serde_json::from_slice(&fs::read(stamp_path).ok()?).ok()?;
    (stamp.inputs == inputs).then_some(stamp.digest)
}

/// Writes `path` through a temporary file in `dir` renamed into place, mode 0644.
fn write_file_atomically(dir: &Path, path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming a temporary file to {}", path.display()))?;
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(data);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::images::test_support::{build, image};

    #[test]
    fn builds_are_reproducible() {
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (build(first.path()), build(second.path()));
        assert_eq!(a.len(), 2);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.digest, b.digest, "{}", a.name);
            assert_ne!(a.path, b.path);
            assert!(
                fs::read(&a.path).unwrap() == fs::read(&b.path).unwrap(),
                "{}",
                a.name
            );
        }
        assert_ne!(image(&a, PAUSE_IMAGE).digest, image(&a, TEST_IMAGE).digest);
    }
    #[test]
    fn unchanged_inputs_skip_the_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let first = build(dir.path());
        let pause = image(&first, PAUSE_IMAGE);
        // A skipped build leaves the file alone, so a marker written into it survives.
        fs::write(&pause.path, b"marker").unwrap();
        let second = build(dir.path());
        assert_eq!(image(&second, PAUSE_IMAGE).digest, pause.digest);
        assert_eq!(fs::read(&pause.path).unwrap(), b"marker");
        // A changed input hash (here: a stale stamp) rebuilds.
        let stamp = dir.path().join("pause.tar.stamp");
        let stale = serde_json::to_vec(&Stamp {
            inputs: "old".into(),
            digest: "x".into(),
        });
        fs::write(&stamp, stale.unwrap()).unwrap();
        let third = build(dir.path());
        assert_eq!(image(&third, PAUSE_IMAGE).digest, pause.digest);
        assert_ne!(fs::read(&pause.path).unwrap(), b"marker");
        // `force` rebuilds too.
        fs::write(&pause.path, b"marker").unwrap();
        let forced = build_images(dir.path(), Path::new(HOST_BUSYBOX), true).unwrap();
        assert_eq!(image(&forced, PAUSE_IMAGE).digest, pause.digest);
        assert_ne!(fs::read(&pause.path).unwrap(), b"marker");
    }
    #[test]
    fn missing_busybox_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-busybox");
        let err = build_images(dir.path(), &missing, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading busybox binary"),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("no-busybox"), "{err:#}");
    }
}
