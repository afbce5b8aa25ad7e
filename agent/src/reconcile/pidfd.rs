//! Process exits from the kernel: one epoll set of pidfds, waited on by one thread.
//!
//! `pidfd_open(2)` (Linux >= 5.3) gives a descriptor that polls readable once its process has
//! exited. Every watched process's pidfd goes into one epoll set; one thread blocks in
//! `epoll_wait` and completes the watcher's one-shot channel when its process exits. So a node of
//! idle containers costs one parked thread and one descriptor per container, and nothing runs
//! until a process dies. Dropping a [`Exit`] closes its pidfd, which leaves the set.
//!
//! Why not tokio's reactor: registering a raw descriptor with it (`AsyncFd`) is `unsafe` as of
//! tokio 1.54, and the crate forbids `unsafe`; `rustix` offers pidfds, epoll and eventfd as safe
//! calls (`nix` 0.31 has no pidfd support).
//!
//! Reference: `pidfd_open(2)`, `epoll(7)`.
use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use rustix::{
    buffer::spare_capacity,
    event::{EventfdFlags, epoll, eventfd},
    io::Errno,
    process::{Pid, PidfdFlags, pidfd_open},
};
use tokio::sync::oneshot;

/// The token of the stop eventfd; watch tokens start above it.
const STOP: u64 = 0;

#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    #[error("cannot set up the process exit poller: {0}")]
    Setup(#[source] std::io::Error),
    #[error("cannot watch process {pid}: {source}")]
    Watch {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

impl PidfdError {
    /// True when the process no longer exists (it exited, and maybe was reaped, already).
    #[must_use]
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Watch { source, .. } if source.raw_os_error() == Some(Errno::SRCH.raw_os_error()))
    }
}

/// The epoll set and its thread (see the module doc). Stops when dropped.
#[derive(Debug)]
pub struct ExitPoller {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    epoll: OwnedFd,
    stop: OwnedFd,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Waiting {
    /// Held so the descriptor stays in the set until the exit or the watcher's drop.
    _pidfd: OwnedFd,
    exited: oneshot::Sender<()>,
}

impl ExitPoller {
    /// Creates the epoll set and starts its thread.
    pub fn start() -> Result<Self, PidfdError> {
        let setup = |errno: Errno| PidfdError::Setup(errno.into());
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(setup)?;
        let stop = eventfd(0, EventfdFlags::CLOEXEC).map_err(setup)?;
        let data = epoll::EventData::new_u64(STOP);
        epoll::add(&epoll, &stop, data, epoll::EventFlags::IN).map_err(setup)?;
        let shared = Arc::new(Shared {
            epoll,
            stop,
            waiting: Mutex::default(),
            next: AtomicU64::new(STOP + 1),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("kernlet-exits".into())
            .spawn(move || thread.wait())
            .map_err(PidfdError::Setup)?;
        Ok(Self { shared })
    }

    /// Watches process `pid`: the returned [`Exit`] completes when it exits.
    pub fn watch(&self, pid: i32) -> Result<Exit, PidfdError> {
        let error = |errno: Errno| PidfdError::Watch {
            pid,
            source: errno.into(),
        };
        let process = Pid::from_raw(pid).ok_or_else(|| error(Errno::SRCH))?;
        let pidfd = pidfd_open(process, PidfdFlags::empty()).map_err(error)?;
        let token = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // In the map before the set, so the thread finds it when the exit comes at once.
        let mut waiting = self.shared.lock();
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ONESHOT;
        epoll::add(
            &self.shared.epoll,
            &pidfd,
            epoll::EventData::new_u64(token),
            flags,
        )
        .map_err(error)?;
        waiting.insert(
            token,
            Waiting {
                _pidfd: pidfd,
                exited: tx,
            },
        );
        Ok(Exit {
            shared: self.shared.clone(),
            token,
            exited: rx,
        })
    }
}

impl Drop for ExitPoller {
    fn drop(&mut self) {
        // Wakes the thread, which then returns and drops its reference.
        let _ = rustix::io::write(&self.shared.stop, &1u64.to_ne_bytes());
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self) {
        let mut events = Vec::with_capacity(64);
        loop {
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(errno) => {
                    let error = std::io::Error::from(errno);
                    tracing::error!(%error, "process exit poller stopped; exits are seen by the relist only");
                    return;
                }
            }
            for event in &events {
                let token = event.data.u64();
                if token == STOP {
                    return;
                }
                if let Some(waiting) = self.lock().remove(&token) {
                    // The watcher may have gone meanwhile; then nobody needs the news.
                    let _ = waiting.exited.send(());
                }
            }
        }
    }
}

/// One watched process; completes when it exits. Dropping it stops the watch.
#[derive(Debug)]
pub struct Exit {
    shared: Arc<Shared>,
    token: u64,
    exited: oneshot::Receiver<()>,
}

impl Exit {
    /// Waits until the process exits (or the poller stops, which callers treat alike: the
    /// runtime is asked either way).
    pub async fn exited(&mut self) {
        let _ = (&mut self.exited).await;
    }
}

impl Drop for Exit {
    fn drop(&mut self) {
        // Closing the pidfd takes it out of the epoll set.
        self.shared.lock().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_exit_completes_its_watch_and_only_its_own() {
        let poller = ExitPoller::start().unwrap();
        let mut first = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut second = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut first_exit = poller.watch(first.id().try_into().unwrap()).unwrap();
        let mut second_exit = poller.watch(second.id().try_into().unwrap()).unwrap();
        first.kill().unwrap();
        tokio::time::timeout(Duration::from_secs(10), first_exit.exited())
            .await
            .expect("the first process's exit is reported");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), second_exit.exited())
                .await
                .is_err(),
            "the second process still runs"
        );
        drop(second_exit);
        assert!(
            poller.shared.lock().is_empty(),
            "a dropped watch leaves the set"
        );
        second.kill().unwrap();
        first.wait().unwrap();
        second.wait().unwrap();
    }

    #[tokio::test]
    async fn a_process_that_is_gone_says_so() {
        let poller = ExitPoller::start().unwrap();
        // Above any pid_max.
        let error = poller.watch(i32::MAX).unwrap_err();
        assert!(error.is_gone(), "{error}");
        let mut reaped = std::process::Command::new("true").spawn().unwrap();
        let pid = reaped.id().try_into().unwrap();
        reaped.wait().unwrap();
        // Reaped: gone, unless the PID was reused in between (then it is a live process).
        if let Err(error) = poller.watch(pid) {
            assert!(error.is_gone(), "{error}");
        }
    }
}
