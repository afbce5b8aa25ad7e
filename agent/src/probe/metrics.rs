//! What `/metrics/probes` serves, recorded here and rendered by `stats::metrics::probes`:
//! upstream's `prober_probe_total{probe_type, result, container, pod, namespace, pod_uid}` and
//! `prober_probe_duration_seconds{probe_type, container, pod, namespace}` (default buckets).
use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use super::{Kind, handler::Outcome, runner::Subject};

/// Prometheus' default buckets, which upstream's probe duration histogram uses.
pub const DURATION_BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The labels of one probe of one pod container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'static str,
}

/// Counts of one probe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Attempts by `result` label: `successful`, `failed`, `unknown`.
    pub results: BTreeMap<&'static str, u64>,
    /// Non-cumulative count per [`DURATION_BOUNDS`] bound.
    pub buckets: [u64; DURATION_BOUNDS.len()],
    pub sum: f64,
    pub count: u64,
}

/// Every probe's counts, shared by the probe tasks and the server.
#[derive(Debug, Default)]
pub struct ProbeMetrics {
    series: Mutex<BTreeMap<SeriesKey, Series>>,
}

impl ProbeMetrics {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn observe(&self, kind: Kind, subject: &Subject, outcome: &Outcome, took: Duration) {
        let key = SeriesKey {
            namespace: subject.namespace.clone(),
            pod: subject.pod.clone(),
            pod_uid: subject.uid.clone(),
            container: subject.container.clone(),
            probe_type: kind.as_str(),
        };
        let seconds = took.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = series.entry(key).or_default();
        *entry.results.entry(outcome.label()).or_default() += 1;
        if let Some(i) = DURATION_BOUNDS.iter().position(|&b| seconds <= b) {
            entry.buckets[i] += 1;
        }
        entry.sum += seconds;
        entry.count += 1;
    }

    /// Drops the series of pod `uid` (its probes are gone), as upstream deletes them.
    pub fn forget(&self, uid: &str) {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| key.pod_uid != uid);
    }

    /// Every series, in label order.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(SeriesKey, Series)> {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
