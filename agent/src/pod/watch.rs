//! inotify watches on a static pod path, turned into "re-read now" signals.
//!
//! A [`Watcher`] watches the path itself when it is a directory, and always the nearest existing
//! parent of the path, so that the path appearing (even several missing levels down), vanishing,
//! or being replaced by a rename or a symlink swap is seen without polling. Events are coalesced:
//! [`Watcher::next_burst`] returns [`DEBOUNCE`] after the last relevant event of a burst, and at
//! most [`MAX_COALESCE`] after its first one, so an editor's write-temp-then-rename costs one
//! re-read.
//!
//! Upstream (`pkg/kubelet/config/file_linux.go`) watches only the path, through fsnotify, and
//! retries every second while it does not exist; it ignores events for names starting with `.`,
//! as we do for entries of the directory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{Event, EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};
use tokio::time::Instant;

/// Quiet time after the last filesystem event before the path is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest a re-read waits under a steady stream of events.
pub const MAX_COALESCE: Duration = Duration::from_secs(1);

/// Whether a directory entry is hidden, and so not a manifest (upstream's `[^.]*` glob).
pub(super) fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// How a burst of events ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Burst {
    /// Files under the path changed: re-read it.
    Rescan,
    /// The path or one of its parents changed shape: set up new watches, then re-read.
    Rearm,
    /// inotify failed; the watcher is unusable.
    Failed,
}

/// What a watch descriptor stands for.
enum Role {
    /// The static pod directory: any entry not starting with '.' matters.
    Dir,
    /// The nearest existing parent of the path: only the entry `child` (the path itself, or the
    /// next missing component on the way to it) matters.
    Anchor { child: Option<OsString> },
}

/// What one event asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Nothing,
    Rescan,
    Rearm,
}

const WATCH_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// One inotify instance and the watches of one arming.
pub(super) struct Watcher {
    events: EventStream<Vec<u8>>,
    roles: HashMap<WatchDescriptor, Role>,
}

impl Watcher {
    /// A fresh inotify instance watching `path` (when it is a directory) and its nearest existing
    /// parent. Arm before reading the path, so no change between the read and the watch is lost.
    pub(super) fn arm(path: &Path) -> io::Result<Self> {
        let path = std::path::absolute(path)?;
        let inotify = Inotify::init()?;
        let mut watches = inotify.watches();
        let mut roles = HashMap::new();
        if path.is_dir() {
            roles.insert(watches.add(&path, WATCH_MASK)?, Role::Dir);
        }
        let mut child = path.as_path();
        while let Some(parent) = child.parent() {
            if parent.is_dir() {
                let child_name = child.file_name().map(ToOwned::to_owned);
                roles.insert(
                    watches.add(parent, WATCH_MASK)?,
                    Role::Anchor { child: child_name },
                );
                if child != path.as_path() {
                    tracing::info!(
                        path = %path.display(),
                        watching = %parent.display(),
                        "static pod path does not exist yet, waiting for it"
                    );
                }
                break;
            }
            child = parent;
        }
        let events = inotify.into_event_stream(vec![0; 4096])?;
        Ok(Self { events, roles })
    }

    /// Waits for the next burst of relevant events to end. Cancel-safe: dropping the future
    /// loses at most the burst in progress, which the re-read after the next arming covers.
    pub(super) async fn next_burst(&mut self) -> Burst {
        // (first event, last event) of the burst being coalesced, and whether it needs new watches.
        let mut burst: Option<(Instant, Instant)> = None;
        let mut rearm = false;
        loop {
            let due = burst.map(|(start, last)| (last + DEBOUNCE).min(start + MAX_COALESCE));
            tokio::select! {
                event = self.events.next() => {
                    let change = match event {
                        Some(Ok(event)) => self.classify(&event),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "reading inotify events failed");
                            return Burst::Failed;
                        }
                        None => {
                            tracing::warn!("inotify event stream ended");
                            return Burst::Failed;
                        }
                    };
                    if change != Change::Nothing {
                        rearm |= change == Change::Rearm;
                        let now = Instant::now();
                        burst = Some((burst.map_or(now, |(start, _)| start), now));
                    }
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    return if rearm { Burst::Rearm } else { Burst::Rescan };
                }
            }
        }
    }

    fn classify(&self, event: &Event<OsString>) -> Change {
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            tracing::debug!("inotify queue overflowed, re-reading everything");
            return Change::Rearm;
        }
        let Some(role) = self.roles.get(&event.wd) else {
            return Change::Nothing;
        };
        let gone =
            EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED | EventMask::UNMOUNT;
        if event.mask.intersects(gone) {
            return Change::Rearm;
        }
        match role {
            Role::Dir => match &event.name {
                Some(name) if !is_hidden(name) => Change::Rescan,
                _ => Change::Nothing,
            },
            Role::Anchor { child } => match (&event.name, child) {
                (Some(name), Some(child)) if name == child => Change::Rearm,
                (Some(_), None) => Change::Rearm,
                _ => Change::Nothing,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    async fn burst(watcher: &mut Watcher) -> Option<Burst> {
        tokio::time::timeout(Duration::from_secs(2), watcher.next_burst())
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_rescan_and_dot_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = Watcher::arm(dir.path()).unwrap();
        fs::write(dir.path().join(".swap"), "x").unwrap();
        fs::remove_file(dir.path().join(".swap")).unwrap();
        for i in 0..5 {
            fs::write(dir.path().join("a.yaml"), format!("{i}")).unwrap();
        }
        assert_eq!(burst(&mut watcher).await, Some(Burst::Rescan));
        // Nothing more is pending: the five writes were one burst.
        let quiet = tokio::time::timeout(Duration::from_millis(300), watcher.next_burst()).await;
        assert!(quiet.is_err(), "unexpected burst {quiet:?}");
    }

    #[tokio::test]
    async fn a_missing_path_is_waited_for_through_its_ancestors() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("etc/kubernetes/manifests");
        let mut watcher = Watcher::arm(&path).unwrap();
        // An unrelated entry beside the missing component does not matter.
        fs::write(root.path().join("other"), "x").unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        assert_eq!(burst(&mut watcher).await, Some(Burst::Rearm));

        let mut watcher = Watcher::arm(&path).unwrap();
        fs::create_dir_all(&path).unwrap();
        assert_eq!(burst(&mut watcher).await, Some(Burst::Rearm));

        let mut watcher = Watcher::arm(&path).unwrap();
        fs::remove_dir(&path).unwrap();
        assert_eq!(burst(&mut watcher).await, Some(Burst::Rearm));
    }
}
