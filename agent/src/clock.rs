//! The one place kernlet reads the wall clock, so tests can control it.
//!
//! Monotonic time is `tokio::time::Instant` everywhere (`tokio::time::pause()` controls it);
//! `std::time::Instant::now` and `SystemTime::now` are banned by clippy (`clippy.toml`) outside
//! this module. Wall time (CRI's time base: nanoseconds since the epoch) comes from a [`Clock`]:
//! [`SystemClock`] in the agent, `TestClock` in unit tests, whose wall time moves with tokio's
//! paused time.
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Nanoseconds since the Unix epoch, as CRI reports times.
pub type Nanos = i64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock nanoseconds since the epoch.
    fn wall_nanos(&self) -> Nanos;

    /// The same instant as a `SystemTime`.
    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(self.wall_nanos()).unwrap_or(0))
    }
}

/// The host's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_nanos(&self) -> Nanos {
        since_epoch(now())
    }

    fn wall(&self) -> SystemTime {
        now()
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the clock seam: the only read of the host's wall clock"
)]
fn now() -> SystemTime {
    SystemTime::now()
}

fn since_epoch(time: SystemTime) -> Nanos {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX))
}

/// The host's wall clock, shared.
#[must_use]
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The host's wall-clock time now, for code that only stamps samples and responses (stats,
/// log rotation, manifests); logic that compares times takes a [`Clock`].
#[must_use]
pub fn wall() -> SystemTime {
    now()
}

/// A fraction in [0, 1) from the standard library's random hasher keys: enough to spread
/// timers (probes, certificate renewals) apart, not for secrets.
#[must_use]
pub fn random_fraction() -> f64 {
    use std::hash::BuildHasher as _;
    let seed = std::collections::hash_map::RandomState::new();
    let bits = seed.hash_one(tokio::time::Instant::now()) >> 11;
    #[allow(clippy::cast_precision_loss)] // 53 bits: exact in an f64
    let fraction = bits as f64 / (1_u64 << 53) as f64;
    fraction
}

/// A token bucket, as client-go's `flowcontrol` limiters: `burst` tokens at most, refilled at
/// `qps` per second; rates like `kubeAPIQPS`/`kubeAPIBurst` and `eventRecordQPS`/`eventBurst`.
/// A `qps` of zero or less means no limit, as those settings define it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    /// A full bucket.
    #[must_use]
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    fn refill(&mut self, now: tokio::time::Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is there now.
    pub fn try_take(&mut self, now: tokio::time::Instant) -> bool {
        if self.qps <= 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token now, in debt if the bucket is empty; returns how long to wait before
    /// using it (the debt is paid by the refill during the wait).
    pub fn reserve(&mut self, now: tokio::time::Instant) -> Duration {
        if self.qps <= 0.0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens < 0.0 {
            Duration::from_secs_f64(-self.tokens / self.qps)
        } else {
            Duration::ZERO
        }
    }
}

/// A wall clock for unit tests: a fixed base plus the tokio time elapsed since its creation, so
/// `tokio::time::pause()`/`advance()` move wall and monotonic time together.
#[cfg(test)]
#[derive(Debug)]
pub struct TestClock {
    base: Nanos,
    start: tokio::time::Instant,
}

#[cfg(test)]
impl TestClock {
    /// Wall time starts at `base` nanoseconds since the epoch.
    #[must_use]
    pub fn new(base: Nanos) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn wall_nanos(&self) -> Nanos {
        let elapsed = Nanos::try_from(self.start.elapsed().as_nanos()).unwrap_or(Nanos::MAX);
        self.base.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn test_clock_moves_with_paused_tokio_time() {
        let clock = TestClock::new(1_000);
        assert_eq!(clock.wall_nanos(), 1_000);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.wall_nanos(), 1_000 + 3_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(2.0, 3);
        let now = tokio::time::Instant::now();
        assert!((0..3).all(|_| bucket.try_take(now)));
        assert!(!bucket.try_take(now));
        assert!(bucket.try_take(now + Duration::from_millis(500)));
        assert!(!bucket.try_take(now + Duration::from_millis(500)));
        // Never more than the burst, however long it rested.
        let later = now + Duration::from_hours(1);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
        assert!((0..100).all(|_| TokenBucket::new(0.0, 1).try_take(now)));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_reservations_in_debt_wait_for_the_rate() {
        let mut bucket = TokenBucket::new(10.0, 2);
        let now = tokio::time::Instant::now();
        let waits: Vec<Duration> = (0..4).map(|_| bucket.reserve(now)).collect();
        // Two from the burst, then 100 ms per token at 10 per second.
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(0), ms(0), ms(100), ms(200)]);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.wall_nanos() > 1_577_836_800_000_000_000);
    }
}
