//! Admission for the CRI calls that make the runtime start processes: `RunPodSandbox` (the
//! network plugins, the shim, the pause container) and `StartContainer` (runc). Each kind has
//! its own lane, which lets in a few calls at once (its width, below); the rest wait in kernlet,
//! first come first served, and a call's deadline starts when it is let in.
//!
//! Why: every pod worker acts as soon as its pod appears, so a node that starts 110 pods hands
//! the runtime 110 sandboxes at once. Much of the work is CPU time in the runtime and its
//! plugins; shared by all, every creation takes about as long as all of them, and on a slow node
//! they pass the 4 m deadline together. A retry then collides with the creation still being
//! undone ("name is reserved") and the node does not converge (the density bench at 110 pods
//! on 2 emulated CPUs, `docs/perf.md`). Queued in kernlet, a call has the runtime's attention
//! for its deadline and the first pods run after seconds rather than all after minutes.
//! Sandboxes and container starts have separate lanes so that a pod whose sandbox is ready does
//! not wait behind the next pods' sandboxes. Stops and removals are never queued: tearing down
//! is not held up by a wave of starts.
//!
//! Each lane's width follows the runtime, as a congestion window does: it starts at twice the
//! CPUs kernlet may use, grows by one whenever a call ends well inside its deadline (under a
//! quarter) while others wait, up to eight per CPU, and halves when a call takes more than half
//! its deadline or runs out of it. Why not a fixed width: on the host 4 at a time started 110
//! pods sooner than all at once, but in the slow node VM the runtime still gained from more at
//! once (both in `docs/perf.md`); the deadline is what a creation must not pass, so it is what
//! the width is steered by. A call let in before the lane last narrowed measured the old width
//! and does not narrow it again, so one slow wave halves the width once, not once per call.
//!
//! Each lane's width, the calls waiting and the calls let in are `kernlet_cri_admission_*{lane}`
//! on `/metrics` ([`Admission`]); the filesystem refresh reads the waiting calls to put off
//! `ListContainerStats` while pods start.
//!
//! Upstream's kubelet bounds only image pulls (`maxParallelImagePulls`); its `runtime_ops`
//! timings are the runtime's alone, as kernlet's `kernlet_cri_request_duration_seconds` are: the
//! wait here is not in them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::CallFuture;

/// The lanes of one runtime client; clones share them.
#[derive(Debug, Clone)]
pub struct Gate {
    sandboxes: Arc<Lane>,
    starts: Arc<Lane>,
}

/// Calls let in at once per lane at first, per CPU kernlet may use (affinity and cgroup quota
/// included): a creation also waits on I/O and on the network plugins' locks, so one per CPU
/// would leave the runtime idle.
const FIRST_PER_CPU: usize = 2;

/// The widest a lane grows, per CPU: the kubelet's unbounded creations in the slow node VM had
/// about 16 per CPU in flight, each taking more than half the deadline.
const MOST_PER_CPU: usize = 8;

impl Gate {
    /// Lanes sized for this machine.
    pub(super) fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(FIRST_PER_CPU * cpus, MOST_PER_CPU * cpus)
    }

    /// Lanes that let in `first` calls each, growing to `most` (both at least one).
    #[must_use]
    pub fn new(first: usize, most: usize) -> Self {
        Self {
            sandboxes: Arc::new(Lane::new("sandbox", first, most)),
            starts: Arc::new(Lane::new("start", first, most)),
        }
    }

    /// What each lane holds now, sandboxes first.
    #[must_use]
    pub fn lanes(&self) -> [LaneLoad; 2] {
        [self.sandboxes.load(), self.starts.load()]
    }

    /// Whether calls wait in any lane: the runtime is busy starting pods.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.lanes().iter().any(|lane| lane.waiting > 0)
    }

    /// `call` (a `RunPodSandbox` with `deadline`) once the sandbox lane lets it in.
    pub(super) fn sandbox<T: Send + 'static>(
        &self,
        call: CallFuture<'static, T>,
        deadline: Duration,
    ) -> CallFuture<'static, T> {
        Lane::admit(&self.sandboxes, call, deadline)
    }

    /// `call` (a `StartContainer` with `deadline`) once the start lane lets it in.
    pub(super) fn start<T: Send + 'static>(
        &self,
        call: CallFuture<'static, T>,
        deadline: Duration,
    ) -> CallFuture<'static, T> {
        Lane::admit(&self.starts, call, deadline)
    }
}

