//! The static pod source: the pods of `staticPodPath`, read, watched and published as full
//! snapshots.
//!
//! Upstream reference: `pkg/kubelet/config/file.go` and `file_linux.go` (reading and watching),
//! `common.go` (decoding and defaulting, see [`super::manifest`] and [`super::defaults`]) and
//! `config.go` (the `config.seen` annotation, recorded when a UID is first seen).
//!
//! What follows upstream:
//! - The path is a directory of manifests, one pod per file, read in name order and not recursed
//!   into, where names starting with `.` are ignored (editors' swap and temporary files); or a
//!   single manifest file. A path that does not exist gives an empty set of pods.
//! - A file that cannot be read, decoded or validated is left out and reported; the other files'
//!   pods are unaffected. Two files giving the same namespace/name or UID: the first in name
//!   order wins, the later one is reported (upstream's `filterInvalidPods` keeps one of them).
//! - A directory file that turns broken after being valid loses its pod. Upstream's watch
//!   handler keeps the old pod when a changed file fails to parse, but its periodic full relist
//!   (every `fileCheckFrequency`, 20 s) replaces the set with the files that parse, which drops
//!   it; we reach that state at once since every change is a full re-read. In single-file mode
//!   upstream's relist returns early on a parse error without replacing the set, so the last
//!   good pod keeps running; we do the same and report the error alongside it.
//! - A static pod path that exists but cannot be listed (permissions, I/O) keeps the previous
//!   pods and reports the error, as upstream's relist returns without touching its store.
//!
//! What differs, and why:
//! - No periodic relist. Changes arrive from inotify: the directory itself, plus the nearest
//!   existing parent, so that the path appearing, disappearing or being replaced (renamed into
//!   place, a symlink swapped) is seen at once. A path that does not exist yet is waited for with
//!   an inotify watch on its nearest existing ancestor rather than upstream's retry every second:
//!   it is event-driven, needs no timer and logs once. Only when inotify itself fails (no
//!   instances or watches left, no permission on the parent) do we fall back to upstream's
//!   retry with backoff (1 s doubling to 20 s), logging each failure.
//! - Bursts of events (an editor writing a temporary file then renaming it) are coalesced: a
//!   re-read happens [`DEBOUNCE`] after the last event, and at most [`MAX_COALESCE`] after the
//!   first one, then the whole path is re-read and a snapshot published if it differs from the
//!   last one.

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::defaults::CONFIG_SEEN_ANNOTATION;
pub use super::manifest::ManifestError;
use super::manifest::{MAX_MANIFEST_BYTES, parse_manifest};
use super::watch::{Burst, Watcher, is_hidden};
pub use super::watch::{DEBOUNCE, MAX_COALESCE};

/// First and longest wait between attempts when inotify cannot be set up (upstream's
/// `retryPeriod` and `maxRetryPeriod`).
const RETRY_INITIAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(20);

/// The full state of the static pod path at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The valid static pods, sorted by UID.
    pub pods: Vec<Pod>,
    /// What is wrong with the files that gave no pod, sorted by file.
    pub errors: Vec<ManifestError>,
    /// The path itself could not be listed: `pods` are the last ones read, not a complete list.
    pub unreadable: bool,
}

/// Reads and watches `staticPodPath` for one node.
#[derive(Debug, Clone)]
pub struct StaticPodSource {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    node_name: String,
    errors_total: Arc<AtomicU64>,
    state: Mutex<ScanState>,
}

/// What one scan remembers for the next.
#[derive(Debug, Default)]
struct ScanState {
    /// The `config.seen` value of each UID in the last snapshot.
    seen: HashMap<String, String>,
    /// Each broken file of the last scan and a fingerprint of what was found broken.
    broken: HashMap<PathBuf, u64>,
    /// Single-file mode: the last pod the file gave, kept while the file fails to parse.
    last_single: Option<Pod>,
    /// The pods of the last snapshot, kept when the path itself cannot be listed.
    last_pods: Vec<Pod>,
}

