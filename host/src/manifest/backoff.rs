//! How long to wait before a failed job's next attempt: `fixed:1s` or
//! `exponential:100ms..30s` (doubling from the first value, capped at the second), plus up to
//! 10% random jitter so that jobs that failed together do not retry together.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::HumanDuration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Fixed(Duration),
    Exponential { first: Duration, max: Duration },
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { first, max } => {
                let factor = 1u32
                    .checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX);
                first.saturating_mul(factor).min(max)
            }
        }
    }

    /// The wait after failed attempt `attempt`, with 0–10% jitter added.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        base + base.mul_f64(fastrand::f64() * 0.1)
    }
}

impl std::str::FromStr for Backoff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid backoff {s:?}: {why} (use \"fixed:1s\" or \"exponential:100ms..30s\")")
        };
        let duration = |d: &str| d.parse::<HumanDuration>().map(|h| h.0).map_err(|e| bad(&e));
        match s.split_once(':') {
            Some(("fixed", d)) => Ok(Backoff::Fixed(duration(d)?)),
            Some(("exponential", range)) => {
                let (first, max) = range
                    .split_once("..")
                    .ok_or_else(|| bad("missing \"..\""))?;
                let (first, max) = (duration(first)?, duration(max)?);
                if first.is_zero() || max < first {
                    return Err(bad("the range must be increasing and start above zero"));
                }
                Ok(Backoff::Exponential { first, max })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Fixed(d) => write!(f, "fixed:{}", HumanDuration(*d)),
            Backoff::Exponential { first, max } => {
                write!(
                    f,
                    "exponential:{}..{}",
                    HumanDuration(*first),
                    HumanDuration(*max)
                )
            }
        }
    }
}

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_kinds() {
        for s in ["fixed:1s", "exponential:100ms..30s"] {
            assert_eq!(s.parse::<Backoff>().unwrap().to_string(), s);
        }
        for bad in [
            "fixed",
            "fixed:soon",
            "exponential:1s",
            "exponential:2s..1s",
            "linear:1s",
        ] {
            assert!(bad.parse::<Backoff>().is_err(), "{bad}");
        }
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let b: Backoff = "exponential:100ms..1s".parse().unwrap();
        let ms: Vec<u128> = (1..=6).map(|a| b.base_delay(a).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.base_delay(200), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn jitter_adds_at_most_ten_percent() {
        let b = Backoff::Fixed(Duration::from_millis(1000));
        for _ in 0..100 {
            let d = b.delay(1).as_millis();
            assert!((1000..=1100).contains(&d), "{d}");
        }
    }
}
