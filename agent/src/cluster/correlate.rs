//! Event correlation, as client-go's `EventCorrelator` (`tools/record/events_cache.go`) does it
//! for the upstream kubelet before anything reaches the API server:
//!
//! - aggregation: events alike but for their message (same object, type and reason) seen with
//!   10 different messages within 10 minutes become one event whose message starts with
//!   `(combined from similar events): `;
//! - deduplication: an event seen before (same object, field path, type, reason and message)
//!   patches the earlier Event's `count`, `lastTimestamp` and `message` instead of creating one;
//! - spam filter: each object, type, reason and message gets a bucket of 25 events refilled one
//!   per 5 minutes; beyond it events are dropped.
//!
//! Caches are bounded (4096 keys each, upstream's LRU size); the oldest key goes first.
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::TokenBucket;
use crate::event::Event;

const CACHE_SIZE: usize = 4096;
const MAX_SIMILAR: usize = 10;
const SIMILAR_WINDOW: Duration = Duration::from_mins(10);
const SPAM_BURST: u32 = 25;
const SPAM_QPS: f64 = 1.0 / 300.0;
/// Upstream's prefix of an aggregated message.
pub const COMBINED: &str = "(combined from similar events): ";

/// What to write for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event object named `name`.
    Create { name: String, event: Event },
    /// Patch Event `name`: it has now been seen `count` times, first at `first_seen`.
    Update {
        name: String,
        event: Event,
        count: u32,
        first_seen: i64,
    },
}

/// A map that forgets its oldest key beyond [`CACHE_SIZE`].
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn entry(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            if self.order.len() >= CACHE_SIZE
                && let Some(oldest) = self.order.pop_front()
            {
                self.map.remove(&oldest);
            }
            self.order.push_back(key.clone());
        }
        self.map.entry(key.clone()).or_insert_with(make)
    }
}

/// The identity of an event without its message (aggregation).
type SimilarKey = (crate::event::Involved, &'static str, String);

#[derive(Debug)]
struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

#[derive(Debug)]
struct Seen {
    name: String,
    count: u32,
    first: i64,
}

/// One node's correlator.
#[derive(Debug, Default)]
pub struct Correlator {
    similar: Bounded<SimilarKey, Similar>,
    seen: Bounded<(SimilarKey, String), Seen>,
    spam: Bounded<(SimilarKey, String), TokenBucket>,
}

impl Correlator {
    /// What to write for `event` observed at `now` (monotonic) and `wall` (nanoseconds since
    /// the epoch); `None` when the spam filter drops it.
    pub fn observe(&mut self, mut event: Event, now: Instant, wall: i64) -> Option<Write> {
        let similar_key: SimilarKey = (
            event.involved.clone(),
            event.kind.as_str(),
            event.reason.clone(),
        );
        let similar = self.similar.entry(&similar_key, || Similar {
            messages: HashSet::new(),
            last: now,
        });
        if now.saturating_duration_since(similar.last) > SIMILAR_WINDOW {
            similar.messages.clear();
        }
        similar.last = now;
        similar.messages.insert(event.message.clone());
        // The dedup key: the whole event, or for an aggregate, everything but the message.
        let local = if similar.messages.len() < MAX_SIMILAR {
            event.message.clone()
        } else {
            // Never more than the limit kept, as upstream's set: one goes, any one.
            if let Some(any) = similar.messages.iter().next().cloned() {
                similar.messages.remove(&any);
            }
            event.message = format!("{COMBINED}{}", event.message);
            String::new()
        };
        let key = (similar_key, local);
        let name = event_name(&event.involved.name, wall);
        let seen = self.seen.entry(&key, || Seen {
            name,
            count: 0,
            first: wall,
        });
        seen.count += 1;
        let write = if seen.count == 1 {
            Write::Create {
                name: seen.name.clone(),
                event,
            }
        } else {
            Write::Update {
                name: seen.name.clone(),
                event,
                count: seen.count,
                first_seen: seen.first,
            }
        };
        // As upstream, the filter runs after the count: a dropped event still counts.
        let spam_key = match &write {
            Write::Create { event, .. } | Write::Update { event, .. } => {
                (key.0, event.message.clone())
            }
        };
        let bucket = self
            .spam
            .entry(&spam_key, || TokenBucket::new(SPAM_QPS, SPAM_BURST));
        bucket.try_take(now).then_some(write)
    }
}

/// Upstream's Event name: the object's name and the time in hexadecimal nanoseconds.
fn event_name(object: &str, wall: i64) -> String {
    format!("{object}.{wall:x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Involved};

    fn event(reason: &str, message: &str) -> Event {
        Event {
            involved: Involved::node("n1"),
            kind: EventType::Normal,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    fn count(write: &Write) -> u32 {
        match write {
            Write::Create { .. } => 1,
            Write::Update { count, .. } => *count,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_update_the_first_event() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let first = c.observe(event("Pulled", "a"), now, 0x10).unwrap();
        assert!(matches!(&first, Write::Create { name, .. } if name == "n1.10"));
        let again = c.observe(event("Pulled", "a"), now, 0x20).unwrap();
        let Write::Update {
            name,
            count,
            first_seen,
            ..
        } = again
        else {
            panic!("{again:?}")
        };
        assert_eq!((name.as_str(), count, first_seen), ("n1.10", 2, 0x10));
        // Another message is another event.
        let other = c.observe(event("Pulled", "b"), now, 0x30).unwrap();
        assert!(matches!(other, Write::Create { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_messages_alike_are_combined() {
        let mut c = Correlator::default();
        let now = Instant::now();
        for i in 0..9 {
            let write = c
                .observe(event("Unhealthy", &format!("m{i}")), now, i)
                .unwrap();
            assert!(matches!(write, Write::Create { .. }));
        }
        let tenth = c.observe(event("Unhealthy", "m9"), now, 9).unwrap();
        let Write::Create {
            event: combined, ..
        } = &tenth
        else {
            panic!("{tenth:?}")
        };
        assert_eq!(combined.message, format!("{COMBINED}m9"));
        let eleventh = c.observe(event("Unhealthy", "m10"), now, 10).unwrap();
        assert_eq!(count(&eleventh), 2, "the aggregate counts up");
        // However many messages, the set stays at the limit.
        for i in 11..100 {
            c.observe(event("Unhealthy", &format!("m{i}")), now, i);
        }
        let kept = c.similar.map.values().map(|s| s.messages.len()).max();
        assert!(kept <= Some(MAX_SIMILAR), "{kept:?}");
        // After 10 quiet minutes, messages count afresh.
        let later = now + Duration::from_mins(11);
        let write = c.observe(event("Unhealthy", "m11"), later, 11).unwrap();
        let Write::Create { event: fresh, .. } = write else {
            panic!()
        };
        assert_eq!(fresh.message, "m11");
    }

    #[tokio::test(start_paused = true)]
    async fn spam_beyond_25_is_dropped_until_the_bucket_refills() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let kept = (0..30)
            .filter(|i| c.observe(event("BackOff", "x"), now, *i).is_some())
            .count();
        assert_eq!(kept, 25);
        let later = now + Duration::from_mins(5);
        let write = c.observe(event("BackOff", "x"), later, 99).unwrap();
        assert_eq!(count(&write), 31, "the dropped ones were counted");
    }
}
