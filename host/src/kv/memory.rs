//! The embedded kv backend: a bounded in-process map with TTL expiry.
//!
//! Bounded, so that no component can make it grow without limit: it holds at most
//! `max_keys` keys and `max_bytes` of keys plus values. Expired keys are removed when read,
//! when the store is full, and by the scheduler's periodic sweep ([`KvStore::sweep_expired`])
//! so that keys nobody reads again do not hold memory until the store fills. It is not
//! durable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{KvError, KvStore, check_key, check_value};

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes -= key.len() + entry.value.len();
        Some(entry)
    }

    fn sweep_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.is_live(now))
            .map(|(k, _)| k.clone())
            .collect();
        let swept = expired.len();
        for key in expired {
            self.remove(&key);
        }
        swept
    }

    fn live(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| !e.is_live(now)) {
            self.remove(key);
        }
        self.entries.get(key)
    }
}

/// The bounded in-memory [`KvStore`].
pub struct MemoryKv {
    inner: Mutex<Inner>,
    max_keys: usize,
    max_bytes: usize,
    max_value: usize,
}

impl MemoryKv {
    pub fn new(max_keys: usize, max_bytes: usize, max_value: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_keys,
            max_bytes,
            max_value,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every mutation
        // is a single insert or remove with its byte count), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of live and not-yet-swept keys; for tests and stats.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn full_key(namespace: &str, key: &str) -> String {
    // Namespaces are component names ([a-z0-9_-]), so ':' cannot be part of one.
    format!("{namespace}:{key}")
}

/// The integer `value` spells in the form an increment writes (`-12`, `0`, `7`), as Redis's
/// `INCRBY` requires: `+5`, `007`, `-0` or ` 5` are not integers to either backend.
fn canonical_integer(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    text.parse::<i64>().ok().filter(|n| n.to_string() == text)
}

#[async_trait]
impl KvStore for MemoryKv {
    fn sweep_expired(&self) -> Option<usize> {
        Some(self.lock().sweep_expired(Instant::now()))
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        let k = full_key(namespace, key);
        Ok(self
            .lock()
            .live(&k, Instant::now())
            .map(|e| e.value.clone()))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        check_key(key)?;
        check_value(&value, self.max_value)?;
        let k = full_key(namespace, key);
        let now = Instant::now();
        let size = k.len() + value.len();
        let mut inner = self.lock();
        let previous = inner.remove(&k);
        let fits = |i: &Inner| i.entries.len() < self.max_keys && i.bytes + size <= self.max_bytes;
        if !fits(&inner) {
            inner.sweep_expired(now);
        }
        if !fits(&inner) {
            let (keys, bytes) = (inner.entries.len(), inner.bytes);
            if let Some(previous) = previous {
                inner.bytes += k.len() + previous.value.len();
                inner.entries.insert(k, previous);
            }
            return Err(KvError::QuotaExceeded(format!(
                "store is full ({keys}/{} keys, {bytes}/{} bytes)",
                self.max_keys, self.max_bytes
            )));
        }
        inner.bytes += size;
        inner.entries.insert(
            k,
            Entry {
                value,
                // A TTL past what `Instant` can hold: the key outlives the store.
                expires_at: ttl.and_then(|t| now.checked_add(t)),
            },
        );
        Ok(())
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        let k = full_key(namespace, key);
        let mut inner = self.lock();
        let live = inner.live(&k, Instant::now()).is_some();
        inner.remove(&k);
        Ok(live)
    }

    async fn exists(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        let k = full_key(namespace, key);
        Ok(self.lock().live(&k, Instant::now()).is_some())
    }

