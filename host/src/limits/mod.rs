//! Rate limits owned by the host: declared in the manifest, computed on access (GCRA), with
//! no timer and no task per limit, shared by every host through Redis when it is configured.
//!
//! A limit is state only while it matters: a key whose bucket is full again holds nothing
//! ([`local`] drops it the next time it needs room, Redis expires it), and each check is one
//! atomic step: one lock in this process ([`local::LocalRateLimiter`]), one script round
//! trip on Redis ([`redis::RedisLimiter`]).

mod gcra;
pub mod llm;
pub mod local;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use gcra::{Decision, Limit};

/// Where limits keep their state.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `key` against `limit`: allowed or not, and the numbers the
    /// `RateLimit` headers report.
    async fn check(&self, key: &str, limit: &Limit) -> Decision;
    /// Whether `key`'s budget (`limit` in tokens) has a token left, spending nothing.
    async fn peek(&self, key: &str, limit: &Limit) -> Decision;
    /// Spends `cost` tokens of `key`'s budget.
    async fn spend(&self, key: &str, limit: &Limit, cost: u64);
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft, structured fields), and
/// `Retry-After` when refused.
pub fn headers(limit: &Limit, decision: &Decision) -> Vec<(&'static str, String)> {
    let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let mut headers = vec![
        (
            "ratelimit-policy",
            format!("\"default\";q={};w={}", limit.burst, secs(limit.window())),
        ),
        (
            "ratelimit",
            format!(
                "\"default\";r={};t={}",
                decision.remaining,
                secs(decision.reset)
            ),
        ),
    ];
    if !decision.allowed {
        headers.push(("retry-after", secs(decision.retry_after).max(1).to_string()));
    }
    headers
}