/// What the static pod path holds.
enum Listing {
    Missing,
    Unreadable(ManifestError),
    Dir(Vec<PathBuf>),
    File(PathBuf),
}

impl StaticPodSource {
    /// A source for `path` (a directory or a file) on node `node_name`.
    ///
    /// The path is used as given (it is part of each pod's UID) except that repeated and trailing
    /// separators and `.` components are dropped, as upstream trims and joins it.
    #[must_use]
    pub fn new(path: PathBuf, node_name: String) -> Self {
        // PathBuf's == compares components, which ignores exactly what is being dropped.
        let normalized: PathBuf = path.components().collect();
        let path = if normalized.as_os_str() == path.as_os_str() {
            path
        } else {
            normalized
        };
        Self {
            inner: Arc::new(Inner {
                path,
                node_name,
                errors_total: Arc::new(AtomicU64::new(0)),
                state: Mutex::new(ScanState::default()),
            }),
        }
    }

    /// The static pod path as this source reads it.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads the path now and returns its state.
    ///
    /// Blocking file I/O: from async code call it through `spawn_blocking`.
    #[must_use]
    pub fn scan(&self) -> Snapshot {
        self.inner.scan()
    }

    /// How many times a manifest has been found broken.
    ///
    /// A file counts once each time it is found broken with new content: a new broken file, or a
    /// broken file rewritten and still broken. Re-reading an unchanged broken file does not
    /// count again, and neither does a file that stays broken while other files change.
    #[must_use]
    pub fn manifest_errors_total(&self) -> u64 {
        self.inner.errors_total.load(Ordering::Relaxed)
    }

    /// The counter behind [`Self::manifest_errors_total`], for a metrics exporter to keep after
    /// [`Self::run`] has taken the source.
    #[must_use]
    pub fn manifest_errors_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.inner.errors_total)
    }

    /// Publishes the initial snapshot on `tx` (always, even if it equals the channel's current
    /// value), then a new one after each change that alters the pods or the errors. Returns when
    /// `cancel` fires or every receiver of `tx` is gone.
    pub async fn run(self, tx: watch::Sender<Snapshot>, cancel: CancellationToken) {
        let inner = self.inner;
        let mut first = true;
        let mut retry = RETRY_INITIAL;
        loop {
            // Arm before reading, so a change between the two is not lost.
            let watcher = match Watcher::arm(&inner.path) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::warn!(
                        path = %inner.path.display(),
                        %error,
                        retry_in = ?retry,
                        "cannot watch the static pod path, retrying"
                    );
                    None
                }
            };
            publish(&inner, &tx, &mut first).await;
            if let Some(mut watcher) = watcher {
                retry = RETRY_INITIAL;
                loop {
                    let burst = tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tx.closed() => return,
                        burst = watcher.next_burst() => burst,
                    };
                    match burst {
                        Burst::Rescan => publish(&inner, &tx, &mut first).await,
                        Burst::Rearm => break,
                        Burst::Failed => {
                            if !wait_to_retry(&mut retry, &tx, &cancel).await {
                                return;
                            }
                            break;
                        }
                    }
                }
            } else if !wait_to_retry(&mut retry, &tx, &cancel).await {
                return;
            }
        }
    }
}

/// Sleeps `retry`, then doubles it up to [`RETRY_MAX`]; false if the run should end instead.
async fn wait_to_retry(
    retry: &mut Duration,
    tx: &watch::Sender<Snapshot>,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        () = cancel.cancelled() => return false,
        () = tx.closed() => return false,
        () = tokio::time::sleep(*retry) => {}
    }
    *retry = (*retry * 2).min(RETRY_MAX);
    true
}

