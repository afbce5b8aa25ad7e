//! One probe of one container instance, as upstream's probe `worker` runs it: jitter, initial
//! delay, then one attempt per period, counted against the thresholds.
use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Probe;
use tokio_util::sync::CancellationToken;

use super::{
    Kill, Kind,
    counter::Counter,
    handler::{self, Outcome, Target},
    set::{Prober, Shared},
};
use crate::clock::Nanos;
use crate::event::{EventType, Involved, reason};

/// Who is probed, for logs and metric labels.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    /// The container, as events name it.
    pub involved: Involved,
}

pub(super) struct Runner {
    pub kind: Kind,
    pub spec: Probe,
    pub subject: Arc<Subject>,
    pub target: Arc<Target>,
    /// When the instance started (wall nanoseconds): `initialDelaySeconds` counts from here.
    pub started_at: Nanos,
    /// Whether the container has a startup probe (liveness and readiness wait for it).
    pub gated: bool,
    pub shared: Arc<Shared>,
    pub prober: Arc<Prober>,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

impl Runner {
    pub(super) async fn run(self, cancel: CancellationToken) {
        let period = seconds(self.spec.period_seconds, 10).max(Duration::from_secs(1));
        // Upstream spreads probes out only while the agent has just started (many at once).
        let mut first = if self.prober.uptime() < period {
            period.mul_f64(crate::clock::random_fraction())
        } else {
            Duration::ZERO
        };
        let delay = seconds(self.spec.initial_delay_seconds, 0);
        let running_for = Duration::from_nanos(
            u64::try_from(self.prober.wall_nanos().saturating_sub(self.started_at)).unwrap_or(0),
        );
        first = first.max(delay.saturating_sub(running_for));
        let mut counter = Counter::new(
            self.spec.success_threshold.unwrap_or(1),
            self.spec.failure_threshold.unwrap_or(3),
        );
        let mut next = tokio::time::Instant::now() + first;
        loop {
            tokio::select! {
                // Cancellation first: a late wake-up must not probe a stopping container.
                biased;
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            next += period;
            if self.gated && self.kind != Kind::Startup && !self.shared.started() {
                continue;
            }
            let begun = tokio::time::Instant::now();
            let outcome = handler::run(&self.spec, &self.target, self.prober.runtime()).await;
            if cancel.is_cancelled() {
                // The instance's probes were stopped during the attempt: no result, no series.
                return;
            }
            self.prober
                .metrics()
                .observe(self.kind, &self.subject, &outcome, begun.elapsed());
            if self.record(&outcome, &mut counter) == Some(true) {
                return;
            }
            // A slow attempt does not make the next ones pile up.
            next = next.max(tokio::time::Instant::now());
        }
    }

    /// Counts `outcome`; `Some(true)` when this probe has nothing more to do.
    fn record(&self, outcome: &Outcome, counter: &mut Counter) -> Option<bool> {
        let s = &self.subject;
        let kind = self.kind.as_str();
        if let Outcome::Failure(output) | Outcome::Warning(output) = outcome {
            let (why, word) = if outcome.passed() == Some(true) {
                (reason::PROBE_WARNING, "warning")
            } else {
                (reason::UNHEALTHY, "failed")
            };
            let output = output.trim_end();
            tracing::warn!(namespace = %s.namespace, pod = %s.pod, container = %s.container,
                probe = kind, %output, "{kind} probe {word}");
            let message = format!("{kind} probe {word}: {output}");
            let events = self.prober.events();
            events.record(s.involved.clone(), EventType::Warning, why, message);
        }
        if let Outcome::Error(error) = outcome {
            tracing::warn!(namespace = %s.namespace, pod = %s.pod, container = %s.container,
                probe = kind, %error, "{kind} probe errored; result unchanged");
            let message = format!("{kind} probe errored and resulted in unknown state: {error}");
            let events = self.prober.events();
            events.record(
                s.involved.clone(),
                EventType::Warning,
                reason::UNHEALTHY,
                message,
            );
        }
        let result = counter.observe(outcome.passed()?)?;
        let kill = Kill {
            kind: self.kind,
            grace: self
                .spec
                .termination_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        };
        match (self.kind, result) {
            (Kind::Readiness, ready) => {
                self.shared.update(|r| r.readiness = Some(ready));
                Some(false)
            }
            (Kind::Startup, true) => {
                self.shared.update(|r| r.startup = Some(true));
                Some(true)
            }
            (Kind::Liveness | Kind::Startup, false) => {
                tracing::warn!(namespace = %s.namespace, pod = %s.pod, container = %s.container,
                    "Container {} failed {} probe, will be killed", s.container, self.kind.lower());
                if self.kind == Kind::Startup {
                    self.shared.update(|r| r.startup = Some(false));
                }
                self.shared.update(|r| r.kill = Some(kill));
                // On hold until the next instance, as upstream.
                Some(true)
            }
            (Kind::Liveness, true) => Some(false),
        }
    }
}
