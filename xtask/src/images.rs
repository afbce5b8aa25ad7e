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
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Applets linked into `/bin` when the host busybox provides them.
const WANTED_APPLETS: &[&str] = &[
    "sh",
    "sleep",
    "httpd",
    "nc",
    "dd",
    "yes",
    "cat",
    "echo",
    "ls",
    "mkdir",
    "rm",
    "touch",
    "wc",
    "head",
    "tail",
    "grep",
    "sed",
    "awk",
    "env",
    "id",
    "hostname",
    "ps",
    "kill",
    "true",
    "false",
    "date",
    "seq",
    "printf",
    "test",
    "[",
    "mount",
    "df",
    "du",
    "ip",
    "ifconfig",
    "ping",
    "wget",
    "nslookup",
    "cut",
    "tr",
    "sort",
    "uniq",
    "tee",
    "sync",
    "stat",
    "find",
    "xargs",
    "timeout",
    "nproc",
    "md5sum",
    "sha256sum",
    "dmesg",
    "top",
    "free",
    "uptime",
    "watch",
    "which",
    "basename",
    "dirname",
    "readlink",
    "realpath",
    "chmod",
    "chown",
    "ln",
    "cp",
    "mv",
    "usleep",
    "hexdump",
    "od",
    "base64",
    "zcat",
    "gzip",
];

/// Applets without which the images are useless (the pause entrypoint and most tests).
const REQUIRED_APPLETS: &[&str] = &["sh", "sleep"];

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Fixed timestamps: tar mtimes and the config's `created`.
const MTIME: u64 = 0;
const CREATED: &str = "1970-01-01T00:00:00Z";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Recorded next to each tarball to skip unchanged rebuilds.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    inputs: String,
    digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: String,
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageConfig {
    created: String,
    architecture: String,
    os: String,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    working_dir: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct History {
    created: String,
    created_by: String,
}

/// The uncompressed busybox layer shared by both images.
struct Layer {
    tar: Vec<u8>,
    /// `sha256:<hex>`; also the diff id, since the layer is not compressed.
    digest: String,
}

/// One entry of a tar archive written here.
enum Node<'a> {
    Dir { mode: u32 },
    File { mode: u32, data: &'a [u8] },
    Symlink { target: &'a str },
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

/// The applets from [`WANTED_APPLETS`] that `listing` (the output of `busybox --list`) reports.
fn select_applets(listing: &str, busybox: &Path) -> anyhow::Result<Vec<&'static str>> {
    let available: BTreeSet<&str> = listing.lines().map(str::trim).collect();
    let missing: Vec<&str> = REQUIRED_APPLETS
        .iter()
        .copied()
        .filter(|applet| !available.contains(applet))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} --list does not report the applet(s) {}, which the test images need",
            busybox.display(),
            missing.join(", ")
        );
    }
    Ok(WANTED_APPLETS
        .iter()
        .copied()
        .filter(|applet| available.contains(applet))
        .collect())
}

fn list_applets(busybox: &Path) -> anyhow::Result<Vec<&'static str>> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !output.status.success() {
        bail!(
            "{} --list failed ({}): {}",
            busybox.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let listing = String::from_utf8(output.stdout)
        .with_context(|| format!("{} --list printed non-utf-8 output", busybox.display()))?;
    select_applets(&listing, busybox)
}

fn build_layer(busybox: &Path, binary: &[u8]) -> anyhow::Result<Layer> {
    let applets = list_applets(busybox)?;
    let mut nodes: BTreeMap<String, Node<'_>> = BTreeMap::new();
    for dir in ["bin", "dev", "etc", "proc", "root", "sys", "var", "var/www"] {
        let mode = if dir == "root" { 0o700 } else { 0o755 };
        nodes.insert(dir.to_owned(), Node::Dir { mode });
    }
    nodes.insert("tmp".to_owned(), Node::Dir { mode: 0o1777 });
    nodes.insert(
        "bin/busybox".to_owned(),
        Node::File {
            mode: 0o755,
            data: binary,
        },
    );
    for applet in applets {
        nodes.insert(format!("bin/{applet}"), Node::Symlink { target: "busybox" });
    }
    nodes.insert(
        "etc/passwd".to_owned(),
        Node::File {
            mode: 0o644,
            data: PASSWD.as_bytes(),
        },
    );
    nodes.insert(
        "etc/group".to_owned(),
        Node::File {
            mode: 0o644,
            data: GROUP.as_bytes(),
        },
    );
    let tar = write_tar(&nodes).context("writing the busybox layer")?;
    let digest = format!("sha256:{}", sha256_hex(&tar));
    Ok(Layer { tar, digest })
}

