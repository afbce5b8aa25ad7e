//! The kubelet Summary API (`GET /stats/summary`): upstream's
//! `k8s.io/kubelet/pkg/apis/stats/v1alpha1` types ([`types`]), their construction from
//! [`crate::stats::model`] samples ([`convert`]), and the JSON encoding upstream's handler
//! writes (`pkg/kubelet/server/stats/handler.go`: go-restful's pretty printer, one-space
//! indent, no trailing newline). Go also escapes `<`, `>` and `&` inside strings; `serde_json`
//! does not, which changes no value (no name served here can hold them in practice).
//!
//! `?only_cpu_and_memory=true` is upstream's `GetCPUAndMemoryStats`
//! (`pkg/kubelet/server/stats/summary.go`): node name, start time, CPU, memory and swap for the
//! node, its system containers, every pod and every container; no I/O, network, filesystems,
//! volumes, rlimits or process counts ([`Summary::cpu_and_memory_only`]).
pub mod convert;
pub mod types;

#[cfg(test)]
pub(crate) mod testdata;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::types::*;

/// Why stats cannot be served; upstream answers `/stats/summary` with
/// `500 Internal Error: <this>` and sets `resource_scrape_error` / `container_scrape_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    #[error("no stats have been collected yet")]
    NotCollected,
    #[error("failed to get {what}: {reason}")]
    Unavailable { what: &'static str, reason: String },
}

/// Go's `metav1.Time` on the wire: RFC 3339 in UTC with whole seconds
/// (`2006-01-02T15:04:05Z`), and `null` for the zero time (`None`). The full precision is
/// kept in memory: `/metrics/resource` timestamps its samples in milliseconds from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub Option<SystemTime>);

impl Time {
    #[must_use]
    pub fn new(time: SystemTime) -> Self {
        Self(Some(time))
    }

    /// Milliseconds since the Unix epoch (negative before it), as Prometheus timestamps are.
    #[must_use]
    pub fn unix_millis(&self) -> Option<i64> {
        let time = self.0?;
        Some(match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// Seconds since the Unix epoch with the fraction, as Go's `float64(t.UnixNano()) / 1e9`.
    #[must_use]
    pub fn unix_seconds_f64(&self) -> Option<f64> {
        let time = self.0?;
        Some(match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        })
    }
}

impl From<SystemTime> for Time {
    fn from(time: SystemTime) -> Self {
        Self(Some(time))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(time) = self.0 else {
            return serializer.serialize_none();
        };
        // Whole seconds, rounded towards the past as Go's formatting truncates.
        let seconds = match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).map_err(serde::ser::Error::custom)?,
            Err(before) => {
                let before = before.duration();
                let whole = i64::try_from(before.as_secs()).map_err(serde::ser::Error::custom)?;
                -whole - i64::from(before.subsec_nanos() > 0)
            }
        };
        let stamp = Timestamp::from_second(seconds).map_err(serde::ser::Error::custom)?;
        serializer.collect_str(&stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(Self(None));
        };
        let stamp: Timestamp = text.parse().map_err(serde::de::Error::custom)?;
        let seconds = stamp.as_second();
        let nanos = u32::try_from(stamp.subsec_nanosecond()).unwrap_or(0);
        let time = if seconds >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(seconds.unsigned_abs(), nanos)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
                + Duration::from_nanos(u64::from(nanos))
        };
        Ok(Self(Some(time)))
    }
}

/// The response body upstream writes for a summary.
pub fn encode(summary: &Summary) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    summary.serialize(&mut serializer)?;
    Ok(out)
}

impl Summary {
    /// What upstream's `GetCPUAndMemoryStats` returns: see the module doc.
    #[must_use]
    pub fn cpu_and_memory_only(&self) -> Summary {
        Summary {
            node: NodeStats {
                node_name: self.node.node_name.clone(),
                system_containers: self
                    .node
                    .system_containers
                    .iter()
                    .map(ContainerStats::cpu_and_memory_only)
                    .collect(),
                start_time: self.node.start_time,
                cpu: self.node.cpu.clone(),
                memory: self.node.memory.clone(),
                swap: self.node.swap.clone(),
                ..NodeStats::default()
            },
            pods: self
                .pods
                .iter()
                .map(|pod| PodStats {
                    pod_ref: pod.pod_ref.clone(),
                    start_time: pod.start_time,
                    containers: pod
                        .containers
                        .iter()
                        .map(ContainerStats::cpu_and_memory_only)
                        .collect(),
                    cpu: pod.cpu.clone(),
                    memory: pod.memory.clone(),
                    swap: pod.swap.clone(),
                    ..PodStats::default()
                })
                .collect(),
        }
    }
}

impl ContainerStats {
    /// Name, start time, CPU, memory and swap (upstream's
    /// `cadvisorInfoToContainerCPUAndMemoryStats`).
    #[must_use]
    pub fn cpu_and_memory_only(&self) -> ContainerStats {
        ContainerStats {
            name: self.name.clone(),
            start_time: self.start_time,
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            swap: self.swap.clone(),
            ..ContainerStats::default()
        }
    }
}
