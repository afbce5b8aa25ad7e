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

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.wall_nanos() > 1_577_836_800_000_000_000);
    }
}