/// Writes `nodes` as a ustar archive in path order with fixed metadata.
fn write_tar(nodes: &BTreeMap<String, Node<'_>>) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, node) in nodes {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        let appended = match node {
            Node::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, path, io::empty())
            }
            Node::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data)
            }
            Node::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)
            }
        };
        appended.with_context(|| format!("adding {path} to a tar archive"))?;
    }
    builder.into_inner().context("finishing a tar archive")
}

/// The OCI image-layout tarball for `spec` and its manifest digest.
fn image_layout(spec: &ImageSpec, layer: &Layer) -> anyhow::Result<(Vec<u8>, String)> {
    let platform = Platform {
        architecture: oci_architecture()?.to_owned(),
        os: "linux".to_owned(),
    };
    let to_strings = |args: &[&str]| args.iter().map(|&arg| arg.to_owned()).collect::<Vec<_>>();
    let config = ImageConfig {
        created: CREATED.to_owned(),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        config: RunConfig {
            env: to_strings(spec.env),
            entrypoint: spec.entrypoint.map(to_strings),
            cmd: spec.cmd.map(to_strings),
            working_dir: "/".to_owned(),
        },
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids: vec![layer.digest.clone()],
        },
        history: vec![History {
            created: CREATED.to_owned(),
            created_by: format!("cargo xtask images ({FORMAT_VERSION})"),
        }],
    };
    let config_json = serde_json::to_vec(&config).context("serialising image config")?;
    let config_digest = format!("sha256:{}", sha256_hex(&config_json));

    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.to_owned(),
        config: descriptor(MEDIA_CONFIG, &config_digest, config_json.len()),
        layers: vec![descriptor(MEDIA_LAYER, &layer.digest, layer.tar.len())],
    };
    let manifest_json = serde_json::to_vec(&manifest).context("serialising image manifest")?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest_json));

    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &manifest_digest, manifest_json.len());
    manifest_descriptor.platform = Some(platform);
    manifest_descriptor.annotations = BTreeMap::from([
        (ANNOTATION_IMAGE_NAME.to_owned(), spec.name.to_owned()),
        (
            ANNOTATION_REF_NAME.to_owned(),
            tag_of(spec.name)?.to_owned(),
        ),
    ]);
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_INDEX.to_owned(),
        manifests: vec![manifest_descriptor],
    };
    let index_json = serde_json::to_vec(&index).context("serialising image index")?;

    let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let nodes = BTreeMap::from([
        ("blobs".to_owned(), Node::Dir { mode: 0o755 }),
        ("blobs/sha256".to_owned(), Node::Dir { mode: 0o755 }),
        (
            blob_path(&layer.digest),
            Node::File {
                mode: 0o644,
                data: &layer.tar,
            },
        ),
        (
            blob_path(&config_digest),
            Node::File {
                mode: 0o644,
                data: &config_json,
            },
        ),
        (
            blob_path(&manifest_digest),
            Node::File {
                mode: 0o644,
                data: &manifest_json,
            },
        ),
        (
            "index.json".to_owned(),
            Node::File {
                mode: 0o644,
                data: &index_json,
            },
        ),
        (
            "oci-layout".to_owned(),
            Node::File {
                mode: 0o644,
                data: OCI_LAYOUT.as_bytes(),
            },
        ),
    ]);
    let tarball =
        write_tar(&nodes).with_context(|| format!("writing the image layout of {}", spec.name))?;
    Ok((tarball, manifest_digest))
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
        size: size as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// The tag of an image name (`registry/repo:tag`).
fn tag_of(name: &str) -> anyhow::Result<&str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => Ok(tag),
        _ => bail!("image name {name} has no tag"),
    }
}

