//! Restart backoff per container, with the semantics of upstream's `flowcontrol.Backoff` as the
//! kubelet uses it (initial 10 s, doubling, capped at 300 s; an entry untouched for twice the cap
//! is forgotten, so a container that ran 10 minutes restarts without delay again).
use std::{collections::HashMap, time::Duration};

use super::state::{Nanos, Waiting};

/// What a worker remembers between rounds (all of it recoverable: losing it on a restart only
/// resets backoff timers, as upstream's in-memory backoff does). Kept here, beside the backoff it
/// mostly holds, so the worker and the executor both use it without importing each other.
#[derive(Debug, Default)]
pub struct Memory {
    pub restarts: Backoff,
    pub pulls: Backoff,
    pub waiting: HashMap<String, Waiting>,
    /// Earliest time a waiting container may be retried (image pull backoff).
    pub retry_at: Option<Nanos>,
    /// Garbage (container or sandbox IDs) whose removal failed, and when to try it again.
    pub garbage_retry: HashMap<String, Nanos>,
}

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_mins(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    delay: Duration,
    last_update: Nanos,
}

/// Backoff entries keyed by a stable container key (pod uid, name and spec hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

fn nanos(d: Duration) -> Nanos {
    Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX)
}

impl Backoff {
    /// When the container that finished at `finished_at` may restart, if it is still backing off.
    #[must_use]
    pub fn blocked_until(&self, key: &str, finished_at: Nanos, now: Nanos) -> Option<Nanos> {
        let entry = self.entries.get(key)?;
        if expired(entry, now) {
            return None;
        }
        let until = finished_at.saturating_add(nanos(entry.delay));
        (now < until).then_some(until)
    }

    /// When `key` may be tried again, counting from its last failure (upstream's
    /// `IsInBackOffSinceUpdate`, used for image pulls), if it is still backing off.
    #[must_use]
    pub fn blocked_since_update(&self, key: &str, now: Nanos) -> Option<Nanos> {
        let entry = self.entries.get(key)?;
        self.blocked_until(key, entry.last_update, now)
    }

    /// Records a restart at `now`: the next delay doubles (or starts at [`INITIAL`]).
    pub fn next(&mut self, key: &str, now: Nanos) {
        let delay = match self.entries.get(key) {
            Some(entry) if !expired(entry, now) => (entry.delay * 2).min(MAX),
            _ => INITIAL,
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                delay,
                last_update: now,
            },
        );
    }

    /// Rebuilds the entry of a container that has been restarted `restarts` times, the last time
    /// at `last_restart` (its newest instance's creation), as if [`Backoff::next`] had been
    /// called at each restart: how a restarted kernlet continues a crash loop from the runtime's
    /// restart-count annotation instead of starting it over. An existing entry is kept.
    pub fn recover(&mut self, key: &str, restarts: u32, last_restart: Nanos) {
        if restarts == 0 || self.entries.contains_key(key) {
            return;
        }
        let delay = INITIAL
            .checked_mul(2_u32.saturating_pow(restarts - 1))
            .map_or(MAX, |d| d.min(MAX));
        self.entries.insert(
            key.to_owned(),
            Entry {
                delay,
                last_update: last_restart,
            },
        );
    }

    /// The current delay for `key`, if any.
    #[must_use]
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Drops entries whose key no longer names a wanted container.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|key, _| keep(key));
    }
}

fn expired(entry: &Entry, now: Nanos) -> bool {
    now.saturating_sub(entry.last_update) > nanos(MAX * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        let mut backoff = Backoff::default();
        assert_eq!(
            backoff.blocked_until("c", 0, S),
            None,
            "no entry: not blocked"
        );
        let mut delays = Vec::new();
        let mut now = S;
        for _ in 0..8 {
            backoff.next("c", now);
            delays.push(backoff.delay("c").unwrap().as_secs());
            now += S;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn blocked_until_finish_plus_delay() {
        let mut backoff = Backoff::default();
        backoff.next("c", 100 * S);
        // Finished at 105 s with a 10 s delay: blocked until 115 s.
        assert_eq!(backoff.blocked_until("c", 105 * S, 106 * S), Some(115 * S));
        assert_eq!(backoff.blocked_until("c", 105 * S, 115 * S), None);
    }

    #[test]
    fn blocked_since_update_counts_from_the_last_failure() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.blocked_since_update("img", 0), None);
        backoff.next("img", 50 * S);
        assert_eq!(backoff.blocked_since_update("img", 55 * S), Some(60 * S));
        assert_eq!(backoff.blocked_since_update("img", 60 * S), None);
    }

    #[test]
    fn recover_continues_where_the_restarts_left_off() {
        // The same history with and without a kernlet restart: 4 restarts, the last at 100 s.
        let mut lived = Backoff::default();
        for t in [10, 30, 60, 100] {
            lived.next("c", t * S);
        }
        let mut recovered = Backoff::default();
        recovered.recover("c", 4, 100 * S);
        assert_eq!(recovered, lived);
        assert_eq!(
            recovered.blocked_until("c", 101 * S, 102 * S),
            Some(181 * S)
        );

        let mut fresh = Backoff::default();
        fresh.recover("c", 0, 100 * S);
        assert_eq!(
            fresh.delay("c"),
            None,
            "never restarted: nothing to back off"
        );
        fresh.recover("long", 40, 0);
        assert_eq!(fresh.delay("long"), Some(MAX));
        fresh.next("c", 5 * S);
        fresh.recover("c", 9, 6 * S);
        assert_eq!(fresh.delay("c"), Some(INITIAL), "a live entry is kept");
        // Recovered long after the last restart: forgotten, as the live entry would be.
        let mut old = Backoff::default();
        old.recover("c", 6, 0);
        assert_eq!(old.blocked_until("c", 650 * S, 700 * S), None);
    }

    #[test]
    fn forgotten_after_ten_minutes_untouched() {
        let mut backoff = Backoff::default();
        for t in 0..6 {
            backoff.next("c", t * S);
        }
        assert_eq!(backoff.delay("c"), Some(MAX));
        let later = 5 * S + 601 * S;
        assert_eq!(backoff.blocked_until("c", later - S, later), None);
        backoff.next("c", later);
        assert_eq!(backoff.delay("c"), Some(INITIAL));
    }
}
