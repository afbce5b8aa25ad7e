//! Container log rotation: keeps each running container's CRI log file (`ContainerStatus.log_path`)
//! under `containerLogMaxSize`, with at most `containerLogMaxFiles` files per log.
//!
//! Reference: kubelet `pkg/kubelet/logs/container_log_manager.go`. Each check, for every running
//! container whose log is at least `containerLogMaxSize` bytes:
//! 1. leftovers of an interrupted rotation are removed: `<log>.*.tmp` files, and uncompressed
//!    rotated files whose `.gz` already exists;
//! 2. the oldest rotated files are removed so that `containerLogMaxFiles - 2` remain (those, the
//!    file about to be rotated and the runtime's fresh file make `containerLogMaxFiles`);
//! 3. rotated files still uncompressed are gzipped (through `<file>.tmp`, then renamed), so only the
//!    newest rotated file stays plain for readers that have not finished it;
//! 4. the live file is renamed to `<log>.<YYYYMMDD-hhmmss>` and the runtime is asked to
//!    `ReopenContainerLog`; if that fails the file is renamed back so the next check retries.
//!
//! A log that does not exist is reopened, as upstream does. A negative `containerLogMaxSize`
//! disables rotation. Differences from upstream: the timestamp is UTC (upstream uses the local
//! zone, whose clock can step back at a DST change and break the name order retention relies on);
//! a rotation whose timestamped name is already taken (two in one second, or the clock went back)
//! is postponed instead of clobbering that file; a `.gz` is synced before the original is removed.
//!
//! # Why a periodic check
//! Nothing announces cheaply that a log file grew: the runtime's shim writes it and CRI has no
//! event for it, and inotify `IN_MODIFY` on the log directories would wake kernlet once per log
//! line of every container, far more often than a `stat` per running container each interval.
//! So, as upstream, one pass runs every `containerLogMonitorInterval` (10 s; kernlet accepts only
//! upstream's value in the config file) and handles containers one at a time, which is upstream's
//! worker pool at its default (and kernlet's only accepted) `containerLogMaxWorkers: 1`. A pass
//! costs one `ListContainers`, a `ContainerStatus` per container not seen before (a log path never
//! changes, so it is cached), and a `stat` per running container.
//!
//! The reader behind the kubelet's `/containerLogs` endpoint ([`read_log`] with [`LogOptions`]
//! from the request's query) is in `read` and `follow`; it reads the live file, following it
//! across these rotations.
//!
//! Tests only: the environment variable [`MONITOR_INTERVAL_ENV`] (`KERNLET_LOG_MONITOR_INTERVAL`,
//! a Go duration such as `1s`) replaces the 10 s interval, so an integration test sees rotations
//! within seconds.

mod follow;
mod read;
#[cfg(test)]
mod read_tests;
mod rotate;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use kernlet_cri::v1;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use follow::{LogEnd, LogReadError, STATE_CHECK_PERIOD, read_log};
pub use read::{LogOptions, LogQueryError};
pub use rotate::{RotationOutcome, restore_rotated, rotate_file, rotation_timestamp};

use crate::{
    config::{DurationError, KubeletConfig, parse_duration},
    cri::{CriError, Runtime},
};

/// Tests only: overrides the check interval (a Go duration such as `1s`); see the module doc.
pub const MONITOR_INTERVAL_ENV: &str = "KERNLET_LOG_MONITOR_INTERVAL";

/// Why a log could not be checked or rotated. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot stat container log {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list rotated files of container log {}: {source}", path.display())]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove old container log {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot compress container log {}: {source}", path.display())]
    Compress {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rename container log {} to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("runtime could not reopen container log {}: {source}", path.display())]
    Reopen { path: PathBuf, source: CriError },
    #[error("rotation of container log {} did not finish: {source}", path.display())]
    Interrupted {
        path: PathBuf,
        source: tokio::task::JoinError,
    },
    // Why the MONITOR_INTERVAL_ENV override is ignored (the caller names the variable).
    #[error("not valid utf-8")]
    IntervalNotUtf8,
    #[error("must be positive")]
    IntervalNotPositive,
    #[error(transparent)]
    IntervalParse(#[from] DurationError),
}