    async fn increment(&self, namespace: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let k = full_key(namespace, key);
        let now = Instant::now();
        let mut inner = self.lock();
        let (current, expires_at) = match inner.live(&k, now) {
            Some(e) => {
                let n = canonical_integer(&e.value).ok_or_else(|| {
                    KvError::Invalid(format!("the value of `{key}` is not a decimal integer"))
                })?;
                (n, e.expires_at)
            }
            None => (0, None),
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Invalid(format!("incrementing `{key}` overflows")))?;
        let value = next.to_string().into_bytes();
        let size = k.len() + value.len();
        let previous = inner
            .remove(&k)
            .map(|e| k.len() + e.value.len())
            .unwrap_or(0);
        if previous == 0
            && (inner.entries.len() >= self.max_keys || inner.bytes + size > self.max_bytes)
        {
            inner.sweep_expired(now);
            if inner.entries.len() >= self.max_keys || inner.bytes + size > self.max_bytes {
                return Err(KvError::QuotaExceeded(format!(
                    "store is full ({} keys)",
                    inner.entries.len()
                )));
            }
        }
        inner.bytes += size;
        inner.entries.insert(k, Entry { value, expires_at });
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespaces_are_isolated() {
        let kv = MemoryKv::new(10, 1 << 20, 1 << 10);
        kv.set("a", "k", b"1".to_vec(), None).await.unwrap();
        assert_eq!(kv.get("a", "k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("b", "k").await.unwrap(), None);
        assert!(!kv.delete("b", "k").await.unwrap());
        assert!(kv.delete("a", "k").await.unwrap());
        assert!(!kv.exists("a", "k").await.unwrap());
    }

    #[tokio::test]
    async fn keys_expire() {
        let kv = MemoryKv::new(10, 1 << 20, 1 << 10);
        kv.set("a", "k", b"1".to_vec(), Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(kv.get("a", "k").await.unwrap(), None);
        assert!(kv.is_empty(), "a read removes the expired key");
    }

    #[tokio::test]
    async fn key_count_and_bytes_are_bounded() {
        let kv = MemoryKv::new(2, 1 << 20, 1 << 10);
        kv.set("a", "1", vec![], None).await.unwrap();
        kv.set("a", "2", vec![], None).await.unwrap();
        let err = kv.set("a", "3", vec![], None).await.unwrap_err();
        assert!(matches!(err, KvError::QuotaExceeded(_)), "{err}");
        // Overwriting an existing key is allowed when full.
        kv.set("a", "2", b"x".to_vec(), None).await.unwrap();

        let kv = MemoryKv::new(100, 64, 1 << 10);
        kv.set("a", "1", vec![0; 40], None).await.unwrap();
        assert!(matches!(
            kv.set("a", "2", vec![0; 40], None).await,
            Err(KvError::QuotaExceeded(_))
        ));
        assert!(matches!(
            kv.set("a", "3", vec![0; 2000], None).await,
            Err(KvError::Invalid(_))
        ));
        assert_eq!(
            kv.get("a", "1").await.unwrap().map(|v| v.len()),
            Some(40),
            "failed sets change nothing"
        );
    }

    #[tokio::test]
    async fn a_full_store_makes_room_by_sweeping_expired_keys() {
        let kv = MemoryKv::new(2, 1 << 20, 1 << 10);
        kv.set("a", "old", vec![], Some(Duration::ZERO))
            .await
            .unwrap();
        kv.set("a", "keep", vec![], None).await.unwrap();
        kv.set("a", "new", vec![], None).await.unwrap();
        assert_eq!(kv.len(), 2);
    }

    #[tokio::test]
    async fn increments_are_counted_from_zero_and_refuse_non_integers() {
        let kv = MemoryKv::new(10, 1 << 20, 1 << 10);
        assert_eq!(kv.increment("a", "n", 2).await.unwrap(), 2);
        assert_eq!(kv.increment("a", "n", -5).await.unwrap(), -3);
        assert_eq!(kv.get("a", "n").await.unwrap(), Some(b"-3".to_vec()));
        kv.set("a", "s", b"text".to_vec(), None).await.unwrap();
        assert!(matches!(
            kv.increment("a", "s", 1).await,
            Err(KvError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn bad_keys_are_rejected() {
        let kv = MemoryKv::new(2, 1 << 20, 1 << 10);
        assert!(matches!(kv.get("a", "").await, Err(KvError::Invalid(_))));
        assert!(matches!(
            kv.get("a", &"k".repeat(2000)).await,
            Err(KvError::Invalid(_))
        ));
    }
}