/// Sets each pod's `config.seen` annotation: the time its UID was first seen, kept for as long as
/// it stays; `seen_by_uid` becomes this scan's.
fn annotate_seen(seen_by_uid: &mut HashMap<String, String>, pods: &mut [Pod]) {
    let now = seen_timestamp();
    for pod in pods.iter_mut() {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let seen = seen_by_uid
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| now.clone());
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CONFIG_SEEN_ANNOTATION.to_owned(), seen);
    }
    *seen_by_uid = pods
        .iter()
        .filter_map(|pod| {
            let uid = pod.metadata.uid.clone()?;
            let seen = pod
                .metadata
                .annotations
                .as_ref()?
                .get(CONFIG_SEEN_ANNOTATION)?;
            Some((uid, seen.clone()))
        })
        .collect();
}

impl Inner {
    fn scan(&self) -> Snapshot {
        let listing = self.list();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pods = Vec::new();
        let mut errors = Vec::new();
        let mut broken = Vec::new();
        let mut single_ok = false;
        let unreadable = matches!(listing, Listing::Unreadable(_));
        match listing {
            Listing::Missing => {
                tracing::debug!(path = %self.path.display(), "static pod path does not exist");
                state.last_single = None;
            }
            Listing::Unreadable(error) => {
                tracing::warn!(%error, "cannot read the static pod path, keeping its pods");
                errors.push(error);
                pods.clone_from(&state.last_pods);
            }
            Listing::Dir(files) => {
                state.last_single = None;
                let mut taken: HashMap<(String, String), PathBuf> = HashMap::new();
                let mut uids: HashMap<String, PathBuf> = HashMap::new();
                for file in files {
                    let Some(result) = self.read_manifest(&file) else {
                        continue;
                    };
                    match result {
                        Ok((pod, fingerprint)) => {
                            match duplicate(&pod, &file, &mut taken, &mut uids) {
                                None => pods.push(pod),
                                Some(error) => broken.push((file, fingerprint, vec![error])),
                            }
                        }
                        Err((fingerprint, errs)) => broken.push((file, fingerprint, errs)),
                    }
                }
            }
            Listing::File(file) => match self.read_manifest(&file) {
                None => state.last_single = None,
                Some(Ok((pod, _))) => {
                    single_ok = true;
                    pods.push(pod);
                }
                Some(Err((fingerprint, errs))) => {
                    pods.extend(state.last_single.clone());
                    broken.push((file, fingerprint, errs));
                }
            },
        }

        // Count and log each newly found breakage once; repeats of it only at debug level.
        let mut now_broken = HashMap::new();
        for (file, fingerprint, errs) in broken {
            let new = state.broken.get(&file) != Some(&fingerprint);
            if new {
                self.errors_total.fetch_add(1, Ordering::Relaxed);
            }
            for error in &errs {
                if new {
                    tracing::warn!(
                        file = %error.path.display(),
                        field = error.field.as_deref().unwrap_or(""),
                        %error,
                        "ignoring broken static pod manifest"
                    );
                } else {
                    tracing::debug!(%error, "static pod manifest is still broken");
                }
            }
            errors.extend(errs);
            now_broken.insert(file, fingerprint);
        }
        state.broken = now_broken;

        annotate_seen(&mut state.seen, &mut pods);
        if single_ok {
            state.last_single = pods.first().cloned();
        }

        pods.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        errors.sort_by(|a, b| a.path.cmp(&b.path));
        state.last_pods.clone_from(&pods);
        Snapshot {
            pods,
            errors,
            unreadable,
        }
    }

