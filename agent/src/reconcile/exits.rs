//! Container exits from the kernel: one pidfd per running container, so the PLEG learns of an
//! exit in milliseconds on every runtime, not at the next relist.
//!
//! containerd 1.6 and 1.7 answer CRI `GetContainerEvents` with Unimplemented, so without this
//! the 1 s relist is the only way to see a container die. Here, every container the relist sees
//! running gets a watch: its main process ID comes once from the verbose `ContainerStatus` (the
//! `pid` of the `info` JSON, which containerd and CRI-O both report), and a pidfd of that process
//! goes into the [`super::pidfd`] epoll set. Each watch is one small task parked on its exit, so a
//! node of idle containers costs no CPU. When it fires, the runtime still has to reap the process and record the exit (the shim
//! and the CRI plugin do that asynchronously), so the watch asks `ContainerStatus` until the state is
//! no longer running — a few milliseconds, with short capped steps — and then wakes the pod's
//! worker, which observes and publishes the exit.
//!
//! The relist stays the safety net, unchanged: it catches exits a watch missed (a process that
//! exited before its pidfd was opened, a PID reused in that instant, a runtime that reports no
//! PID) and drops watches of containers no longer running. A runtime restart leaves the watches
//! valid: the descriptor belongs to the process, not to the runtime connection.
//!
//! Reference: `pidfd_open(2)`; kubelet `pkg/kubelet/pleg` (generic and evented PLEG; upstream's
//! evented PLEG needs CRI events, kubernetes/kubernetes#121349).
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use kernlet_cri::v1;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::{pidfd::ExitPoller, pleg::Wakers};
use crate::cri::Cri;

/// First pause between `ContainerStatus` checks once the process is gone; doubled each time.
const CONFIRM_FIRST: Duration = Duration::from_millis(2);
/// Longest pause between checks.
const CONFIRM_STEP_MAX: Duration = Duration::from_millis(100);
/// Retries of the first (verbose) `ContainerStatus` stop once the pause would pass this.
const STATUS_RETRY_MAX: Duration = Duration::from_secs(10);
/// How long the runtime may take to record an exit before the watch leaves it to the relist.
const CONFIRM_FOR: Duration = Duration::from_secs(10);

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;

/// What the exit watches did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExitCounts {
    /// Watches now open.
    watching: AtomicU64,
    /// Exits seen through a pidfd and confirmed by the runtime.
    exits: AtomicU64,
    /// Exits seen in containerd's task events (counted by the PLEG).
    task_exits: AtomicU64,
    /// Set once pidfds are found unsupported (the relist alone then drives updates).
    unsupported: AtomicBool,
}

impl ExitCounts {
    /// Containers whose main process is watched now.
    #[must_use]
    pub fn watching(&self) -> u64 {
        self.watching.load(Ordering::Relaxed)
    }

    /// Exits seen through a pidfd and confirmed by the runtime, since start.
    #[must_use]
    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::Relaxed)
    }

    /// Exits seen in containerd's task events, since start.
    #[must_use]
    pub fn task_exits(&self) -> u64 {
        self.task_exits.load(Ordering::Relaxed)
    }

    /// Counts one exit seen in containerd's task events.
    pub fn count_task_exit(&self) {
        self.task_exits.fetch_add(1, Ordering::Relaxed);
    }
}

/// The exit watches of the running containers, keyed by container ID.
#[derive(Debug)]
pub struct ExitWatches {
    runtime: Arc<dyn Cri>,
    /// `None` when the kernel cannot give pidfds or epoll (logged once).
    poller: Option<Arc<ExitPoller>>,
    wakers: Wakers,
    counts: Arc<ExitCounts>,
    cancel: CancellationToken,
    watches: HashMap<String, AbortHandle>,
}

impl ExitWatches {
    #[must_use]
    pub fn new(
        runtime: Arc<dyn Cri>,
        wakers: Wakers,
        counts: Arc<ExitCounts>,
        cancel: CancellationToken,
    ) -> Self {
        let poller = match ExitPoller::start() {
            Ok(poller) => Some(Arc::new(poller)),
            Err(error) => {
                tracing::warn!(%error, "container exits are seen by the relist only");
                None
            }
        };
        Self {
            runtime,
            poller,
            wakers,
            counts,
            cancel,
            watches: HashMap::new(),
        }
    }

