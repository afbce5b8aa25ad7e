//! Resource maths on the ground floor: one amount type, a pod's and a container's parsed requests
//! and limits, the `QoS` class, and the conversions to cgroup values (CPU shares, CFS quota,
//! `cpu.weight`, `memory.high`).
//!
//! The cgroup manager, the CRI request builders, the pod status and the stats collector all need
//! the same answers; keeping them here, as pure functions of the pod spec, means each of those
//! layers imports this module and none of them imports another for arithmetic. Only `config` (for
//! [`Quantity`](crate::config::Quantity)) sits below.
//!
//! - [`Amounts`]: CPU (milli-cores), memory and ephemeral storage (bytes), pids; used for
//!   requests, limits, pod overhead, node capacity, reservations and node allocatable.
//! - [`pod`]: `AggregateContainerRequests` / `...Limits` and `spec.overhead`.
//! - [`qos`]: `GetPodQOS` / `ComputePodQOS`.
//! - [`convert`]: shares, quota, weight and `memory.high`.
pub mod convert;
pub mod pod;
pub mod qos;

pub use convert::{
    MAX_SHARES, MIN_QUOTA_US, MIN_SHARES, QUOTA_PERIOD_US, milli_cpu_to_quota, milli_cpu_to_shares,
};
pub use pod::{Resources, container_resources, pod_limits, pod_overhead, pod_requests};
pub use qos::{QosClass, compute_pod_qos, get_pod_qos};

/// Amounts of the resources kernlet does arithmetic on: CPU in milli-cores, memory and ephemeral
/// storage in bytes, a pid count; `None` when the resource is absent (not requested, not limited,
/// not known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub ephemeral_storage_bytes: Option<i64>,
    pub pids: Option<i64>,
}

impl Amounts {
    /// Adds `other` per resource (saturating); a resource either side has is kept.
    pub fn add(&mut self, other: &Self) {
        self.combine(other, i64::saturating_add);
    }

    /// The larger of the two per resource; a resource either side has is kept.
    pub fn max(&mut self, other: &Self) {
        self.combine(other, i64::max);
    }

    /// `self - other` per resource, never below zero; a resource `self` lacks stays absent.
    #[must_use]
    pub fn minus(&self, other: &Self) -> Self {
        let sub = |a: Option<i64>, b: Option<i64>| a.map(|a| (a - b.unwrap_or(0)).max(0));
        Self {
            cpu_millis: sub(self.cpu_millis, other.cpu_millis),
            memory_bytes: sub(self.memory_bytes, other.memory_bytes),
            ephemeral_storage_bytes: sub(
                self.ephemeral_storage_bytes,
                other.ephemeral_storage_bytes,
            ),
            pids: sub(self.pids, other.pids),
        }
    }

    fn combine(&mut self, other: &Self, both: fn(i64, i64) -> i64) {
        let pick = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(both(a, b)),
            (a, b) => a.or(b),
        };
        self.cpu_millis = pick(self.cpu_millis, other.cpu_millis);
        self.memory_bytes = pick(self.memory_bytes, other.memory_bytes);
        self.ephemeral_storage_bytes =
            pick(self.ephemeral_storage_bytes, other.ephemeral_storage_bytes);
        self.pids = pick(self.pids, other.pids);
    }
}

/// Why a pod's resources could not be read. The messages match what the CRI builders report for
/// the same failure, so the pod status reads the same whoever parsed first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("pod {pod}: container {container:?}: {resource} {value:?}: {reason}")]
    Container {
        pod: String,
        container: String,
        resource: String,
        value: String,
        reason: String,
    },
    #[error("pod {pod}: overhead {resource} {value:?}: {reason}")]
    Overhead {
        pod: String,
        resource: String,
        value: String,
        reason: String,
    },
    #[error("pod {pod}: the pod has no spec")]
    NoSpec { pod: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_never_goes_below_zero_and_keeps_absent_absent() {
        let capacity = Amounts {
            cpu_millis: Some(1000),
            memory_bytes: Some(100),
            pids: None,
            ..Amounts::default()
        };
        let reserved = Amounts {
            cpu_millis: Some(1500),
            memory_bytes: Some(30),
            pids: Some(5),
            ..Amounts::default()
        };
        let left = capacity.minus(&reserved);
        assert_eq!(left.cpu_millis, Some(0));
        assert_eq!(left.memory_bytes, Some(70));
        assert_eq!(left.pids, None);
    }

    #[test]
    fn add_and_max_keep_what_either_side_has() {
        let mut a = Amounts {
            cpu_millis: Some(100),
            ..Amounts::default()
        };
        let b = Amounts {
            cpu_millis: Some(i64::MAX),
            memory_bytes: Some(7),
            ..Amounts::default()
        };
        let mut peak = a;
        a.add(&b);
        assert_eq!((a.cpu_millis, a.memory_bytes), (Some(i64::MAX), Some(7)));
        peak.max(&b);
        assert_eq!(peak.cpu_millis, Some(i64::MAX));
        assert_eq!(peak.memory_bytes, Some(7));
    }
}