/// The rotation policy: `containerLogMaxSize`, `containerLogMaxFiles` and the check interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    max_size: u64,
    max_files: usize,
    interval: Duration,
}

impl LogRotation {
    /// Upstream's `containerLogMonitorInterval`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    /// Rotates logs of at least `max_size` bytes, keeping `max_files` files per log (at least 2,
    /// as upstream requires), checking every `interval` (a zero interval means the default).
    #[must_use]
    pub fn new(max_size: u64, max_files: usize, interval: Duration) -> Self {
        let interval = if interval.is_zero() {
            Self::DEFAULT_INTERVAL
        } else {
            interval
        };
        Self {
            max_size,
            max_files: max_files.max(2),
            interval,
        }
    }

    /// The policy from the config, and [`MONITOR_INTERVAL_ENV`] when set; `None` when rotation
    /// is disabled (negative `containerLogMaxSize`).
    #[must_use]
    pub fn from_config(config: &KubeletConfig) -> Option<Self> {
        let max_size = u64::try_from(config.container_log_max_size.value()).ok()?;
        let max_files = usize::try_from(config.container_log_max_files).unwrap_or(usize::MAX);
        let interval =
            std::env::var_os(MONITOR_INTERVAL_ENV).map_or(Self::DEFAULT_INTERVAL, |value| {
                match interval_from_env(value.to_str()) {
                    Ok(interval) => interval,
                    Err(reason) => {
                        tracing::warn!(variable = MONITOR_INTERVAL_ENV, ?value, %reason,
                        "ignoring the log monitor interval override");
                        Self::DEFAULT_INTERVAL
                    }
                }
            });
        Some(Self::new(max_size, max_files, interval))
    }

    /// `containerLogMaxSize` in bytes.
    #[must_use]
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// `containerLogMaxFiles`, the live file included.
    #[must_use]
    pub fn max_files(&self) -> usize {
        self.max_files
    }

    /// How often running containers' logs are checked.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// The value of [`MONITOR_INTERVAL_ENV`] as a positive duration.
fn interval_from_env(value: Option<&str>) -> Result<Duration, LogError> {
    let value = value.ok_or(LogError::IntervalNotUtf8)?;
    match parse_duration(value.trim())? {
        interval if interval.is_zero() => Err(LogError::IntervalNotPositive),
        interval => Ok(interval),
    }
}

/// Checks every running container's log each interval until `cancel` fires.
pub async fn run(runtime: Runtime, settings: LogRotation, cancel: CancellationToken) {
    tracing::info!(
        max_size = settings.max_size,
        max_files = settings.max_files,
        interval = ?settings.interval,
        "container log rotation"
    );
    let mut log_paths = HashMap::new();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        check_running(&runtime, &settings, &mut log_paths, &cancel).await;
    }
}

