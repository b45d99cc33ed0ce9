//! A circuit breaker per provider: after `failures` consecutive retryable failures the
//! provider is left alone for `cooldown` (calls fall over to the next target at once), then
//! one call is let through as a probe: its success closes the circuit, its failure opens it
//! for another cooldown. Computed on access, with no timer, as the rate limits are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker says about a provider now (the `llmchat_llm_breaker_state` gauge: 0, 1,
/// 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since `since`; a probe whose caller vanished (cancelled) is given up
    /// after a cooldown, so the breaker never sticks half-open.
    Probing {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cooldown,
            state: Mutex::new(State::Closed { consecutive: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go to the provider now; a call let through an expired open
    /// circuit is the probe.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::Probing { since: now };
                true
            }
            State::Open { .. } => false,
            State::Probing { since } if now >= since + self.cooldown => {
                *state = State::Probing { since: now };
                true
            }
            State::Probing { .. } => false,
        }
    }

    /// The provider answered (an error that is not its fault counts as an answer).
    pub fn success(&self) {
        *self.lock() = State::Closed { consecutive: 0 };
    }

    /// A retryable failure (429, 5xx, connect error, timeout).
    pub fn failure(&self, now: Instant) {
        let mut state = self.lock();
        *state = match *state {
            State::Closed { consecutive } if consecutive + 1 < self.failures => State::Closed {
                consecutive: consecutive + 1,
            },
            _ => State::Open {
                until: now + self.cooldown,
            },
        };
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::Probing { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t = Instant::now();
        b.failure(t);
        b.failure(t);
        b.success();
        b.failure(t);
        b.failure(t);
        assert!(b.allow(t), "a success in between resets the count");
        b.failure(t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(!b.allow(t + Duration::from_secs(9)));
        let later = t + Duration::from_secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allow(later), "one probe");
        assert!(!b.allow(later), "only one");
        b.failure(later);
        assert!(
            !b.allow(later + Duration::from_secs(5)),
            "a failed probe opens again"
        );
        let again = later + Duration::from_secs(10);
        assert!(b.allow(again));
        b.success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert!(b.allow(again) && b.allow(again));
    }

    #[test]
    fn a_probe_that_never_reports_is_given_up_after_a_cooldown() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.failure(t);
        assert!(b.allow(t + Duration::from_secs(10)));
        assert!(!b.allow(t + Duration::from_secs(19)));
        assert!(b.allow(t + Duration::from_secs(20)));
    }
}