/// One lane at one moment, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLoad {
    /// `sandbox` or `start`.
    pub lane: &'static str,
    /// Calls let in at once.
    pub width: usize,
    /// Calls waiting to be let in.
    pub waiting: usize,
    /// Calls let in and not yet ended (above the width for a while after a narrowing).
    pub in_flight: usize,
}

/// One call counted in `0` while it lives: a caller that drops the call (its pod worker
/// cancelled) takes it out of the count too.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One kind of call's admission: permits for the calls let in, and the width they follow.
#[derive(Debug)]
struct Lane {
    name: &'static str,
    permits: Arc<Semaphore>,
    /// Calls waiting for a permit: a lane only widens for calls that would use it.
    waiting: AtomicUsize,
    in_flight: AtomicUsize,
    width: Mutex<Width>,
    most: usize,
}

#[derive(Debug)]
struct Width {
    now: usize,
    /// Permits still to take out after a narrowing: held by calls in flight, each is forgotten
    /// as its call ends instead of going back to the lane.
    owed: usize,
    /// When the lane last narrowed.
    narrowed: Option<Instant>,
}

/// What one call's time says about the lane's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Widen,
    Keep,
    Narrow,
}

impl Verdict {
    /// A call that took more than half its deadline (or ran out of it) narrows; one that ended
    /// well inside it widens.
    fn of(took: Duration, deadline: Duration, succeeded: bool) -> Self {
        if took > deadline / 2 {
            Self::Narrow
        } else if succeeded && took < deadline / 4 {
            Self::Widen
        } else {
            Self::Keep
        }
    }
}

impl Lane {
    fn new(name: &'static str, first: usize, most: usize) -> Self {
        let first = first.max(1);
        Self {
            name,
            permits: Arc::new(Semaphore::new(first)),
            waiting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            width: Mutex::new(Width {
                now: first,
                owed: 0,
                narrowed: None,
            }),
            most: most.max(first),
        }
    }

