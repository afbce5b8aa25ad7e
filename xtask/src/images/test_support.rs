//! Test helpers shared by the images tests: builds into a directory and reads the tarballs
//! back (tar entries, index, manifest, config).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use super::oci::{ImageConfig, Index, Manifest};
use super::{BuiltImage, HOST_BUSYBOX, build_images};

/// One entry read back from a tar archive.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) kind: tar::EntryType,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    pub(super) link: Option<String>,
    pub(super) data: Vec<u8>,
}

/// Entries of `tar` in archive order.
pub(super) fn read_tar(tar: &[u8]) -> Vec<(String, Entry)> {
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

pub(super) fn build(dir: &Path) -> Vec<BuiltImage> {
    build_images(dir, Path::new(HOST_BUSYBOX), false).unwrap()
}

pub(super) fn image<'a>(images: &'a [BuiltImage], name: &str) -> &'a BuiltImage {
    images.iter().find(|image| image.name == name).unwrap()
}

pub(super) fn blob<'a>(layout: &'a BTreeMap<String, Entry>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    &layout[&format!("blobs/sha256/{hex}")].data
}

pub(super) struct Parsed {
    pub(super) layout: BTreeMap<String, Entry>,
    pub(super) index: Index,
    pub(super) manifest: Manifest,
    pub(super) config: ImageConfig,
}

pub(super) fn parse(image: &BuiltImage) -> Parsed {
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
