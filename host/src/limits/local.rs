//! Rate limits kept in this process, for a host without Redis: a map of key → TAT (GCRA's
//! theoretical arrival time) with a fixed number of keys.
//!
//! A key whose TAT is in the past is a full bucket, the same as no key at all, so dropping
//! it loses nothing: when the map is full, the expired keys go first. If even that frees
//! too little (more distinct clients inside one window than the map holds), an arbitrary
//! tenth of the keys goes, so the cost stays amortised O(1); those clients start again with
//! a full bucket. No timer sweeps anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::RateLimiter;
use super::gcra::{Decision, Limit, apply};

/// Keys held when the manifest does not say.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

pub struct LocalRateLimiter {
    tats: Mutex<HashMap<String, u64>>,
    max_keys: usize,
}

impl LocalRateLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            tats: Mutex::new(HashMap::with_capacity(max_keys.min(1024))),
            max_keys: max_keys.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decision for one request of `key` at `now_us` (exposed for tests and the
    /// benchmark).
    pub fn check_at(&self, key: &str, limit: &Limit, now_us: u64) -> Decision {
        self.apply_at(key, limit, now_us, 1, false)
    }

    /// One [`apply`] on `key`'s TAT, storing the new one.
    fn apply_at(&self, key: &str, limit: &Limit, now_us: u64, cost: u64, force: bool) -> Decision {
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(0);
        let (decision, next) = apply(limit, tat, now_us, cost, force);
        if let Some(next) = next {
            if let Some(slot) = tats.get_mut(key) {
                *slot = next;
            } else {
                if tats.len() >= self.max_keys {
                    make_room(&mut tats, self.max_keys, now_us);
                }
                tats.insert(key.to_string(), next);
            }
        }
        decision
    }
}

fn make_room(tats: &mut HashMap<String, u64>, max_keys: usize, now_us: u64) {
    tats.retain(|_, tat| *tat > now_us);
    let target = max_keys - max_keys / 10;
    if tats.len() > target {
        let excess = tats.len() - target;
        let doomed: Vec<String> = tats.keys().take(excess).cloned().collect();
        for key in doomed {
            tats.remove(&key);
        }
    }
    tats.shrink_to(max_keys);
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, key: &str, limit: &Limit) -> Decision {
        self.check_at(key, limit, now_us())
    }

    async fn peek(&self, key: &str, limit: &Limit) -> Decision {
        self.apply_at(key, limit, now_us(), 0, false)
    }

    async fn spend(&self, key: &str, limit: &Limit, cost: u64) {
        self.apply_at(key, limit, now_us(), cost, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_distinct_keys_never_hold_more_than_the_cap() {
        let limiter = LocalRateLimiter::new(10_000);
        let limit = Limit {
            rate: "1/hour".parse().unwrap(),
            burst: 1,
        };
        let now = 1_000_000_000_000;
        for i in 0..1_000_000u32 {
            let d = limiter.check_at(&format!("client-{i}"), &limit, now + u64::from(i));
            assert!(d.allowed);
            assert!(limiter.len() <= 10_000);
        }
        let held = limiter.tats.lock().unwrap();
        assert!(held.capacity() < 4 * 10_000, "capacity {}", held.capacity());
    }

    #[test]
    fn expired_keys_make_room_first() {
        let limiter = LocalRateLimiter::new(10);
        let limit = Limit {
            rate: "1/s".parse().unwrap(),
            burst: 1,
        };
        for i in 0..10 {
            limiter.check_at(&format!("old-{i}"), &limit, 0);
        }
        // Two seconds later every old bucket is full again: all of them may go.
        limiter.check_at("new", &limit, 2_000_000);
        assert_eq!(limiter.len(), 1);
    }
}
