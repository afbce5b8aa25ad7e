//! Admission for the CRI calls that make the runtime start processes: `RunPodSandbox` (the
//! network plugins, the shim, the pause container) and `StartContainer` (runc). Each kind has
//! its own lane, which lets in twice the CPUs kernlet may use at once; the rest wait in kernlet,
//! first come first served, and a call's deadline starts when it is let in.
//!
//! Why: every pod worker acts as soon as its pod appears, so a node that starts 110 pods hands
//! the runtime 110 sandboxes at once. Much of the work is CPU time in the runtime and its
//! plugins; shared by all, every creation takes about as long as all of them, and on a slow node
//! they pass the 4 m deadline together. A retry then collides with the creation still being undone ("name is
//! reserved") and the node does not converge (the density bench at 110 pods on 2 emulated CPUs,
//! `docs/perf.md`). Queued in kernlet, a call has the runtime's attention for its deadline and
//! the first pods run after seconds rather than all after minutes. Sandboxes and container
//! starts have separate lanes so that a pod whose sandbox is ready does not wait behind the next
//! pods' sandboxes. Stops and removals are never queued: tearing down is not held up by a wave
//! of starts.
//!
//! The width is a fixed guess: on the host 4 at a time started 110 pods sooner than all at once,
//! but in the slow node VM the runtime still gained from more at once (both in `docs/perf.md`).
//! A width that follows the runtime (wider while calls end well inside their deadline, halved
//! when one nears it) is the next step.
//!
//! Upstream's kubelet bounds only image pulls (`maxParallelImagePulls`); its `runtime_ops`
//! timings are the runtime's alone, as kernlet's `kernlet_cri_request_duration_seconds` are: the
//! wait here is not in them.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::CallFuture;

/// The lanes of one runtime client; clones share them.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    sandboxes: Arc<Semaphore>,
    starts: Arc<Semaphore>,
}

/// Calls let in at once per lane, per CPU kernlet may use (affinity and cgroup quota included):
/// a creation also waits on I/O and on the network plugins' locks, so one per CPU would leave
/// the runtime idle.
const PER_CPU: usize = 2;

impl Gate {
    /// Lanes sized for this machine.
    pub(super) fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::with_width(PER_CPU * cpus)
    }

    /// Lanes that let in `width` calls each (at least one).
    pub(super) fn with_width(width: usize) -> Self {
        let width = width.max(1);
        Self {
            sandboxes: Arc::new(Semaphore::new(width)),
            starts: Arc::new(Semaphore::new(width)),
        }
    }

    /// `call` (a `RunPodSandbox`) once the sandbox lane lets it in.
    pub(super) fn sandbox<T: Send + 'static>(
        &self,
        call: CallFuture<'static, T>,
    ) -> CallFuture<'static, T> {
        queued(&self.sandboxes, call)
    }

    /// `call` (a `StartContainer`) once the start lane lets it in.
    pub(super) fn start<T: Send + 'static>(
        &self,
        call: CallFuture<'static, T>,
    ) -> CallFuture<'static, T> {
        queued(&self.starts, call)
    }
}

/// `call`, first polled (and so timed, its deadline running) once `lane` has a permit for it,
/// which it holds until it ends. The lanes are never closed; were one closed, the call would go
/// ahead unqueued rather than fail.
fn queued<T: Send + 'static>(
    lane: &Arc<Semaphore>,
    call: CallFuture<'static, T>,
) -> CallFuture<'static, T> {
    let lane = Arc::clone(lane);
    Box::pin(async move {
        let _permit = lane.acquire_owned().await.ok();
        call.await
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cri::CriError;

    /// A call that takes `work` once polled, under its own deadline `after` (as
    /// `Runtime::call` puts one), counting the calls in flight.
    fn call(
        in_flight: &Arc<AtomicUsize>,
        most: &Arc<AtomicUsize>,
        work: Duration,
        after: Duration,
    ) -> CallFuture<'static, ()> {
        let (in_flight, most) = (Arc::clone(in_flight), Arc::clone(most));
        Box::pin(async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let result = tokio::time::timeout(after, tokio::time::sleep(work))
                .await
                .map_err(|_| CriError::Timeout {
                    method: "RunPodSandbox",
                    after,
                });
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }

    /// Ten sandboxes of 1 s each through a lane of 4: never more than 4 in the runtime, all done
    /// in 3 s (4, 4, 2), and none times out although the last waited 2 s with a 1.5 s deadline.
    #[tokio::test(start_paused = true)]
    async fn a_lane_lets_in_its_width_and_deadlines_start_at_admission() {
        let gate = Gate::with_width(4);
        let (in_flight, most) = (Arc::default(), Arc::default());
        let started = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..10 {
            calls.spawn(gate.sandbox(call(
                &in_flight,
                &most,
                Duration::from_secs(1),
                Duration::from_millis(1500),
            )));
        }
        let results = calls.join_all().await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(most.load(Ordering::SeqCst), 4);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    /// Container starts do not wait behind a queue of sandboxes: with the sandbox lane full for
    /// 10 s, a start goes through at once.
    #[tokio::test(start_paused = true)]
    async fn starts_do_not_queue_behind_sandboxes() {
        let gate = Gate::with_width(1);
        let (in_flight, most) = (Arc::default(), Arc::default());
        let long = Duration::from_secs(10);
        let mut sandboxes = tokio::task::JoinSet::new();
        for _ in 0..3 {
            sandboxes.spawn(gate.sandbox(call(&in_flight, &most, long, long * 4)));
        }
        let start = async {
            let started = tokio::time::Instant::now();
            let result = gate
                .start(call(
                    &Arc::default(),
                    &Arc::default(),
                    Duration::from_secs(1),
                    long,
                ))
                .await;
            (result, started.elapsed())
        };
        let (sandboxes, (start, took)) = tokio::join!(sandboxes.join_all(), start);
        assert!(sandboxes.iter().all(Result::is_ok), "{sandboxes:?}");
        assert!(start.is_ok(), "{start:?}");
        assert_eq!(took, Duration::from_secs(1));
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_lane_is_never_closed_to_all() {
        assert_eq!(Gate::with_width(0).sandboxes.available_permits(), 1);
        assert!(Gate::for_this_machine().starts.available_permits() >= PER_CPU);
    }
}
