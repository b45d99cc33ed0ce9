//! Limits shared by every host on one Redis: the same GCRA as [`super::gcra`], in one Lua
//! script, so a check is one round trip and atomic across hosts. The script reads Redis's
//! own clock (`TIME`), so hosts whose clocks differ still agree.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::RateLimiter;
use super::gcra::{Decision, Limit};
use crate::redis::RedisPool;

static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the limit's key; ARGV: interval_us, burst
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + interval
local allow_at = next - span
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return {1, math.floor((now + span - next) / interval), next - now, 0}
",
    )
});

static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the budget's key; ARGV: interval_us, burst
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - span
if now < allow_at then return {0, 0, tat - now, allow_at - now} end
return {1, math.floor((now + span - tat) / interval), tat - now, 0}
",
    )
});

static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the budget's key; ARGV: interval_us, cost
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return 1
",
    )
});

pub struct RedisLimiter {
    pool: Arc<RedisPool>,
}

impl RedisLimiter {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        Self { pool }
    }
}

impl RedisLimiter {
    /// Runs `script` on `key` with (interval, burst) and reads a decision.
    async fn decide(&self, script: &'static Script, key: &str, limit: &Limit) -> Decision {
        // The whole key is the hash tag: one key per check, one slot.
        let key = format!("llmchat:rl:{{{key}}}");
        let (interval, burst) = (limit.interval_us(), limit.burst);
        let reply: Result<(i64, i64, i64, i64), _> = self
            .pool
            .run(|mut c| async move {
                script
                    .key(key)
                    .arg(interval)
                    .arg(burst)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match reply {
            Ok((allowed, remaining, reset, retry)) => Decision {
                allowed: allowed == 1,
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset: Duration::from_micros(u64::try_from(reset).unwrap_or(0)),
                retry_after: Duration::from_micros(u64::try_from(retry).unwrap_or(0)),
            },
            Err(e) => {
                tracing::warn!("rate limit check failed, allowing the request: {e}");
                Decision::fail_open(limit)
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, limit: &Limit) -> Decision {
        self.decide(&GCRA, key, limit).await
    }

    async fn peek(&self, key: &str, limit: &Limit) -> Decision {
        self.decide(&PEEK, key, limit).await
    }

    async fn spend(&self, key: &str, limit: &Limit, cost: u64) {
        let key = format!("llmchat:rl:{{{key}}}");
        let interval = limit.interval_us();
        let result: Result<i64, _> = self
            .pool
            .run(|mut c| async move {
                SPEND
                    .key(key)
                    .arg(interval)
                    .arg(cost)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("recording spent tokens failed: {e}");
        }
    }
}