    /// Makes the watches match a relist: one per running container (`id` → pod UID), none for
    /// anything else. A container is watched once: a container ID never runs again once it
    /// exited, and one whose watch gave up (no PID reported) is left to the relist rather than
    /// asked again every period.
    pub fn sync<'a>(&mut self, running: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let running: HashMap<&str, &str> = running.into_iter().collect();
        self.watches.retain(|id, handle| {
            let keep = running.contains_key(id.as_str());
            if !keep {
                handle.abort();
            }
            keep
        });
        let Some(poller) = self.poller.as_ref() else {
            return;
        };
        if self.counts.unsupported.load(Ordering::Relaxed) {
            return;
        }
        for (id, uid) in running {
            if self.watches.contains_key(id) {
                continue;
            }
            let watch = Watch {
                runtime: self.runtime.clone(),
                poller: poller.clone(),
                wakers: self.wakers.clone(),
                counts: self.counts.clone(),
                id: id.to_owned(),
                uid: uid.to_owned(),
            };
            let cancel = self.cancel.clone();
            let task = tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = watch.run() => {}
                }
            });
            self.watches.insert(id.to_owned(), task.abort_handle());
        }
        let open = self.watches.values().filter(|h| !h.is_finished()).count();
        self.counts.watching.store(open as u64, Ordering::Relaxed);
    }
}

impl Drop for ExitWatches {
    fn drop(&mut self) {
        for handle in self.watches.values() {
            handle.abort();
        }
        self.counts.watching.store(0, Ordering::Relaxed);
    }
}

/// One container's watch.
struct Watch {
    runtime: Arc<dyn Cri>,
    poller: Arc<ExitPoller>,
    wakers: Wakers,
    counts: Arc<ExitCounts>,
    id: String,
    uid: String,
}

impl Watch {
    async fn run(self) {
        let Some(pid) = self.main_pid().await else {
            tracing::debug!(container = %self.id, "runtime reports no pid; the relist watches this container");
            return;
        };
        match self.poller.watch(pid) {
            Ok(mut exit) => exit.exited().await,
            // Already gone (and maybe reaped): confirm through the runtime at once.
            Err(error) if error.is_gone() => {}
            Err(error) => {
                if !self.counts.unsupported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "container exits are seen by the relist only");
                }
                return;
            }
        }
        let exited = tokio::time::Instant::now();
        if self.confirm().await {
            self.counts.exits.fetch_add(1, Ordering::Relaxed);
            let confirmed_after = exited.elapsed();
            tracing::debug!(container = %self.id, pod = %self.uid, ?confirmed_after, "container exited");
        }
        self.wakers.wake(&self.uid);
    }

    /// The main process of the running container; `None` when it is gone or no longer running
    /// (the relist that follows sees it) or the runtime reports no PID. Transient runtime errors
    /// (a busy or restarting runtime) are retried, so a container keeps its watch through them.
    async fn main_pid(&self) -> Option<i32> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.status(true).await {
                Ok(Some(response)) if state(&response) == Some(RUNNING) => {
                    return main_pid(&response);
                }
                Ok(_) => return None,
                Err(()) if pause > STATUS_RETRY_MAX => return None,
                Err(()) => {}
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    /// Waits until the runtime no longer reports the container running; false when it still
    /// does after [`CONFIRM_FOR`] (the relist takes over).
    async fn confirm(&self) -> bool {
        let mut pause = CONFIRM_FIRST;
        let mut waited = Duration::ZERO;
        loop {
            match self.status(false).await {
                Ok(Some(response)) if state(&response) == Some(RUNNING) => {}
                // The runtime cannot answer yet (restarting, say): ask again.
                Err(()) => {}
                // Exited, or removed meanwhile: either way the worker has news.
                _ => return true,
            }
            if waited >= CONFIRM_FOR {
                return false;
            }
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).min(CONFIRM_STEP_MAX);
        }
    }

    /// `ContainerStatus`: `Ok(None)` when the container is gone, `Err` when the runtime cannot
    /// answer (logged).
    async fn status(&self, verbose: bool) -> Result<Option<v1::ContainerStatusResponse>, ()> {
        let request = v1::ContainerStatusRequest {
            container_id: self.id.clone(),
            verbose,
        };
        match self.runtime.container_status(request).await {
            Ok(response) => Ok(Some(response)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => {
                tracing::debug!(container = %self.id, %error, "exit watch cannot read the container's status");
                Err(())
            }
        }
    }
}

fn state(response: &v1::ContainerStatusResponse) -> Option<i32> {
    response.status.as_ref().map(|status| status.state)
}

/// The container's main process ID from a verbose `ContainerStatus`: the `pid` field of the JSON
/// under `info` (containerd and CRI-O). 0 and absent mean none.
fn main_pid(response: &v1::ContainerStatusResponse) -> Option<i32> {
    #[derive(serde::Deserialize)]
    struct Info {
        pid: Option<i64>,
    }
    let info: Info = serde_json::from_str(response.info.get("info")?).ok()?;
    info.pid
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
}

#[cfg(test)]
#[path = "exits_tests.rs"]
mod tests;
