//! Reading a container's CRI log file for a log request: the start for `tailLines`, found from
//! the end of the file; the lines to the end; with `follow`, the lines written after, across a
//! rotation, until the container stops or the client goes away.
//!
//! Reference: kubelet `pkg/kubelet/kuberuntime/logs/logs.go` (`ReadLogs`, `waitLogs`) and
//! `pkg/util/tail` (`FindTailLineStartIndex`). Differences from upstream:
//! - Following sleeps on inotify on the log's directory, which reports writes to the file and a
//!   new file at its path, instead of upstream's fsnotify on the file plus a wake-up every second.
//!   After a rotation (the runtime's new file at the path after `ReopenContainerLog`) the old file
//!   is read to its end, then the new one from its start; upstream reopens on any rename, remove
//!   or chmod event of the file it follows.
//! - The container's state is asked at the first end of file and then after each
//!   [`STATE_CHECK_PERIOD`] without news (upstream: at every end of file, and at least each second).
//! - A line longer than 1 MiB without a newline is skipped with a warning: memory stays bounded
//!   per request (upstream buffers any line whole). CRI runtimes split lines far shorter.
//! - Lines left incomplete in a rotated file are dropped, as upstream drops them.

use std::{
    fs,
    future::Future,
    io,
    ops::{ControlFlow, Range},
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt;
use hyper::body::Bytes;
use inotify::{EventStream, Inotify, WatchMask};
use tokio::{io::AsyncReadExt, io::AsyncSeekExt, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::read::{LogOptions, Output};

/// How long following waits without news before asking again whether the container runs
/// (upstream's `stateCheckPeriod`).
pub const STATE_CHECK_PERIOD: Duration = Duration::from_secs(5);

/// Bytes read from the file at a time, also the block size of the tail search.
const READ_CHUNK: usize = 64 * 1024;
/// The longest line kept; a longer one is skipped (see the module doc).
const MAX_LINE: usize = 1024 * 1024;

/// Why a log read ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// The end of the file, or the `tailLines` lines, without `follow`.
    Eof,
    /// `limitBytes` bytes were written.
    LimitReached,
    /// Following ended: the container no longer runs and its log was read to the end.
    ContainerExited,
    /// The cancellation token fired.
    Cancelled,
    /// The receiver of the output was dropped.
    ReceiverGone,
}

/// Why a log could not be read. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error("cannot open container log {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read container log {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot watch container log {}: {source}", path.display())]
    Watch { path: PathBuf, source: io::Error },
}

/// Writes the log at `path` to `tx` as `options` ask, in chunks of at most a few tens of KiB.
/// With `follow`, `still_running` is asked whether the container still runs; following ends
/// when it says no (after reading what is left), when `cancel` fires or when the receiver of
/// `tx` is dropped.
pub async fn read_log<F, Fut>(
    path: &Path,
    options: &LogOptions,
    tx: mpsc::Sender<Bytes>,
    still_running: F,
    cancel: CancellationToken,
) -> Result<LogEnd, LogReadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    read_log_checking(
        path,
        options,
        &tx,
        still_running,
        &cancel,
        STATE_CHECK_PERIOD,
    )
    .await
}

/// [`read_log`] with the period of the state check as a parameter, for tests.
pub(crate) async fn read_log_checking<F, Fut>(
    path: &Path,
    options: &LogOptions,
    tx: &mpsc::Sender<Bytes>,
    still_running: F,
    cancel: &CancellationToken,
    check_period: Duration,
) -> Result<LogEnd, LogReadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // As upstream: the runtime's path may be a symlink; follow the file it names.
    let path = fs::canonicalize(path).map_err(|source| LogReadError::Open {
        path: path.to_owned(),
        source,
    })?;
    // Watch before the first read, so no write between that read and the wait is missed.
    let watcher = if options.follow {
        Some(Watcher::new(&path)?)
    } else {
        None
    };
    let file = open_at_tail(&path, options.tail_lines).await?;
    let mut output = Output::new(options, tx, cancel);
    if let Some(end) = output.exhausted() {
        return Ok(end);
    }
    let mut lines = Lines::new(file, &path);
    let end = match watcher {
        None => read_to_end(&mut lines, &mut output).await?,
        Some(watcher) => {
            let mut follow = Follow {
                path: &path,
                watcher,
                still_running,
                check_period,
                exited: false,
                next_check: None,
            };
            follow.run(&mut lines, &mut output).await?
        }
    };
    if let ControlFlow::Break(gone) = output.flush().await {
        return Ok(gone);
    }
    Ok(end)
}

