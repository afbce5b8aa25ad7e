//! The arithmetic from Kubernetes resources to cgroup v2 values, after upstream:
//!
//! - [`milli_cpu_to_shares`] / [`milli_cpu_to_quota`]: `MilliCPUToShares` (`pkg/kubelet/cm`,
//!   clamped to `[2, 262144]`) and `milliCPUToQuota` (`kuberuntime/helpers_linux.go`, 1 ms
//!   minimum).
//! - `cpu.weight` from CPU shares: the KEP-2254 mapping runc 1.1 and libcontainer's
//!   `ConvertCPUSharesToCgroupV2Value` use, `1 + (shares - 2) * 9999 / 262142` (shares 2 -> 1,
//!   1024 -> 39, 262144 -> 10000). Newer runc (>= 1.3.2) switched to a logarithmic mapping
//!   (1024 -> 100); kernlet keeps the one the node's runtime applies to container cgroups, so pod
//!   and container weights stay on one scale.
//! - `cpu.max`: `"<quota> <period>"` or `"max <period>"` (libcontainer's `fs2` `setCpu`).
//! - `memory.high` under `MemoryQoS` (KEP-2570, `kuberuntime_container_linux.go`):
//!   `floor((request + factor * (limit - request)) / page) * page`, where the limit is the
//!   container's, else node allocatable memory; set only above the request.
/// The kernel's minimum `cpu.shares` (and what a zero request gets).
pub const MIN_SHARES: i64 = 2;
/// The kernel's maximum `cpu.shares`.
pub const MAX_SHARES: i64 = 262_144;
pub const SHARES_PER_CPU: i64 = 1024;
pub const MILLI_CPU_PER_CPU: i64 = 1000;
/// The default CFS period: 100 ms.
pub const QUOTA_PERIOD_US: i64 = 100_000;
/// The smallest CFS quota upstream sets: 1 ms.
pub const MIN_QUOTA_US: i64 = 1000;

/// The kernel's `cpu.weight` range.
pub const MIN_WEIGHT: u64 = 1;
pub const MAX_WEIGHT: u64 = 10_000;
/// The page size `memory.high` is rounded down to (upstream uses `os.Getpagesize()`; 4 KiB on
/// every architecture kernlet runs on).
pub const PAGE_SIZE: u64 = 4096;

/// CPU milli-cores to `cpu.shares`: `milli * 1024 / 1000`, clamped to `[2, 262144]`; 0 gives 2.
#[must_use]
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_CPU_PER_CPU).clamp(MIN_SHARES, MAX_SHARES)
}

/// CPU milli-cores to a CFS quota over `period_us`: `milli * period / 1000`, at least 1 ms; 0
/// (no limit) gives 0, which the runtime reads as unlimited.
#[must_use]
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period_us) / MILLI_CPU_PER_CPU).max(MIN_QUOTA_US)
}

/// `cpu.shares` (cgroup v1) to `cpu.weight` (cgroup v2); 0 (unset) stays 0.
#[must_use]
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let (min, max) = (MIN_SHARES as u64, MAX_SHARES as u64);
    let shares = shares.clamp(min, max);
    MIN_WEIGHT + (shares - min) * (MAX_WEIGHT - MIN_WEIGHT) / (max - min)
}

/// A CFS bandwidth limit as `cpu.max` spells it; `None` quota is `max` (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

impl std::fmt::Display for CpuMax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quota_us {
            Some(quota) => write!(f, "{quota} {}", self.period_us),
            None => write!(f, "max {}", self.period_us),
        }
    }
}

