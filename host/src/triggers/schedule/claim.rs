//! Who runs a tick: with several hosts on one Redis, exactly one of them, claimed
//! atomically; alone (no Redis), this host.

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use crate::redis::{RedisError, RedisPool};

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This host runs the tick.
    Won,
    /// Another host already claimed this tick (or a later one).
    Taken,
    /// The previous tick still runs on another host: this one is skipped.
    Busy,
}

/// The seam between schedules and the cluster.
#[async_trait]
pub trait TickClaims: Send + Sync {
    /// Claims `tick_ms` of `schedule` for a run of at most `lease`; `keep` is how long the
    /// record of the claim must outlive it (until the schedule's next tick, at least).
    async fn claim(
        &self,
        schedule: &str,
        tick_ms: u64,
        lease: Duration,
        keep: Duration,
    ) -> Result<Claim, RedisError>;

    /// Ends the lease of a run that finished, so the next tick is not seen as busy.
    async fn release(&self, schedule: &str, tick_ms: u64) -> Result<(), RedisError>;
}

/// A host without Redis is its own cluster: every tick is its own, and overlap is already
/// prevented by the schedule's local running flag.
pub struct LocalClaims;

#[async_trait]
impl TickClaims for LocalClaims {
    async fn claim(&self, _: &str, _: u64, _: Duration, _: Duration) -> Result<Claim, RedisError> {
        Ok(Claim::Won)
    }

    async fn release(&self, _: &str, _: u64) -> Result<(), RedisError> {
        Ok(())
    }
}

/// Claims in one Redis hash per schedule, `llmchat:schedule:{name}`: the last claimed tick
/// and the lease of its run. A tick is claimed only if it is later than the last one (so
/// each tick runs once, whichever host asks first) and no run's lease is still going (so
/// runs never overlap across hosts either).
pub struct RedisClaims {
    pool: Arc<RedisPool>,
    host: String,
}

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the schedule's hash
-- ARGV: tick_ms, lease_until_ms, now_ms, host, keep_ms
local last = tonumber(redis.call('HGET', KEYS[1], 'tick') or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
local busy = tonumber(redis.call('HGET', KEYS[1], 'busy_until') or '0')
if busy > tonumber(ARGV[3]) then return 2 end
redis.call('HSET', KEYS[1], 'tick', ARGV[1], 'busy_until', ARGV[2], 'host', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the schedule's hash; ARGV: tick_ms
if redis.call('HGET', KEYS[1], 'tick') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'busy_until', '0')
end
return 1
",
    )
});

/// `PREFIX:schedule:{NAME}`: one hash per schedule.
fn key(pool: &RedisPool, schedule: &str) -> String {
    pool.key(format_args!("schedule:{{{schedule}}}"))
}

impl RedisClaims {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        Self {
            pool,
            host: format!("{}-{}", hostname(), std::process::id()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[async_trait]
impl TickClaims for RedisClaims {
    async fn claim(
        &self,
        schedule: &str,
        tick_ms: u64,
        lease: Duration,
        keep: Duration,
    ) -> Result<Claim, RedisError> {
        let now = crate::timers::now_ms();
        let (key, host) = (key(&self.pool, schedule), self.host.clone());
        let won: i64 = self
            .pool
            .run(|mut c| async move {
                CLAIM
                    .key(key)
                    .arg(tick_ms)
                    .arg(now + lease.as_millis() as u64)
                    .arg(now)
                    .arg(host)
                    .arg(keep.max(lease).as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match won {
            1 => Claim::Won,
            2 => Claim::Busy,
            _ => Claim::Taken,
        })
    }

    async fn release(&self, schedule: &str, tick_ms: u64) -> Result<(), RedisError> {
        let key = key(&self.pool, schedule);
        self.pool
            .run(|mut c| async move {
                RELEASE
                    .key(key)
                    .arg(tick_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }
}
