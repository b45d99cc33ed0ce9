//! The Redis kv backend: keys `llmchat:kv:<namespace>:<key>`, one command per call through
//! the host's [`RedisPool`]. TTLs are Redis expiries (`PX`), so nothing sweeps.
//!
//! The keys carry no hash tag: on a Redis Cluster each key hashes on its own, so one
//! namespace (chat's history) spreads over every master instead of filling one slot. No kv
//! operation touches two keys, so none needs them together.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{KvError, KvStore, check_key, check_value};
use crate::redis::{RedisError, RedisPool};

pub struct RedisKv {
    pool: Arc<RedisPool>,
    max_value: usize,
}

impl RedisKv {
    pub fn new(pool: Arc<RedisPool>, max_value: usize) -> Self {
        Self { pool, max_value }
    }
}

/// The longest expiry sent to Redis, in milliseconds: it refuses a `PX` whose deadline
/// overflows its `i64` millisecond clock. A longer TTL (a guest may ask for `u64::MAX` ms) is
/// cut to this, about 146 million years, as the embedded store keeps such a key for good.
const MAX_TTL_MS: u64 = i64::MAX as u64 / 2;

/// `PREFIX:kv:NAMESPACE:KEY`, hashed whole: keys spread over a cluster's slots.
fn redis_key(pool: &RedisPool, namespace: &str, key: &str) -> String {
    pool.key(format_args!("kv:{namespace}:{key}"))
}

fn to_kv(e: RedisError) -> KvError {
    match e {
        RedisError::Unavailable(m) => KvError::Unavailable(m),
        RedisError::Command(m) if m.contains("not an integer") || m.contains("overflow") => {
            KvError::Invalid("the value is not a decimal integer, or the result overflows".into())
        }
        RedisError::Command(m) => KvError::Unavailable(m),
    }
}

#[async_trait]
impl KvStore for RedisKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        let k = redis_key(&self.pool, namespace, key);
        self.pool
            .run(|mut c| async move { redis::cmd("GET").arg(&k).query_async(&mut c).await })
            .await
            .map_err(to_kv)
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
        let k = &redis_key(&self.pool, namespace, key);
        self.pool
            .run_durable(k, |mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(k).arg(value);
                if let Some(ttl) = ttl {
                    let ms = ttl.as_millis().clamp(1, u128::from(MAX_TTL_MS));
                    cmd.arg("PX").arg(ms as u64);
                }
                cmd.query_async::<()>(&mut c).await
            })
            .await
            .map_err(to_kv)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        let k = &redis_key(&self.pool, namespace, key);
        let n: u64 = self
            .pool
            .run_durable(k, |mut c| async move {
                redis::cmd("DEL").arg(k).query_async(&mut c).await
            })
            .await
            .map_err(to_kv)?;
        Ok(n > 0)
    }

    async fn exists(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        let k = redis_key(&self.pool, namespace, key);
        let n: u64 = self
            .pool
            .run(|mut c| async move { redis::cmd("EXISTS").arg(&k).query_async(&mut c).await })
            .await
            .map_err(to_kv)?;
        Ok(n > 0)
    }

    async fn increment(&self, namespace: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let k = &redis_key(&self.pool, namespace, key);
        self.pool
            .run_durable(k, |mut c| async move {
                redis::cmd("INCRBY")
                    .arg(k)
                    .arg(delta)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(to_kv)
    }
}
