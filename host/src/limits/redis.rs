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

/// [`super::gcra::apply`] in Lua: allowed if a token is left; then, if allowed or forced,
/// `cost` tokens are spent. Check = cost 1; peek = cost 0; spend = forced cost.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the limit's key; ARGV: interval_us, burst, cost, force (1/0)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = interval * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - span
local allowed = now >= allow_at
local retry = 0
if not allowed then retry = allow_at - now end
if not allowed and ARGV[4] ~= '1' then return {0, 0, tat - now, retry} end
local next = tat + interval * cost
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
end
local remaining = math.floor(math.max(now + span - next, 0) / interval)
return {allowed and 1 or 0, remaining, next - now, retry}
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
    /// One GCRA step on `key` in one round trip (see [`GCRA`]).
    async fn apply(&self, key: &str, limit: &Limit, cost: u64, force: bool) -> Decision {
        // The whole key is the hash tag: one key per check, one slot.
        let key = self.pool.key(format_args!("rl:{{{key}}}"));
        let (interval, burst) = (limit.interval_us(), limit.burst);
        let reply: Result<(i64, i64, i64, i64), _> = self
            .pool
            .run(|mut c| async move {
                GCRA.key(key)
                    .arg(interval)
                    .arg(burst)
                    .arg(cost)
                    .arg(u8::from(force))
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
                tracing::warn!("rate limit state unreachable, allowing the call: {e}");
                Decision::fail_open(limit)
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, limit: &Limit) -> Decision {
        self.apply(key, limit, 1, false).await
    }

    async fn peek(&self, key: &str, limit: &Limit) -> Decision {
        self.apply(key, limit, 0, false).await
    }

    async fn spend(&self, key: &str, limit: &Limit, cost: u64) {
        self.apply(key, limit, cost, true).await;
    }
}