/// `memory.high` for a container or pod with memory `request` and `limit` (the limit, or node
/// allocatable memory when there is none), throttled at `factor` of the way from request to limit;
/// `None` when the result would not exceed the request (upstream then leaves it unset).
#[must_use]
pub fn memory_high(request: u64, limit: u64, factor: f64) -> Option<u64> {
    let request_f = request as f64;
    let high = (request_f + (limit as f64 - request_f) * factor).floor();
    let pages = (high / PAGE_SIZE as f64).floor();
    if !pages.is_finite() || pages <= 0.0 {
        return None;
    }
    let high = (pages as u64).saturating_mul(PAGE_SIZE);
    (high > request).then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shares_follow_upstream_table() {
        // (milli-cores, shares) from upstream's MilliCPUToShares tests and the clamp bounds.
        let cases = [
            (0, 2),
            (1, 2),
            (2, 2),
            (3, 3),
            (10, 10),
            (100, 102),
            (250, 256),
            (500, 512),
            (1000, 1024),
            (1500, 1536),
            (256_000, 262_144),
            (300_000, 262_144),
            (-5, 2),
        ];
        for (milli, shares) in cases {
            assert_eq!(milli_cpu_to_shares(milli), shares, "{milli}m");
        }
    }

    #[test]
    fn quota_follows_upstream_table() {
        // (milli-cores, period, quota) from upstream's milliCPUToQuota tests.
        let cases = [
            (0, 100_000, 0),
            (5, 100_000, 1000),
            (9, 100_000, 1000),
            (10, 100_000, 1000),
            (200, 100_000, 20_000),
            (500, 100_000, 50_000),
            (1000, 100_000, 100_000),
            (1500, 100_000, 150_000),
            (1500, 50_000, 75_000),
            (10, 50_000, 1000),
        ];
        for (milli, period, quota) in cases {
            assert_eq!(
                milli_cpu_to_quota(milli, period),
                quota,
                "{milli}m/{period}"
            );
        }
    }

    #[test]
    fn weights_match_the_kep_2254_table() {
        // Values libcontainer's ConvertCPUSharesToCgroupV2Value gives.
        for (shares, weight) in [
            (0, 0),
            (1, 1),
            (2, 1),
            (3, 1),
            (102, 4),
            (1024, 39),
            (2048, 79),
            (262_144, 10_000),
            (1_000_000, 10_000),
        ] {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn best_effort_gets_the_minimum_weight() {
        assert_eq!(shares_to_weight(milli_cpu_to_shares(0) as u64), MIN_WEIGHT);
    }

    #[test]
    fn cpu_max_spells_unlimited_as_max() {
        let limited = CpuMax {
            quota_us: Some(20_000),
            period_us: 100_000,
        };
        assert_eq!(limited.to_string(), "20000 100000");
        let unlimited = CpuMax {
            quota_us: None,
            period_us: 100_000,
        };
        assert_eq!(unlimited.to_string(), "max 100000");
    }

    #[test]
    fn memory_high_follows_kep_2570() {
        // 64Mi request, 128Mi limit, 0.9: 64Mi + 0.9 * 64Mi, rounded down to a page.
        let mi = 1 << 20;
        let high = memory_high(64 * mi, 128 * mi, 0.9).expect("above the request");
        let exact = 64 * mi + (64 * mi * 9) / 10;
        assert_eq!(high, exact / PAGE_SIZE * PAGE_SIZE);
        // No room above the request: unset.
        assert_eq!(memory_high(64 * mi, 64 * mi, 0.9), None);
        // No request: a fraction of the limit.
        assert_eq!(memory_high(0, 100 * mi, 0.5), Some(50 * mi));
    }

    proptest! {
        #[test]
        fn shares_match_formula(milli in 0_i64..10_000_000) {
            let expected = if milli == 0 {
                2
            } else {
                (milli * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
            };
            prop_assert_eq!(milli_cpu_to_shares(milli), expected);
            prop_assert!((MIN_SHARES..=MAX_SHARES).contains(&milli_cpu_to_shares(milli)));
        }

        #[test]
        fn quota_matches_formula(milli in 0_i64..10_000_000, period in 1000_i64..1_000_000) {
            let quota = milli_cpu_to_quota(milli, period);
            if milli == 0 {
                prop_assert_eq!(quota, 0);
            } else {
                prop_assert_eq!(quota, (milli * period / 1000).max(MIN_QUOTA_US));
            }
        }

        #[test]
        fn weight_is_monotonic_and_in_range(a in 2_u64..=262_144, b in 2_u64..=262_144) {
            let (wa, wb) = (shares_to_weight(a), shares_to_weight(b));
            prop_assert!((MIN_WEIGHT..=MAX_WEIGHT).contains(&wa));
            if a <= b {
                prop_assert!(wa <= wb);
            }
        }

        #[test]
        fn weight_matches_the_formula_in_wide_arithmetic(milli in 0_i64..=1_000_000) {
            let shares = milli_cpu_to_shares(milli) as u64;
            let expected = 1 + (u128::from(shares) - 2) * 9999 / 262_142;
            prop_assert_eq!(u128::from(shares_to_weight(shares)), expected);
        }

        #[test]
        fn memory_high_is_page_aligned_between_request_and_limit(
            request in 0_u64..(64_u64 << 30),
            extra in 0_u64..(64_u64 << 30),
            factor in 0.01_f64..=1.0,
        ) {
            let limit = request + extra;
            if let Some(high) = memory_high(request, limit, factor) {
                prop_assert_eq!(high % PAGE_SIZE, 0);
                prop_assert!(high > request);
                prop_assert!(high <= limit);
                // Exactly upstream's expression in f64.
                let upstream = ((request as f64 + (limit as f64 - request as f64) * factor)
                    / PAGE_SIZE as f64).floor() as u64 * PAGE_SIZE;
                prop_assert_eq!(high, upstream);
            }
        }
    }
}