/// One pass over the running containers. Cancellation is honoured between containers, never in
/// the middle of one's rotation (a renamed but not reopened log would wait for the next start).
async fn check_running(
    runtime: &Runtime,
    settings: &LogRotation,
    log_paths: &mut HashMap<String, Option<PathBuf>>,
    cancel: &CancellationToken,
) {
    let request = v1::ListContainersRequest {
        filter: Some(v1::ContainerFilter {
            state: Some(v1::ContainerStateValue {
                state: v1::ContainerState::ContainerRunning.into(),
            }),
            ..Default::default()
        }),
    };
    let listed = tokio::select! {
        () = cancel.cancelled() => return,
        listed = runtime.list_containers(request) => listed,
    };
    let containers = match listed {
        Ok(response) => response.containers,
        Err(error) => {
            tracing::warn!(%error, "cannot list containers to rotate their logs");
            return;
        }
    };
    let running: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    log_paths.retain(|id, _| running.contains(id.as_str()));
    for container in &containers {
        if cancel.is_cancelled() {
            return;
        }
        // Only running containers write; a stopped one keeps its last log as it is.
        if container.state != i32::from(v1::ContainerState::ContainerRunning) {
            continue;
        }
        let id = container.id.as_str();
        let Some(log) = log_path(runtime, id, log_paths).await else {
            continue;
        };
        match check_log(log.clone(), *settings, || reopen(runtime, id)).await {
            Ok(RotationOutcome::Rotated {
                size,
                rotated,
                compressed,
                removed,
            }) => {
                tracing::info!(container = id, log = %log.display(), size,
                    rotated = %rotated.display(), compressed = compressed.len(),
                    removed = removed.len(), "rotated container log");
            }
            Ok(RotationOutcome::Missing) => {
                tracing::debug!(container = id, log = %log.display(),
                    "container log was missing; the runtime reopened it");
            }
            Ok(RotationOutcome::NameTaken { rotated }) => {
                tracing::debug!(container = id, log = %log.display(),
                    taken = %rotated.display(), "log rotation postponed: name taken");
            }
            Ok(RotationOutcome::UnderSize { .. }) => {}
            Err(error) => {
                tracing::warn!(container = id, %error, "container log rotation failed");
            }
        }
    }
}

/// The container's log path, from the cache or `ContainerStatus`; `None` when it has none.
async fn log_path(
    runtime: &Runtime,
    id: &str,
    log_paths: &mut HashMap<String, Option<PathBuf>>,
) -> Option<PathBuf> {
    if let Some(known) = log_paths.get(id) {
        return known.clone();
    }
    let request = v1::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    };
    let status = match runtime.container_status(request).await {
        Ok(response) => response.status?,
        Err(error) if error.is_not_found() => return None,
        Err(error) => {
            tracing::warn!(container = id, %error, "cannot read the container's log path");
            return None;
        }
    };
    // CRI documents the status's log path as absolute; anything else is not a file kernlet owns.
    let path = Some(PathBuf::from(status.log_path)).filter(|p| p.is_absolute());
    log_paths.insert(id.to_owned(), path.clone());
    path
}

/// `ReopenContainerLog`: the runtime closes the container's log and creates it again.
async fn reopen(runtime: &Runtime, id: &str) -> Result<(), CriError> {
    let request = v1::ReopenContainerLogRequest {
        container_id: id.to_owned(),
    };
    runtime.reopen_container_log(request).await.map(drop)
}

/// Checks one log: the file work ([`rotate_file`]) on the blocking pool, then `reopen` (the
/// runtime's `ReopenContainerLog`) after a rotation or when the log is missing. When a rotated
/// log cannot be reopened it is renamed back, so the next check retries.
pub async fn check_log<F, Fut>(
    log: PathBuf,
    settings: LogRotation,
    reopen: F,
) -> Result<RotationOutcome, LogError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), CriError>>,
{
    let outcome = blocking(&log, {
        let log = log.clone();
        move || rotate_file(&log, &settings, crate::clock::wall())
    })
    .await?;
    match &outcome {
        RotationOutcome::Missing => {
            reopen().await.map_err(|source| LogError::Reopen {
                path: log.clone(),
                source,
            })?;
        }
        RotationOutcome::Rotated { rotated, .. } => {
            if let Err(source) = reopen().await {
                let back = blocking(&log, {
                    let (log, rotated) = (log.clone(), rotated.clone());
                    move || restore_rotated(&log, &rotated)
                });
                if let Err(error) = back.await {
                    tracing::error!(%error, "rotated container log not renamed back; \
                        its lines stay in the rotated file");
                }
                return Err(LogError::Reopen { path: log, source });
            }
        }
        RotationOutcome::UnderSize { .. } | RotationOutcome::NameTaken { .. } => {}
    }
    Ok(outcome)
}

/// Runs file work for `log` on the blocking pool.
async fn blocking<T: Send + 'static>(
    log: &Path,
    work: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| LogError::Interrupted {
            path: log.to_owned(),
            source,
        })?
}
