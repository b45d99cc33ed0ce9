//! The alert thresholds, from the component config (every value a string holding a
//! number):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `redis_latency_warn_ms` | PING round trip above which to warn | 50 |
//! | `redis_latency_critical_ms` | PING round trip above which it is critical | 500 |
//! | `backlog_warn` | waiting jobs per queue above which to warn | 1000 |
//! | `backlog_critical` | waiting jobs per queue above which it is critical | 10000 |
//! | `dead_warn` | dead jobs per queue from which to warn; 0 disables | 1 |
//! | `llm_latency_warn_ms` | llm provider round trip above which to warn | 2000 |
//!
//! Latencies may be fractional milliseconds; counts are whole numbers. A malformed value
//! is an operator error that would silence or garble every alert, so it fails the run and
//! names the key and the value rather than falling back to the default.

use crate::bindings::config;

const REDIS_LATENCY_WARN_MS: &str = "redis_latency_warn_ms";
const REDIS_LATENCY_CRITICAL_MS: &str = "redis_latency_critical_ms";
const BACKLOG_WARN: &str = "backlog_warn";
const BACKLOG_CRITICAL: &str = "backlog_critical";
const DEAD_WARN: &str = "dead_warn";
const LLM_LATENCY_WARN_MS: &str = "llm_latency_warn_ms";

#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub redis_latency_warn_ms: f64,
    pub redis_latency_critical_ms: f64,
    pub backlog_warn: u64,
    pub backlog_critical: u64,
    /// 0 disables the dead-letter warning.
    pub dead_warn: u64,
    pub llm_latency_warn_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            redis_latency_warn_ms: 50.0,
            redis_latency_critical_ms: 500.0,
            backlog_warn: 1000,
            backlog_critical: 10_000,
            dead_warn: 1,
            llm_latency_warn_ms: 2000.0,
        }
    }
}

/// The thresholds of this component's config.
pub fn load() -> Result<Thresholds, String> {
    parse(config::get)
}

/// The thresholds, reading each key through `get` (none: the default applies).
fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Thresholds, String> {
    let default = Thresholds::default();
    Ok(Thresholds {
        redis_latency_warn_ms: millis(
            get(REDIS_LATENCY_WARN_MS),
            REDIS_LATENCY_WARN_MS,
            default.redis_latency_warn_ms,
        )?,
        redis_latency_critical_ms: millis(
            get(REDIS_LATENCY_CRITICAL_MS),
            REDIS_LATENCY_CRITICAL_MS,
            default.redis_latency_critical_ms,
        )?,
        backlog_warn: count(get(BACKLOG_WARN), BACKLOG_WARN, default.backlog_warn)?,
        backlog_critical: count(
            get(BACKLOG_CRITICAL),
            BACKLOG_CRITICAL,
            default.backlog_critical,
        )?,
        dead_warn: count(get(DEAD_WARN), DEAD_WARN, default.dead_warn)?,
        llm_latency_warn_ms: millis(
            get(LLM_LATENCY_WARN_MS),
            LLM_LATENCY_WARN_MS,
            default.llm_latency_warn_ms,
        )?,
    })
}

/// A non-negative, finite number of milliseconds.
fn millis(raw: Option<String>, key: &str, default: f64) -> Result<f64, String> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(invalid(
            key,
            &format!("expected a number of milliseconds, got `{raw}`"),
        )),
    }
}

/// A whole number of jobs.
fn count(raw: Option<String>, key: &str, default: u64) -> Result<u64, String> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.trim()
        .parse()
        .map_err(|_| invalid(key, &format!("expected a whole number, got `{raw}`")))
}

fn invalid(key: &str, reason: &str) -> String {
    format!("component config `{key}` is invalid: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thresholds of a config holding `pairs`.
    fn from(pairs: &[(&str, &str)]) -> Result<Thresholds, String> {
        parse(|key| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_apply_when_unset() {
        assert_eq!(
            from(&[]),
            Ok(Thresholds {
                redis_latency_warn_ms: 50.0,
                redis_latency_critical_ms: 500.0,
                backlog_warn: 1000,
                backlog_critical: 10_000,
                dead_warn: 1,
                llm_latency_warn_ms: 2000.0,
            })
        );
    }

    #[test]
    fn configured_values_are_used() {
        let thresholds = from(&[
            ("redis_latency_warn_ms", "0.5"),
            ("redis_latency_critical_ms", " 20 "),
            ("backlog_warn", "10"),
            ("backlog_critical", "100"),
            ("dead_warn", "0"),
            ("llm_latency_warn_ms", "1e3"),
        ]);
        assert_eq!(
            thresholds,
            Ok(Thresholds {
                redis_latency_warn_ms: 0.5,
                redis_latency_critical_ms: 20.0,
                backlog_warn: 10,
                backlog_critical: 100,
                dead_warn: 0,
                llm_latency_warn_ms: 1000.0,
            })
        );
    }

    #[test]
    fn malformed_values_name_the_key_and_the_value() {
        assert_eq!(
            from(&[("backlog_warn", "lots")]),
            Err(
                "component config `backlog_warn` is invalid: expected a whole number, got `lots`"
                    .to_owned()
            )
        );
        assert_eq!(
            from(&[("dead_warn", "-1")]),
            Err(
                "component config `dead_warn` is invalid: expected a whole number, got `-1`"
                    .to_owned()
            )
        );
        assert_eq!(
            from(&[("backlog_critical", "1.5")]),
            Err(
                "component config `backlog_critical` is invalid: expected a whole number, got `1.5`"
                    .to_owned()
            )
        );
        assert_eq!(
            from(&[("redis_latency_warn_ms", "50ms")]),
            Err("component config `redis_latency_warn_ms` is invalid: expected a number of milliseconds, got `50ms`".to_owned())
        );
        for bad in ["-1", "NaN", "inf", ""] {
            let error = from(&[("llm_latency_warn_ms", bad)]).expect_err(bad);
            assert!(
                error.starts_with("component config `llm_latency_warn_ms` is invalid"),
                "{error}"
            );
        }
        assert!(
            from(&[("redis_latency_critical_ms", "x")])
                .expect_err("not a number")
                .contains("`redis_latency_critical_ms`")
        );
    }
}