/// Without `follow`: every line to the end of the file, the last one even without a newline.
async fn read_to_end(lines: &mut Lines, output: &mut Output<'_>) -> Result<LogEnd, LogReadError> {
    if let ControlFlow::Break(end) = drain(lines, output).await? {
        return Ok(end);
    }
    if let Some(rest) = lines.rest() {
        tracing::debug!(log = %lines.path.display(), "incomplete last line in container log");
        if let ControlFlow::Break(end) = output.line(lines.get(rest)) {
            return Ok(end);
        }
    }
    Ok(LogEnd::Eof)
}

/// Writes every complete line to the end of the file as it is now.
async fn drain(
    lines: &mut Lines,
    output: &mut Output<'_>,
) -> Result<ControlFlow<LogEnd>, LogReadError> {
    loop {
        while let Some(range) = lines.next_line() {
            if let ControlFlow::Break(end) = output.line(lines.get(range)) {
                return Ok(ControlFlow::Break(end));
            }
            if output.full()
                && let ControlFlow::Break(end) = output.flush().await
            {
                return Ok(ControlFlow::Break(end));
            }
        }
        if !lines.fill().await? {
            return Ok(ControlFlow::Continue(()));
        }
    }
}

/// The state of a read with `follow`.
struct Follow<'p, F> {
    path: &'p Path,
    watcher: Watcher,
    still_running: F,
    check_period: Duration,
    /// The container was seen stopped: read to the end, then stop.
    exited: bool,
    /// When to ask `still_running` again; `None` until the first end of file.
    next_check: Option<tokio::time::Instant>,
}

impl<F, Fut> Follow<'_, F>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    async fn run(
        &mut self,
        lines: &mut Lines,
        output: &mut Output<'_>,
    ) -> Result<LogEnd, LogReadError> {
        loop {
            if let ControlFlow::Break(end) = drain(lines, output).await? {
                return Ok(end);
            }
            if let Some(file) = self.replaced(lines).await? {
                // The runtime writes the new file now; what it wrote last to the old one
                // before switching is read once more, then the new file from its start.
                if let ControlFlow::Break(end) = drain(lines, output).await? {
                    return Ok(end);
                }
                *lines = Lines::new(file, self.path);
                continue;
            }
            if self.exited {
                return Ok(LogEnd::ContainerExited);
            }
            if let ControlFlow::Break(end) = output.flush().await {
                return Ok(end);
            }
            if let ControlFlow::Break(end) = self.wait(output).await? {
                return Ok(end);
            }
        }
    }

    /// The new file at the path when the one being read was rotated away.
    async fn replaced(&self, lines: &Lines) -> Result<Option<tokio::fs::File>, LogReadError> {
        let same_file =
            |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        let current = lines.file.metadata().await.map_err(|e| lines.error(e))?;
        match tokio::fs::metadata(self.path).await {
            Ok(at_path) if same_file(&at_path, &current) => return Ok(None),
            Ok(_) => {}
            // Renamed, not yet recreated: the watch reports the new file.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(open_error(self.path, source)),
        }
        let file = match tokio::fs::File::open(self.path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(open_error(self.path, source)),
        };
        tracing::debug!(log = %self.path.display(), "container log rotated, following the new file");
        Ok(Some(file))
    }

    /// Waits for news: a change in the log's directory, the time to check the container's
    /// state, the cancellation or the receiver going away.
    async fn wait(&mut self, output: &Output<'_>) -> Result<ControlFlow<LogEnd>, LogReadError> {
        let now = tokio::time::Instant::now();
        // Upstream asks before each wait; asking once per quiet period is enough to end.
        let check_due = self.next_check.is_none_or(|at| at <= now);
        if check_due {
            self.next_check = Some(now + self.check_period);
            let running = tokio::select! {
                () = output.cancelled() => return Ok(ControlFlow::Break(LogEnd::Cancelled)),
                running = (self.still_running)() => running,
            };
            if !running {
                self.exited = true;
                return Ok(ControlFlow::Continue(()));
            }
        }
        let next_check = self.next_check.unwrap_or(now + self.check_period);
        tokio::select! {
            () = output.cancelled() => Ok(ControlFlow::Break(LogEnd::Cancelled)),
            () = output.closed() => Ok(ControlFlow::Break(LogEnd::ReceiverGone)),
            changed = self.watcher.changed() => changed.map(ControlFlow::Continue),
            () = tokio::time::sleep_until(next_check) => Ok(ControlFlow::Continue(())),
        }
    }
}

fn open_error(path: &Path, source: io::Error) -> LogReadError {
    LogReadError::Open {
        path: path.to_owned(),
        source,
    }
}

