//! The generic cell rate algorithm: one number per key, the theoretical arrival time (TAT)
//! of the next request. A request at `now` is allowed if `TAT - burst × interval ≤ now`, and
//! then moves the TAT on by one interval. No refill timer: time itself refills the bucket.

use std::time::Duration;

use crate::manifest::Rate;

/// A limit: `rate` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: Rate,
    pub burst: u32,
}

impl Limit {
    /// Time between two requests at the sustained rate, in microseconds.
    pub fn interval_us(&self) -> u64 {
        (self.rate.period.as_micros() as u64 / u64::from(self.rate.count)).max(1)
    }

    /// How long an empty bucket takes to fill: what `RateLimit-Policy`'s `w` reports.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.interval_us() * u64::from(self.burst))
    }
}

/// What a check answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

impl Decision {
    /// What to answer when the limit's state cannot be read (Redis down): allow, because
    /// refusing every request would turn a cache outage into an outage.
    pub fn fail_open(limit: &Limit) -> Decision {
        Decision {
            allowed: true,
            remaining: limit.burst,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }
}

/// The one GCRA step every operation is made of: at `now_us`, for a key whose TAT is
/// `tat_us` (0 when unknown), the key is allowed if it has at least one token left; then,
/// if allowed (or `force`d: a cost already incurred), `cost` tokens are spent. Returns the
/// decision (remaining counted after the spend) and the TAT to store, if it changed.
pub fn apply(
    limit: &Limit,
    tat_us: u64,
    now_us: u64,
    cost: u64,
    force: bool,
) -> (Decision, Option<u64>) {
    let interval = limit.interval_us();
    let span = interval * u64::from(limit.burst);
    let tat = tat_us.max(now_us);
    let allow_at = (tat + interval).saturating_sub(span);
    let allowed = now_us >= allow_at;
    let retry_after = Duration::from_micros(allow_at.saturating_sub(now_us));
    if !allowed && !force {
        let decision = Decision {
            allowed,
            remaining: 0,
            reset: Duration::from_micros(tat - now_us),
            retry_after,
        };
        return (decision, None);
    }
    let next = tat + interval.saturating_mul(cost);
    let decision = Decision {
        allowed,
        remaining: ((now_us + span).saturating_sub(next) / interval) as u32,
        reset: Duration::from_micros(next - now_us),
        retry_after,
    };
    (decision, (cost > 0).then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The three operations the limiters make of `apply`.

    /// Decides one request (cost 1): the decision and the TAT to store when allowed.
    fn decide(limit: &Limit, tat_us: u64, now_us: u64) -> (Decision, Option<u64>) {
        apply(limit, tat_us, now_us, 1, false)
    }

    /// Whether a budget of `limit` (tokens per period, `burst` of them at once) has a token
    /// left at `now_us`, without spending any: the check before a call whose cost is known only
    /// after it.
    fn peek(limit: &Limit, tat_us: u64, now_us: u64) -> Decision {
        apply(limit, tat_us, now_us, 0, false).0
    }

    /// The TAT after spending `cost` tokens at `now_us`; a budget may go into debt (the call
    /// already happened), which later calls then wait out.
    fn spend(limit: &Limit, tat_us: u64, now_us: u64, cost: u64) -> u64 {
        apply(limit, tat_us, now_us, cost, true)
            .1
            .unwrap_or(tat_us.max(now_us))
    }

    fn limit(rate: &str, burst: u32) -> Limit {
        Limit {
            rate: rate.parse().unwrap(),
            burst,
        }
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses_until_one_interval_passes() {
        let l = limit("10/s", 5);
        let (mut tat, now) = (0, 1_000_000_000);
        for i in 0..5 {
            let (d, next) = decide(&l, tat, now);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
            tat = next.unwrap();
        }
        let (d, next) = decide(&l, tat, now);
        assert!(!d.allowed && next.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // One interval later, one more.
        let (d, _) = decide(&l, tat, now + 100_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn a_budget_allows_calls_until_spent_then_refills_with_time() {
        let l = limit("100/s", 100);
        let now = 1_000_000_000;
        assert!(peek(&l, 0, now).allowed);
        // One call of 150 tokens: 50 in debt.
        let tat = spend(&l, 0, now, 150);
        let d = peek(&l, tat, now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(510));
        assert!(peek(&l, tat, now + 510_000).allowed);
    }

    #[test]
    fn the_sustained_rate_holds() {
        let l = limit("100/s", 1);
        let (mut tat, mut allowed) = (0, 0);
        // A request every ms for 10 s: 100/s are allowed, so 1,000 (+1 for the full start).
        for ms in 0..10_000u64 {
            let (d, next) = decide(&l, tat, 5_000_000 + ms * 1000);
            if d.allowed {
                allowed += 1;
                tat = next.unwrap();
            }
        }
        assert_eq!(allowed, 1000);
    }
}
