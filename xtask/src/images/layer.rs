//! The uncompressed busybox layer both images share: the host's busybox, symlinks for the
//! applets it provides, the usual top-level directories and minimal `/etc/passwd` and
//! `/etc/group`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::archive::{Node, write_tar};
use super::sha256_hex;

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

/// The uncompressed busybox layer shared by both images.
pub(super) struct Layer {
    pub(super) tar: Vec<u8>,
    /// `sha256:<hex>`; also the diff id, since the layer is not compressed.
    pub(super) digest: String,
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

pub(super) fn build_layer(busybox: &Path, binary: &[u8]) -> anyhow::Result<Layer> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::fs;

    use super::*;
    use crate::images::archive::MTIME;
    use crate::images::test_support::{Entry, Parsed, blob, build, image, parse, read_tar};
    use crate::images::{HOST_BUSYBOX, TEST_IMAGE};

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
}