/// Opens the log positioned at the start of its last `tail` lines (the whole file without).
async fn open_at_tail(path: &Path, tail: Option<i64>) -> Result<tokio::fs::File, LogReadError> {
    let file = fs::File::open(path).map_err(|source| open_error(path, source))?;
    let Some(tail) = tail.and_then(|n| u64::try_from(n).ok()) else {
        return Ok(tokio::fs::File::from_std(file));
    };
    let read_error = |source| LogReadError::Read {
        path: path.to_owned(),
        source,
    };
    let (file, start) = tokio::task::spawn_blocking(move || {
        let start = tail_start(&file, tail, READ_CHUNK);
        (file, start)
    })
    .await
    .map_err(|join| read_error(io::Error::other(join)))?;
    let start = start.map_err(read_error)?;
    let mut file = tokio::fs::File::from_std(file);
    file.seek(io::SeekFrom::Start(start))
        .await
        .map_err(read_error)?;
    Ok(file)
}

/// The offset where the last `lines` lines of `file` start (`FindTailLineStartIndex`): just
/// after the `lines + 1`-th newline from the end, the final newline counting as the first.
/// Reads `chunk` bytes at a time backwards from the end, never the whole file.
pub(crate) fn tail_start(file: &fs::File, lines: u64, chunk: usize) -> io::Result<u64> {
    let mut end = file.metadata()?.len();
    let mut buffer = vec![0; chunk.max(1)];
    let mut newlines = 0;
    while end > 0 {
        let start = end.saturating_sub(buffer.len() as u64);
        let block = &mut buffer[..(end - start) as usize];
        file.read_exact_at(block, start)?;
        for (at, _) in block.iter().enumerate().rev().filter(|&(_, &b)| b == b'\n') {
            newlines += 1;
            if newlines > lines {
                return Ok(start + at as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

/// Lines of the open log file, read a chunk at a time.
struct Lines {
    file: tokio::fs::File,
    path: PathBuf,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    /// How far `buffer` was searched for a newline.
    scanned: usize,
    /// The rest of a line over [`MAX_LINE`] is being skipped.
    skipping: bool,
}

impl Lines {
    fn new(file: tokio::fs::File, path: &Path) -> Self {
        Self {
            file,
            path: path.to_owned(),
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            skipping: false,
        }
    }

    fn error(&self, source: io::Error) -> LogReadError {
        LogReadError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// The next complete line already read, its newline included.
    fn next_line(&mut self) -> Option<Range<usize>> {
        loop {
            let found = self.buffer[self.scanned..].iter().position(|&b| b == b'\n');
            let Some(at) = found else {
                self.scanned = self.buffer.len();
                return None;
            };
            let line = self.start..self.scanned + at + 1;
            self.start = line.end;
            self.scanned = line.end;
            if !std::mem::take(&mut self.skipping) {
                return Some(line);
            }
        }
    }

    /// What is left after the last newline, at the end of the file.
    fn rest(&mut self) -> Option<Range<usize>> {
        let rest = self.start..self.buffer.len();
        self.start = rest.end;
        self.scanned = rest.end;
        (!rest.is_empty() && !self.skipping).then_some(rest)
    }

    fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buffer[range]
    }

    /// Reads the next chunk of the file; `false` at its end.
    async fn fill(&mut self) -> Result<bool, LogReadError> {
        self.buffer.drain(..self.start);
        self.scanned -= self.start;
        self.start = 0;
        if self.buffer.len() >= MAX_LINE {
            if !self.skipping {
                tracing::warn!(log = %self.path.display(), limit = MAX_LINE,
                    "skipping an overlong line in container log");
            }
            self.buffer.clear();
            self.scanned = 0;
            self.skipping = true;
        }
        let filled = self.buffer.len();
        self.buffer.resize(filled + READ_CHUNK, 0);
        let read = match self.file.read(&mut self.buffer[filled..]).await {
            Ok(read) => read,
            Err(source) => {
                self.buffer.truncate(filled);
                return Err(self.error(source));
            }
        };
        self.buffer.truncate(filled + read);
        Ok(read > 0)
    }
}

/// inotify on the log's directory: writes to files in it and files created or moved into it.
struct Watcher {
    events: EventStream<Vec<u8>>,
    path: PathBuf,
}

impl Watcher {
    fn new(log: &Path) -> Result<Self, LogReadError> {
        let watch_error = |source| LogReadError::Watch {
            path: log.to_owned(),
            source,
        };
        let dir = match log.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let inotify = Inotify::init().map_err(watch_error)?;
        inotify
            .watches()
            .add(
                dir,
                WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO,
            )
            .map_err(watch_error)?;
        let events = inotify
            .into_event_stream(vec![0; 4096])
            .map_err(watch_error)?;
        Ok(Self {
            events,
            path: log.to_owned(),
        })
    }

    /// Resolves at the next event (any: a spurious wake-up costs one read).
    async fn changed(&mut self) -> Result<(), LogReadError> {
        match self.events.next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(source)) => Err(LogReadError::Watch {
                path: self.path.clone(),
                source,
            }),
            None => Err(LogReadError::Watch {
                path: self.path.clone(),
                source: io::Error::other("inotify event stream ended"),
            }),
        }
    }
}
