//! File helpers the fixture's modules share: writing and removing with the path in the error,
//! cross-process lock files, and reading containerd's log.
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::Context;

pub(super) fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

pub(super) fn remove_file_if_exists(path: &Path) -> anyhow::Result<()> {
    gone_is_fine(path, fs::remove_file(path))
}

pub(super) fn remove_dir_all_if_exists(path: &Path) -> anyhow::Result<()> {
    gone_is_fine(path, fs::remove_dir_all(path))
}

/// The outcome of removing `path`, where "not found" counts as success.
fn gone_is_fine(path: &Path, removed: io::Result<()>) -> anyhow::Result<()> {
    match removed {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Opens (creating it) and exclusively locks `path`; the lock lasts as long as the file.
pub(super) fn lock_file(path: &Path) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// What was appended to the file at `path` after `offset` (empty if it cannot be read).
pub(super) fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// The last `lines` lines of the file at `path`.
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let text = log_since(path, 0);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
