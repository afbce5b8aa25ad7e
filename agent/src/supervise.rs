//! Supervision of long-lived tasks: a task that panics or returns while kernlet is not shutting
//! down is logged with its name (and pod, for workers), counted in
//! `kernlet_task_restarts_total{task}`, and started again after a capped exponential backoff.
//! Nothing a task does can leave kernlet running without it, silently.
//!
//! Also the test-only fault hook ([`Faults`], from `KERNLET_FAULT_INJECT`), through which the
//! host tier proves that a panicking pod worker is replaced and its pod managed again.
use std::{
    any::Any,
    collections::BTreeMap,
    future::Future,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// First and longest pause before a failed task is started again.
pub const RESTART_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(30));
/// A task that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_mins(1);

/// When a periodic task last completed a round: what `/healthz` judges the task's liveness by
/// (upstream's `syncloop` check).
#[derive(Debug)]
pub struct Heartbeat {
    started: tokio::time::Instant,
    /// Milliseconds after `started` of the last beat; 0 before the first.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// A round completed now.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// How long since the last beat (since creation before the first).
    #[must_use]
    pub fn since(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Restarts per task name, for `/metrics`.
#[derive(Debug, Default)]
pub struct TaskRestarts {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl TaskRestarts {
    /// Counts one restart of `task`.
    pub fn record(&self, task: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(task)
            .or_default() += 1;
    }

    /// Every task that was restarted, with its count.
    #[must_use]
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(task, count)| (*task, *count))
            .collect()
    }
}

/// The pause after `failures` failures in a row: 100 ms doubling, capped at 30 s.
#[must_use]
pub fn backoff(failures: u32) -> Duration {
    let (first, cap) = RESTART_BACKOFF;
    first
        .checked_mul(2_u32.saturating_pow(failures.saturating_sub(1)))
        .map_or(cap, |d| d.min(cap))
}

/// What a panic carried, as text.
#[must_use]
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}

/// Runs the task `make` builds until `cancel` fires, building and starting it again whenever it
/// panics or returns early.
pub async fn supervise<F, Fut>(
    task: &'static str,
    restarts: std::sync::Arc<TaskRestarts>,
    cancel: CancellationToken,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut failures = 0;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::spawn(make()).await;
        if cancel.is_cancelled() {
            return;
        }
        match outcome {
            Ok(()) => tracing::error!(task, "task ended while kernlet runs; restarting it"),
            Err(error) if error.is_panic() => {
                let message = panic_message(&*error.into_panic());
                tracing::error!(task, panic = %message, "task panicked; restarting it");
            }
            Err(error) => tracing::error!(task, %error, "task was cancelled; restarting it"),
        }
        restarts.record(task);
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff(failures)) => {}
        }
    }
}

/// Faults injected for tests through `KERNLET_FAULT_INJECT` (comma-separated):
/// `worker-panic=<pod name>` makes the worker of that pod panic once, 2 s into its life;
/// `no-task-events` makes the PLEG ignore containerd's task events (so the pidfd route is tested
/// against containerd). Not for production use; unknown entries are logged and ignored.
#[derive(Debug, Default)]
pub struct Faults {
    worker_panic: Option<String>,
    fired: AtomicBool,
    no_task_events: bool,
}

impl Faults {
    /// The faults `spec` (the variable's value) asks for.
    #[must_use]
    pub fn parse(spec: &str) -> Self {
        let mut faults = Self::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Some(("worker-panic", pod)) = entry.split_once('=') {
                faults.worker_panic = Some(pod.to_owned());
            } else if entry == "no-task-events" {
                tracing::warn!("fault injection: containerd's task events are ignored");
                faults.no_task_events = true;
            } else {
                tracing::warn!(entry, "unknown fault in KERNLET_FAULT_INJECT ignored");
            }
        }
        if let Some(pod) = &faults.worker_panic {
            tracing::warn!(pod, "fault injection: this pod's worker will panic once");
        }
        faults
    }

    /// True when containerd's task events are to be ignored.
    #[must_use]
    pub fn no_task_events(&self) -> bool {
        self.no_task_events
    }

    /// True exactly once, for the first worker of pod `name` when a panic is asked for it.
    pub fn take_worker_panic(&self, name: Option<&str>) -> bool {
        self.worker_panic
            .as_deref()
            .is_some_and(|p| Some(p) == name)
            && !self.fired.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let pauses: Vec<u128> = (1..=12).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            pauses,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        assert_eq!(backoff(u32::MAX), RESTART_BACKOFF.1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_counted_and_stops_on_cancel() {
        let restarts = Arc::new(TaskRestarts::default());
        let cancel = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let stop = cancel.clone();
        let supervisor = tokio::spawn(supervise(
            "demo",
            restarts.clone(),
            cancel.clone(),
            move || {
                let runs = counted.clone();
                let stop = stop.clone();
                async move {
                    match runs.fetch_add(1, Ordering::Relaxed) {
                        0 => panic!("first run fails"),
                        1 => {} // returns early: also a failure
                        _ => stop.cancelled().await,
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        assert_eq!(restarts.counts(), [("demo", 2)]);
        cancel.cancel();
        supervisor.await.unwrap();
        assert_eq!(restarts.counts(), [("demo", 2)], "a shutdown is no restart");
    }

    #[test]
    fn a_worker_panic_fires_once_for_its_pod() {
        let faults = Faults::parse("worker-panic=web, bogus, no-task-events");
        assert!(faults.no_task_events());
        assert!(!Faults::default().no_task_events());
        assert!(!faults.take_worker_panic(Some("db")));
        assert!(faults.take_worker_panic(Some("web")));
        assert!(!faults.take_worker_panic(Some("web")));
        assert!(!Faults::default().take_worker_panic(Some("web")));
    }
}