    fn list(&self) -> Listing {
        let unreadable =
            |message: String| Listing::Unreadable(ManifestError::new(&self.path, None, message));
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Listing::Missing,
            Err(e) => return unreadable(format!("cannot read static pod path: {e}")),
        };
        if metadata.is_file() {
            return Listing::File(self.path.clone());
        }
        if !metadata.is_dir() {
            return unreadable("static pod path is not a directory or regular file".to_owned());
        }
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Listing::Missing,
            Err(e) => return unreadable(format!("cannot list static pod path: {e}")),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| match entry {
                Ok(entry) => Some(entry.file_name()),
                Err(error) => {
                    tracing::debug!(path = %self.path.display(), %error, "skipping unreadable entry");
                    None
                }
            })
            .filter(|name| !is_hidden(name))
            .map(|name| self.path.join(name))
            .collect();
        files.sort();
        Listing::Dir(files)
    }

    /// One manifest of the path: `None` when it vanished or is a directory (both skipped), else
    /// its pod or its errors, each with a fingerprint of the content that was read.
    #[expect(
        clippy::type_complexity,
        reason = "private, one caller that destructures it"
    )]
    fn read_manifest(&self, file: &Path) -> Option<Result<(Pod, u64), (u64, Vec<ManifestError>)>> {
        let fail = |fingerprint: u64, message: String| {
            Some(Err((
                fingerprint,
                vec![ManifestError::new(file, None, message)],
            )))
        };
        match fs::metadata(file) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(file = %file.display(), "manifest vanished or dangles, skipping");
                return None;
            }
            Err(e) => {
                return fail(
                    fingerprint(e.to_string().as_bytes()),
                    format!("cannot stat: {e}"),
                );
            }
            Ok(m) if m.is_dir() => {
                tracing::debug!(path = %file.display(), "not recursing into a directory");
                return None;
            }
            Ok(m) if !m.is_file() => {
                return fail(0, "not a regular file".to_owned());
            }
            Ok(_) => {}
        }
        let data = match read_limited(file) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                return fail(
                    fingerprint(e.to_string().as_bytes()),
                    format!("cannot read: {e}"),
                );
            }
        };
        let fingerprint = fingerprint(&data);
        Some(match parse_manifest(file, &data, &self.node_name) {
            Ok(pod) => Ok((pod, fingerprint)),
            Err(errors) => Err((fingerprint, errors)),
        })
    }
}

/// The error for a pod whose namespace/name or UID an earlier file already gave.
fn duplicate(
    pod: &Pod,
    file: &Path,
    taken: &mut HashMap<(String, String), PathBuf>,
    uids: &mut HashMap<String, PathBuf>,
) -> Option<ManifestError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(first) = taken.get(&(namespace.clone(), name.clone())) {
        return Some(ManifestError::new(
            file,
            Some("metadata.name".to_owned()),
            format!(
                "duplicate pod {namespace}/{name}: already defined by {}",
                first.display()
            ),
        ));
    }
    if let Some(first) = uids.get(&uid) {
        return Some(ManifestError::new(
            file,
            Some("metadata.uid".to_owned()),
            format!(
                "duplicate value {uid:?}: already used by {}",
                first.display()
            ),
        ));
    }
    taken.insert((namespace, name), file.to_path_buf());
    uids.insert(uid, file.to_path_buf());
    None
}

/// Reads at most [`MAX_MANIFEST_BYTES`] of `file`, failing if it is longer (`utilio.ReadAtMost`).
fn read_limited(file: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    fs::File::open(file)?
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(io::Error::other(format!(
            "manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    Ok(data)
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Now in upstream's `config.seen` form: RFC 3339 with nine fraction digits (`RFC3339NanoFixed`),
/// in UTC.
fn seen_timestamp() -> String {
    let since_epoch = crate::clock::wall()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0);
    match k8s_openapi::jiff::Timestamp::new(seconds, nanos) {
        Ok(timestamp) => format!("{timestamp:.9}"),
        Err(_) => "1970-01-01T00:00:00.000000000Z".to_owned(),
    }
}

/// Scans on the blocking pool and sends the snapshot: the first always, later ones if changed.
async fn publish(inner: &Arc<Inner>, tx: &watch::Sender<Snapshot>, first: &mut bool) {
    let scanning = Arc::clone(inner);
    let snapshot = match tokio::task::spawn_blocking(move || scanning.scan()).await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::error!(%error, "static pod scan did not complete");
            return;
        }
    };
    let (pods, errors) = (snapshot.pods.len(), snapshot.errors.len());
    let sent = if std::mem::take(first) {
        tx.send_replace(snapshot);
        true
    } else {
        tx.send_if_modified(move |current| {
            let changed = *current != snapshot;
            if changed {
                *current = snapshot;
            }
            changed
        })
    };
    if sent {
        tracing::info!(pods, errors, "static pods updated");
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
