//! A bounded map whose entries expire: the decisions of the token and access review webhooks,
//! kept for `authentication.webhook.cacheTTL` and `authorization.webhook.cacheAuthorizedTTL` /
//! `cacheUnauthorizedTTL` as upstream's cached authenticator and authorizer do.
//!
//! Bounded so that a client sending a new token with every request cannot grow kernlet: when
//! full, expired entries go first, then the entry closest to expiry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Upstream's webhook caches hold about this many decisions.
pub const CAPACITY: usize = 4096;

/// A map of `K` to `V` whose entries live for the time given when each is put.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The value for `key` if it has not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone())
    }

    /// Keeps `value` for `ttl`; a zero `ttl` keeps nothing.
    pub fn put(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, (value, now + ttl));
    }

    /// How many entries are held, expired ones included.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let cache = TtlCache::new(8);
        cache.put("a", 1, Duration::from_secs(10));
        cache.put("b", 2, Duration::from_secs(1));
        cache.put("c", 3, Duration::ZERO);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), Some(2));
        assert_eq!(cache.get(&"c"), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.get(&"a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded_dropping_expired_then_soonest() {
        let cache = TtlCache::new(3);
        cache.put(1, (), Duration::from_secs(1));
        cache.put(2, (), Duration::from_secs(30));
        cache.put(3, (), Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.put(4, (), Duration::from_mins(1));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&2).is_some() && cache.get(&3).is_some());
        cache.put(5, (), Duration::from_mins(1));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&3).is_none(), "the entry closest to expiry goes");
        for key in 6..1000 {
            cache.put(key, (), Duration::from_mins(1));
        }
        assert_eq!(cache.len(), 3);
    }
}
