//! The kubelet's Prometheus endpoints: `/metrics/resource` ([`resource`]), `/metrics/cadvisor`
//! ([`cadvisor`], with kernlet's eBPF extras from [`ebpf`]) and kernlet's own `/metrics`
//! ([`own`]), and the prober's `/metrics/probes` ([`probes`]).
//!
//! Exposition is the text format 0.0.4, written by the `prometheus` crate (tikv/rust-prometheus)
//! from `MetricFamily` values. That crate was chosen over `prometheus-client` because its text
//! encoder writes a sample's explicit `timestamp_ms`, which upstream puts on every
//! `/metrics/resource` and `/metrics/cadvisor` sample and metrics-server reads;
//! `prometheus-client` only writes timestamps on exemplars. The crate is used without its
//! `protobuf` feature (its plain Rust model), so no protobuf runtime comes with it.
//!
//! Families and samples are ordered as Go's `prometheus.Registry.Gather` orders them: families
//! by name, a sample's labels by name, samples by label values. A family without samples is
//! left out, and a second sample with the same labels is dropped (upstream's handler continues
//! on such errors).
pub mod cadvisor;
pub mod ebpf;
pub mod own;
pub mod probes;
pub mod resource;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::SystemTime;

use prometheus::Encoder as _;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

pub use self::own::{CertificateKind, Metrics};

/// The content type of every metrics response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("encoding metrics as text: {0}")]
    Encode(#[from] prometheus::Error),
    #[error("metrics text is not valid utf-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// A metric family's name, help and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

/// The metric types kernlet writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Desc {
    #[must_use]
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Counter,
        }
    }

    #[must_use]
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Gauge,
        }
    }

    #[must_use]
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Histogram,
        }
    }
}

/// A histogram's cumulative buckets: `(upper bound, observations <= bound)`, ascending and
/// without `+Inf` (the encoder adds it from `count`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Label pairs of one sample; sorted by name when added.
pub type Labels = Vec<(&'static str, String)>;

/// Metric families being assembled for one response.
#[derive(Debug, Default)]
pub struct Families {
    families: BTreeMap<&'static str, MetricFamily>,
}

impl Families {
    /// Adds a counter or gauge sample, optionally with a timestamp.
    pub fn sample(&mut self, desc: &Desc, labels: Labels, value: f64, time: Option<SystemTime>) {
        let mut metric = Metric::from_label(label_pairs(labels));
        match desc.kind {
            Kind::Counter => {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
            Kind::Gauge | Kind::Histogram => {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
        }
        self.push(desc, metric, time);
    }

    /// Adds a histogram sample, optionally with a timestamp.
    pub fn histogram(
        &mut self,
        desc: &Desc,
        labels: Labels,
        value: &HistogramValue,
        time: Option<SystemTime>,
    ) {
        let mut metric = Metric::from_label(label_pairs(labels));
        let mut histogram = Histogram::default();
        histogram.set_sample_count(value.count);
        histogram.set_sample_sum(value.sum);
        histogram.set_bucket(
            value
                .buckets
                .iter()
                .map(|&(bound, count)| {
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(bound);
                    bucket.set_cumulative_count(count);
                    bucket
                })
                .collect(),
        );
        metric.set_histogram(histogram);
        self.push(desc, metric, time);
    }

    fn push(&mut self, desc: &Desc, mut metric: Metric, time: Option<SystemTime>) {
        if let Some(millis) = time.and_then(unix_millis) {
            metric.set_timestamp_ms(millis);
        }
        let family = self.families.entry(desc.name).or_insert_with(|| {
            let mut family = MetricFamily::default();
            family.set_name(desc.name.to_owned());
            family.set_help(desc.help.to_owned());
            family.set_field_type(match desc.kind {
                Kind::Counter => MetricType::COUNTER,
                Kind::Gauge => MetricType::GAUGE,
                Kind::Histogram => MetricType::HISTOGRAM,
            });
            family
        });
        family.mut_metric().push(metric);
    }

    /// The families in Go's gather order, ready to encode.
    #[must_use]
    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families
            .into_values()
            .filter(|family| !family.get_metric().is_empty())
            .map(|mut family| {
                let mut metrics = family.take_metric();
                metrics.sort_by(|a, b| label_values(a).cmp(&label_values(b)));
                metrics.dedup_by(|a, b| label_values(a) == label_values(b));
                family.set_metric(metrics);
                family
            })
            .collect()
    }

    /// Encodes the families as text format 0.0.4.
    pub fn encode(self) -> Result<String, MetricsError> {
        encode(&self.into_families())
    }
}

/// Text format 0.0.4 for `families`.
pub fn encode(families: &[MetricFamily]) -> Result<String, MetricsError> {
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(families, &mut out)?;
    Ok(String::from_utf8(out)?)
}

fn label_pairs(mut labels: Labels) -> Vec<LabelPair> {
    labels.sort_by(|a, b| a.0.cmp(b.0));
    labels
        .into_iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value);
            pair
        })
        .collect()
}

fn label_values(metric: &Metric) -> Vec<&str> {
    metric.get_label().iter().map(LabelPair::value).collect()
}

/// Milliseconds since the Unix epoch; `None` before it (Prometheus would read a negative
/// timestamp, which no collector produces).
#[must_use]
pub fn unix_millis(time: SystemTime) -> Option<i64> {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// Seconds since the Unix epoch with the fraction.
#[must_use]
pub fn unix_seconds(time: SystemTime) -> f64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}
