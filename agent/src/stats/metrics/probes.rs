//! `GET /metrics/probes`: upstream's prober families from what [`crate::probe::ProbeMetrics`]
//! counted: `prober_probe_total{probe_type, result, container, pod, namespace, pod_uid}` and
//! `prober_probe_duration_seconds{probe_type, container, pod, namespace}`.
use super::{Desc, Families, HistogramValue, MetricsError};
use crate::probe::{ProbeMetrics, metrics::DURATION_BOUNDS};

const TOTAL: Desc = Desc::counter(
    "prober_probe_total",
    "[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
);
const DURATION: Desc = Desc::histogram(
    "prober_probe_duration_seconds",
    "[ALPHA] Duration in seconds for a probe response.",
);

/// The text exposition of every probe's counts.
pub fn render(probes: &ProbeMetrics) -> Result<String, MetricsError> {
    let mut out = Families::default();
    for (key, series) in probes.snapshot() {
        for (result, &count) in &series.results {
            let labels = vec![
                ("probe_type", key.probe_type.to_owned()),
                ("result", (*result).to_owned()),
                ("container", key.container.clone()),
                ("pod", key.pod.clone()),
                ("namespace", key.namespace.clone()),
                ("pod_uid", key.pod_uid.clone()),
            ];
            #[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
            out.sample(&TOTAL, labels, count as f64, None);
        }
        let mut cumulative = 0;
        let value = HistogramValue {
            buckets: DURATION_BOUNDS
                .iter()
                .zip(series.buckets)
                .map(|(&bound, count)| {
                    cumulative += count;
                    (bound, cumulative)
                })
                .collect(),
            sum: series.sum,
            count: series.count,
        };
        let labels = vec![
            ("probe_type", key.probe_type.to_owned()),
            ("container", key.container.clone()),
            ("pod", key.pod.clone()),
            ("namespace", key.namespace.clone()),
        ];
        out.histogram(&DURATION, labels, &value, None);
    }
    out.encode()
}
