//! Key/value storage behind one trait, [`KvStore`], so that the embedded backend and Redis
//! (added with the queue work) are interchangeable: both pass one conformance suite,
//! `tests/all/kv_conformance.rs`.
//!
//! Keys are namespaced by the host: the component's name is part of every call, so two
//! components can never read each other's data.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryKv;
pub use redis::RedisKv;

/// Why a kv operation failed; mapped to the WIT `kv.error` in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Longest key a component may use, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A key/value backend shared by all components.
#[async_trait]
pub trait KvStore: Send + Sync {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value`, replacing the key's value and TTL. A `ttl` longer than the backend can
    /// represent keeps the key for as long as the store lives.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError>;
    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvError>;
    async fn exists(&self, namespace: &str, key: &str) -> Result<bool, KvError>;
    /// Adds `delta` to the decimal integer under `key` (0 when absent), atomically, keeping
    /// the key's TTL. The value must read as an increment writes it (`-12`, `0`, `7`; not
    /// `+5`, `007` or `-0`), which is what Redis's `INCRBY` accepts.
    async fn increment(&self, namespace: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Removes expired keys now and returns how many; `None` when the backend expires keys
    /// itself (Redis), so that the scheduler adds no sweep for it.
    fn sweep_expired(&self) -> Option<usize> {
        None
    }
}

/// How often the scheduler sweeps a store that does not expire keys by itself.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Adds the expiry sweep of `kv` to `scheduler`, when the backend needs one (the embedded
/// store does; Redis expires keys itself).
pub fn schedule_sweep(kv: Arc<dyn KvStore>, scheduler: &crate::scheduler::Scheduler) {
    if kv.sweep_expired().is_none() {
        return;
    }
    scheduler.add(
        "kv expiry sweep",
        tokio::time::Instant::now() + SWEEP_EVERY,
        Box::new(move |due| {
            let swept = kv.sweep_expired().unwrap_or(0);
            if swept > 0 {
                tracing::debug!(keys = swept, "swept expired kv keys");
            }
            Box::pin(async move { Some(due + SWEEP_EVERY) })
        }),
    );
}

/// Rejects keys no backend should have to store.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Invalid("key is empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::Invalid(format!(
            "key is {} bytes, the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

/// Rejects values over the store's size limit.
pub fn check_value(value: &[u8], max: usize) -> Result<(), KvError> {
    if value.len() > max {
        return Err(KvError::Invalid(format!(
            "value is {} bytes, the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}