/// The OCI architecture of the host (the busybox copied into the images is the host's).
fn oci_architecture() -> anyhow::Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        "riscv64" => Ok("riscv64"),
        "s390x" => Ok("s390x"),
        "powerpc64" => Ok("ppc64le"),
        other => bail!("no oci architecture name known for host architecture {other}"),
    }
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

    /// One entry read back from a tar archive.
    #[derive(Debug)]
    struct Entry {
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        data: Vec<u8>,
    }

    /// Entries of `tar` in archive order.
    fn read_tar(tar: &[u8]) -> Vec<(String, Entry)> {
        let mut archive = tar::Archive::new(tar);
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header();
            let kind = header.entry_type();
            let mode = header.mode().unwrap();
            let uid = header.uid().unwrap();
            let gid = header.gid().unwrap();
            let mtime = header.mtime().unwrap();
            assert!(
                header.username_bytes().is_none_or(<[u8]>::is_empty),
                "{path} has a user name"
            );
            assert!(
                header.groupname_bytes().is_none_or(<[u8]>::is_empty),
                "{path} has a group"
            );
            let link = entry
                .link_name()
                .unwrap()
                .map(|link| link.to_string_lossy().into_owned());
            let mut data = Vec::new();
            io::Read::read_to_end(&mut entry, &mut data).unwrap();
            entries.push((
                path,
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    link,
                    data,
                },
            ));
        }
        entries
    }

    fn build(dir: &Path) -> Vec<BuiltImage> {
        build_images(dir, Path::new(HOST_BUSYBOX), false).unwrap()
    }

    fn image<'a>(images: &'a [BuiltImage], name: &str) -> &'a BuiltImage {
        images.iter().find(|image| image.name == name).unwrap()
    }

    fn blob<'a>(layout: &'a BTreeMap<String, Entry>, digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").unwrap();
        &layout[&format!("blobs/sha256/{hex}")].data
    }

    struct Parsed {
        layout: BTreeMap<String, Entry>,
        index: Index,
        manifest: Manifest,
        config: ImageConfig,
    }

    fn parse(image: &BuiltImage) -> Parsed {
        let layout: BTreeMap<String, Entry> = read_tar(&fs::read(&image.path).unwrap())
            .into_iter()
            .collect();
        let index: Index = serde_json::from_slice(&layout["index.json"].data).unwrap();
        let manifest: Manifest =
            serde_json::from_slice(blob(&layout, &index.manifests[0].digest)).unwrap();
        let config: ImageConfig =
            serde_json::from_slice(blob(&layout, &manifest.config.digest)).unwrap();
        Parsed {
            layout,
            index,
            manifest,
            config,
        }
    }

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
    fn layout_is_valid_oci() {
        let dir = tempfile::tempdir().unwrap();
        for built in build(dir.path()) {
            let Parsed {
                layout,
                index,
                manifest,
                config,
            } = parse(&built);
            let names: Vec<&String> = layout.keys().collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert_eq!(
                layout["oci-layout"].data,
                br#"{"imageLayoutVersion":"1.0.0"}"#
            );

            let blobs: Vec<(&String, &Entry)> = layout
                .iter()
                .filter(|(path, _)| path.starts_with("blobs/sha256/"))
                .collect();
            assert_eq!(blobs.len(), 3, "{}: manifest, config and layer", built.name);
            for (path, entry) in blobs {
                assert_eq!(entry.kind, tar::EntryType::Regular);
                assert_eq!(
                    path.trim_start_matches("blobs/sha256/"),
                    sha256_hex(&entry.data)
                );
            }

            assert_eq!(index.schema_version, 2);
            assert_eq!(index.manifests.len(), 1);
            let descriptor = &index.manifests[0];
            assert_eq!(descriptor.media_type, MEDIA_MANIFEST);
            assert_eq!(descriptor.digest, built.digest);
            assert_eq!(descriptor.annotations[ANNOTATION_IMAGE_NAME], built.name);
            assert_eq!(descriptor.annotations[ANNOTATION_REF_NAME], "1");
            assert_eq!(descriptor.size, blob(&layout, &built.digest).len() as u64);

            assert_eq!(manifest.schema_version, 2);
            assert_eq!(manifest.media_type, MEDIA_MANIFEST);
            assert_eq!(manifest.config.media_type, MEDIA_CONFIG);
            assert_eq!(manifest.layers.len(), 1);
            let layer = &manifest.layers[0];
            assert_eq!(layer.media_type, MEDIA_LAYER);
            assert_eq!(layer.size, blob(&layout, &layer.digest).len() as u64);
            assert_eq!(config.rootfs.kind, "layers");
            assert_eq!(config.rootfs.diff_ids, vec![layer.digest.clone()]);
            assert_eq!(config.architecture, oci_architecture().unwrap());
            assert_eq!(config.os, "linux");
            assert_eq!(config.config.env, vec!["PATH=/bin".to_owned()]);
        }
    }

    #[test]
    fn image_commands() {
        let dir = tempfile::tempdir().unwrap();
        let images = build(dir.path());
        let test = parse(image(&images, TEST_IMAGE)).config.config;
        assert_eq!(test.entrypoint, None);
        assert_eq!(test.cmd, Some(vec!["/bin/sh".to_owned()]));
        let pause = parse(image(&images, PAUSE_IMAGE)).config.config;
        let entrypoint = pause.entrypoint.unwrap();
        assert_eq!(entrypoint[..2], ["/bin/sh".to_owned(), "-c".to_owned()]);
        assert!(entrypoint[2].contains("trap 'exit 0' TERM INT"));
        assert_eq!(pause.cmd, None);
    }

    #[test]
    fn layer_holds_busybox_and_applets() {
        let dir = tempfile::tempdir().unwrap();
        let images = build(dir.path());
        let Parsed {
            layout, manifest, ..
        } = parse(image(&images, TEST_IMAGE));
        let layer = read_tar(blob(&layout, &manifest.layers[0].digest));
        let names: Vec<&String> = layer.iter().map(|(name, _)| name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "layer entries are sorted");
        for (name, entry) in &layer {
            assert_eq!((entry.uid, entry.gid, entry.mtime), (0, 0, MTIME), "{name}");
        }
        let layer: BTreeMap<String, Entry> = layer.into_iter().collect();

        let busybox = &layer["bin/busybox"];
        assert_eq!(busybox.kind, tar::EntryType::Regular);
        assert_eq!(busybox.mode, 0o755);
        assert!(busybox.data == fs::read(HOST_BUSYBOX).unwrap());
        for applet in ["sh", "sleep"] {
            let link = &layer[&format!("bin/{applet}")];
            assert_eq!(link.kind, tar::EntryType::Symlink, "{applet}");
            assert_eq!(link.link.as_deref(), Some("busybox"), "{applet}");
        }
        assert_eq!(layer["tmp"].kind, tar::EntryType::Directory);
        assert_eq!(layer["tmp"].mode, 0o1777);
        for dir in ["etc", "proc", "sys", "dev", "var/www", "root"] {
            assert_eq!(layer[dir].kind, tar::EntryType::Directory, "{dir}");
        }
        let passwd = String::from_utf8(layer["etc/passwd"].data.clone()).unwrap();
        assert!(passwd.starts_with("root:x:0:0:"));
        assert!(passwd.contains("\nnobody:x:65534:65534:"));
        assert!(layer["etc/group"].data.starts_with(b"root:x:0:"));
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
    fn applet_selection() {
        let busybox = Path::new("/x/busybox");
        let picked = select_applets("[\n[[\nsh\nsleep\nyes\nvi\n", busybox).unwrap();
        assert_eq!(picked, ["sh", "sleep", "yes", "["]);
        let err = select_applets("sh\nyes\n", busybox)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/busybox --list") && err.contains("sleep"),
            "{err}"
        );
        assert!(!err.contains("sh,"), "{err}");
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

    #[test]
    fn tags() {
        assert_eq!(tag_of(PAUSE_IMAGE).unwrap(), "1");
        assert_eq!(tag_of("localhost:5000/a/b:v2").unwrap(), "v2");
        assert!(tag_of("localhost:5000/a/b").is_err());
    }
}
