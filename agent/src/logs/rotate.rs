//! The file side of a rotation, without the runtime: cleanup, retention, compression and the
//! rename of the live file. The caller asks the runtime to reopen the log afterwards.
use std::{
    ffi::OsString,
    fs, io,
    os::unix::{
        ffi::OsStrExt,
        fs::{OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use flate2::{Compression, write::GzEncoder};
use k8s_openapi::jiff::{Timestamp, tz::TimeZone};

use super::{LogError, LogRotation};

/// Suffix of a compressed rotated log.
const COMPRESS_SUFFIX: &str = ".gz";
/// Suffix of a file being compressed.
const TMP_SUFFIX: &str = ".tmp";

/// What [`rotate_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The log does not exist; the runtime should reopen it.
    Missing,
    /// The log is smaller than `containerLogMaxSize`; nothing was touched.
    UnderSize { size: u64 },
    /// The rotated name for this second is taken (two rotations in one second, or the clock went
    /// back); nothing was touched, the next check rotates.
    NameTaken { rotated: PathBuf },
    /// The live log of `size` bytes is now `rotated`; the runtime must reopen the log, or the
    /// caller renames it back with [`restore_rotated`]. `compressed` are the new `.gz` files and
    /// `removed` the files deleted (leftovers and files beyond `containerLogMaxFiles`).
    Rotated {
        size: u64,
        rotated: PathBuf,
        compressed: Vec<PathBuf>,
        removed: Vec<PathBuf>,
    },
}

/// Rotates `log` if it has at least `settings.max_size()` bytes: removes leftovers of interrupted
/// rotations and the oldest rotated files beyond `max_files - 2`, gzips the others, and renames
/// the live file to `<log>.<timestamp of now>` (see the module doc of `logs`).
pub fn rotate_file(
    log: &Path,
    settings: &LogRotation,
    now: SystemTime,
) -> Result<RotationOutcome, LogError> {
    let size = match fs::metadata(log) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(RotationOutcome::Missing);
        }
        Err(source) => {
            return Err(LogError::Stat {
                path: log.to_owned(),
                source,
            });
        }
    };
    if size < settings.max_size() {
        return Ok(RotationOutcome::UnderSize { size });
    }
    let rotated = with_suffix(log, &format!(".{}", rotation_timestamp(now)));
    if exists(&rotated)? || exists(&with_suffix(&rotated, COMPRESS_SUFFIX))? {
        return Ok(RotationOutcome::NameTaken { rotated });
    }

    let (in_use, unused) = split_unused(&rotated_files(log)?);
    let mut removed = Vec::new();
    for path in unused {
        remove(&path)?;
        removed.push(path);
    }
    // The runtime's new file and the one rotated now come on top of the files kept.
    let keep = settings.max_files().saturating_sub(2);
    let (old, kept) = in_use.split_at(in_use.len().saturating_sub(keep));
    // Oldest first, so a reader of an older file loses it last.
    for path in old {
        remove(path)?;
        removed.push(path.clone());
    }
    let mut compressed = Vec::new();
    for path in kept.iter().filter(|p| !has_suffix(p, COMPRESS_SUFFIX)) {
        compressed.push(compress(path)?);
    }
    rename(log, &rotated)?;
    Ok(RotationOutcome::Rotated {
        size,
        rotated,
        compressed,
        removed,
    })
}

/// Renames a rotated log back to `log`, after the runtime failed to reopen it.
pub fn restore_rotated(log: &Path, rotated: &Path) -> Result<(), LogError> {
    rename(rotated, log)
}

/// Upstream's rotated-name timestamp, `20060102-150405` in Go's notation, here in UTC.
#[must_use]
pub fn rotation_timestamp(now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    });
    let time =
        TimeZone::UTC.to_datetime(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH));
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// Every `<log>.*` file, sorted by name: oldest first, as timestamps sort by age.
fn rotated_files(log: &Path) -> Result<Vec<PathBuf>, LogError> {
    let list_error = |source| LogError::List {
        path: log.to_owned(),
        source,
    };
    let Some(name) = log.file_name() else {
        return Ok(Vec::new());
    };
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(b'.');
    let dir = match log.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if !entry.file_name().as_bytes().starts_with(&prefix) {
            continue;
        }
        // A directory is nothing a rotation made; leave it alone.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Splits rotated files into those in use and leftovers of an interrupted rotation: temporary
/// files, and uncompressed files whose `.gz` exists (compressed but not yet removed).
fn split_unused(files: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let compressed_twin = |path: &Path| {
        let twin = with_suffix(path, COMPRESS_SUFFIX);
        files.binary_search(&twin).is_ok()
    };
    let (unused, in_use): (Vec<PathBuf>, Vec<PathBuf>) = files.iter().cloned().partition(|path| {
        has_suffix(path, TMP_SUFFIX)
            || (!has_suffix(path, COMPRESS_SUFFIX) && compressed_twin(path))
    });
    (in_use, unused)
}

/// Gzips `path` into `<path>.gz` through `<path>.tmp`, then removes `path`.
fn compress(path: &Path) -> Result<PathBuf, LogError> {
    let tmp = with_suffix(path, TMP_SUFFIX);
    let gz = with_suffix(path, COMPRESS_SUFFIX);
    let written = write_gzip(path, &tmp).and_then(|()| fs::rename(&tmp, &gz));
    if let Err(source) = written {
        // Best effort: a leftover is removed by the next rotation anyway.
        let _ = fs::remove_file(&tmp);
        return Err(LogError::Compress {
            path: path.to_owned(),
            source,
        });
    }
    remove(path)?;
    Ok(gz)
}

/// Writes `from` gzipped to `to`, with `from`'s permissions, and syncs it.
fn write_gzip(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = fs::File::open(from)?;
    let mode = input.metadata()?.permissions().mode() & 0o777;
    let output = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(to)?;
    let mut encoder = GzEncoder::new(output, Compression::default());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()
}

/// Removes `path`; one already gone is fine.
fn remove(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(LogError::Remove {
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    fs::rename(from, to).map_err(|source| LogError::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

fn exists(path: &Path) -> Result<bool, LogError> {
    path.try_exists().map_err(|source| LogError::Stat {
        path: path.to_owned(),
        source,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn has_suffix(path: &Path, suffix: &str) -> bool {
    path.as_os_str().as_bytes().ends_with(suffix.as_bytes())
}