    /// `call`, first polled (and so timed, its deadline running) once the lane has a permit
    /// for it, which it holds until it ends. The semaphore is never closed; were it closed,
    /// the call would go ahead unqueued rather than fail.
    fn admit<T: Send + 'static>(
        lane: &Arc<Self>,
        call: CallFuture<'static, T>,
        deadline: Duration,
    ) -> CallFuture<'static, T> {
        let lane = Arc::clone(lane);
        Box::pin(async move {
            let waiting = Counted::new(&lane.waiting);
            let permit = Arc::clone(&lane.permits).acquire_owned().await.ok();
            drop(waiting);
            let in_flight = Counted::new(&lane.in_flight);
            let admitted = Instant::now();
            let result = call.await;
            drop(in_flight);
            let verdict = Verdict::of(admitted.elapsed(), deadline, result.is_ok());
            lane.ended(permit, admitted, verdict);
            result
        })
    }

    /// Adjusts the width after a call let in at `admitted` ended, then gives its permit back
    /// or, when the lane owes permits, forgets it.
    fn ended(&self, permit: Option<OwnedSemaphorePermit>, admitted: Instant, verdict: Verdict) {
        let mut width = self.width.lock().unwrap_or_else(PoisonError::into_inner);
        match verdict {
            Verdict::Narrow if width.narrowed.is_none_or(|at| admitted >= at) => {
                let to = (width.now / 2).max(1);
                let cut = width.now - to;
                width.now = to;
                width.narrowed = Some(Instant::now());
                width.owed += cut - self.permits.forget_permits(cut);
                tracing::info!(
                    lane = self.name,
                    width = to,
                    "a cri call took more than half its deadline; admitting fewer at a time"
                );
            }
            Verdict::Widen
                if width.owed == 0
                    && width.now < self.most
                    && self.waiting.load(Ordering::SeqCst) > 0 =>
            {
                width.now += 1;
                self.permits.add_permits(1);
                tracing::debug!(lane = self.name, width = width.now, "cri admission widened");
            }
            _ => {}
        }
        if width.owed > 0
            && let Some(permit) = permit
        {
            permit.forget();
            width.owed -= 1;
        }
    }

    /// Calls let in at once now.
    fn width(&self) -> usize {
        self.width
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now
    }

    fn load(&self) -> LaneLoad {
        LaneLoad {
            lane: self.name,
            width: self.width(),
            waiting: self.waiting.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cri::CriError;

    /// Counts of the calls in the runtime: now and the most at once.
    #[derive(Default, Clone)]
    struct Runtime {
        in_flight: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Runtime {
        /// A call that takes `work` once polled, under its own deadline `after` (as
        /// `Runtime::call` puts one).
        fn call(&self, work: Duration, after: Duration) -> CallFuture<'static, ()> {
            let this = self.clone();
            Box::pin(async move {
                let now = this.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                this.most.fetch_max(now, Ordering::SeqCst);
                let result = tokio::time::timeout(after, tokio::time::sleep(work))
                    .await
                    .map_err(|_| CriError::Timeout {
                        method: "RunPodSandbox",
                        after,
                    });
                this.in_flight.fetch_sub(1, Ordering::SeqCst);
                result
            })
        }

        fn most(&self) -> usize {
            self.most.load(Ordering::SeqCst)
        }
    }

    /// `count` sandboxes of `work` each with deadline `after`, all handed to `gate` at once;
    /// how long until all ended.
    async fn sandboxes(
        gate: &Gate,
        runtime: &Runtime,
        count: usize,
        work: Duration,
        after: Duration,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..count {
            calls.spawn(gate.sandbox(runtime.call(work, after), after));
        }
        let results = calls.join_all().await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        started.elapsed()
    }

    /// Ten sandboxes of 1 s each through a lane of 4: never more than 4 in the runtime, all done
    /// in 3 s (4, 4, 2), and none times out although the last waited 2 s with a 2.5 s deadline.
    #[tokio::test(start_paused = true)]
    async fn a_lane_lets_in_its_width_and_deadlines_start_at_admission() {
        let (gate, runtime) = (Gate::new(4, 4), Runtime::default());
        let took = sandboxes(
            &gate,
            &runtime,
            10,
            Duration::from_secs(1),
            Duration::from_millis(2500),
        )
        .await;
        assert_eq!(runtime.most(), 4);
        assert_eq!(took, Duration::from_secs(3));
    }

    /// Calls that end well inside their deadline while others wait widen the lane, up to its
    /// most: 40 calls of 1 s from a width of 2 run 8 at once and end far sooner than 20 s.
    #[tokio::test(start_paused = true)]
    async fn a_lane_widens_while_calls_end_well_inside_their_deadline() {
        let (gate, runtime) = (Gate::new(2, 8), Runtime::default());
        let took = sandboxes(
            &gate,
            &runtime,
            40,
            Duration::from_secs(1),
            Duration::from_mins(1),
        )
        .await;
        assert_eq!(runtime.most(), 8);
        assert_eq!(gate.sandboxes.width(), 8);
        assert!(took <= Duration::from_secs(8), "{took:?}");
        assert_eq!(gate.starts.width(), 2, "the other lane keeps its width");
    }

    /// Calls that take more than half their deadline halve the width once per wave: 16 calls
    /// of 40 s with a 60 s deadline from a width of 8 run 8, 4, 2, 1 and 1 at a time.
    #[tokio::test(start_paused = true)]
    async fn a_lane_narrows_once_per_slow_wave() {
        let (gate, runtime) = (Gate::new(8, 8), Runtime::default());
        let took = sandboxes(
            &gate,
            &runtime,
            16,
            Duration::from_secs(40),
            Duration::from_mins(1),
        )
        .await;
        assert_eq!(runtime.most(), 8);
        assert_eq!(gate.sandboxes.width(), 1);
        assert_eq!(took, Duration::from_secs(5 * 40));
    }

    /// A call that runs out of its deadline narrows the lane, and the permits it owes are taken
    /// back as calls end, so the lane is never wider than its width.
    #[tokio::test(start_paused = true)]
    async fn a_timeout_narrows_and_the_lane_keeps_its_new_width() {
        let (gate, runtime) = (Gate::new(4, 4), Runtime::default());
        let after = Duration::from_secs(10);
        let first = tokio::spawn(gate.sandbox(runtime.call(Duration::from_secs(30), after), after));
        let mut quick = tokio::task::JoinSet::new();
        for _ in 0..3 {
            quick.spawn(gate.sandbox(runtime.call(Duration::from_secs(20), after * 4), after * 4));
        }
        assert!(matches!(
            first.await.unwrap(),
            Err(CriError::Timeout { .. })
        ));
        assert_eq!(gate.sandboxes.width(), 2);
        quick.join_all().await;
        let later = Runtime::default();
        sandboxes(
            &gate,
            &later,
            6,
            Duration::from_secs(1),
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(later.most(), 2);
    }

    /// Container starts do not wait behind a queue of sandboxes: with the sandbox lane full for
    /// 10 s, a start goes through at once.
    #[tokio::test(start_paused = true)]
    async fn starts_do_not_queue_behind_sandboxes() {
        let gate = Gate::new(1, 1);
        let runtime = Runtime::default();
        let long = Duration::from_secs(10);
        let start = async {
            let started = tokio::time::Instant::now();
            let call = Runtime::default().call(Duration::from_secs(1), long);
            let result = gate.start(call, long).await;
            (result, started.elapsed())
        };
        let (sandboxes, (start, took)) =
            tokio::join!(sandboxes(&gate, &runtime, 3, long, long * 4), start);
        assert_eq!(sandboxes, long * 3);
        assert!(start.is_ok(), "{start:?}");
        assert_eq!(took, Duration::from_secs(1));
        assert_eq!(runtime.most(), 1);
    }

    /// A lane reports its width, the calls waiting and those let in; a waiting call its caller
    /// dropped no longer counts, and a lane with nothing waiting is not busy.
    #[tokio::test(start_paused = true)]
    async fn a_lane_reports_its_load_and_dropped_calls_leave_it() {
        let (gate, runtime) = (Gate::new(2, 2), Runtime::default());
        let long = Duration::from_secs(10);
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..5 {
            calls.spawn(gate.sandbox(runtime.call(long, long * 4), long * 4));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut dropped = gate.sandbox(runtime.call(long, long * 4), long * 4);
        let pending = tokio::time::timeout(Duration::from_millis(1), &mut dropped).await;
        assert!(pending.is_err(), "the sixth call waits");
        let load = |waiting, in_flight| LaneLoad {
            lane: "sandbox",
            width: 2,
            waiting,
            in_flight,
        };
        assert_eq!(gate.lanes()[0], load(4, 2));
        assert!(gate.busy());
        drop(dropped);
        assert_eq!(gate.lanes()[0], load(3, 2));
        assert_eq!(gate.lanes()[1].lane, "start");
        calls.join_all().await;
        assert_eq!(gate.lanes()[0], load(0, 0));
        assert!(!gate.busy());
    }

    #[test]
    fn a_lane_is_never_closed_to_all() {
        let gate = Gate::new(0, 0);
        assert_eq!(gate.sandboxes.permits.available_permits(), 1);
        assert_eq!(gate.sandboxes.most, 1);
        let here = Gate::for_this_machine();
        assert!(here.starts.permits.available_permits() >= FIRST_PER_CPU);
        assert!(here.starts.most >= MOST_PER_CPU);
    }

    #[test]
    fn a_verdict_reads_the_time_against_the_deadline() {
        let deadline = Duration::from_secs(100);
        let of = |secs, ok| Verdict::of(Duration::from_secs(secs), deadline, ok);
        assert_eq!(of(10, true), Verdict::Widen);
        assert_eq!(of(10, false), Verdict::Keep, "a quick failure says nothing");
        assert_eq!(of(40, true), Verdict::Keep);
        assert_eq!(of(51, true), Verdict::Narrow);
        assert_eq!(of(100, false), Verdict::Narrow);
    }
}
