//! Reproducible tar archives: entries in path order with a fixed mtime, uid/gid 0, no user or
//! group names and the mode each entry asks for.

use std::collections::BTreeMap;
use std::io;

use anyhow::Context;

/// The mtime of every entry.
pub(super) const MTIME: u64 = 0;

/// One entry of a tar archive written here.
pub(super) enum Node<'a> {
    Dir { mode: u32 },
    File { mode: u32, data: &'a [u8] },
    Symlink { target: &'a str },
}

/// Writes `nodes` as a ustar archive in path order with fixed metadata.
pub(super) fn write_tar(nodes: &BTreeMap<String, Node<'_>>) -> anyhow::Result<Vec<u8>> {
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
