//! The history limits, read from the component config with their defaults.
//!
//! `history_max_messages` (default 20) bounds what one conversation keeps in kv;
//! `history_ttl_seconds` (default 86400) makes an idle conversation expire, so the store
//! never grows without bound.

use crate::bindings::config;
use crate::error::ApiError;

const MAX_MESSAGES_KEY: &str = "history_max_messages";
const TTL_SECONDS_KEY: &str = "history_ttl_seconds";
const DEFAULT_MAX_MESSAGES: usize = 20;
const DEFAULT_TTL_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// The most messages a conversation keeps; older ones are dropped first.
    pub max_messages: usize,
    /// How long an untouched conversation lives, in milliseconds (what `kv::set` takes).
    pub ttl_ms: u64,
}

pub fn history() -> Result<HistorySettings, ApiError> {
    parse(
        config::get(MAX_MESSAGES_KEY).as_deref(),
        config::get(TTL_SECONDS_KEY).as_deref(),
    )
}

fn parse(
    max_messages: Option<&str>,
    ttl_seconds: Option<&str>,
) -> Result<HistorySettings, ApiError> {
    let max_messages = positive(MAX_MESSAGES_KEY, max_messages, DEFAULT_MAX_MESSAGES as u64)?;
    let ttl_seconds = positive(TTL_SECONDS_KEY, ttl_seconds, DEFAULT_TTL_SECONDS)?;
    let too_large = |key| ApiError::Config {
        key,
        reason: "the value is too large".to_owned(),
    };
    Ok(HistorySettings {
        max_messages: usize::try_from(max_messages).map_err(|_| too_large(MAX_MESSAGES_KEY))?,
        ttl_ms: ttl_seconds
            .checked_mul(1000)
            .ok_or_else(|| too_large(TTL_SECONDS_KEY))?,
    })
}

fn positive(key: &'static str, raw: Option<&str>, default: u64) -> Result<u64, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(ApiError::Config {
            key,
            reason: format!("expected a positive whole number, got `{raw}`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let settings = parse(None, None).expect("defaults are valid");
        assert_eq!(
            settings,
            HistorySettings {
                max_messages: 20,
                ttl_ms: 86_400_000
            }
        );
    }

    #[test]
    fn configured_values_are_used() {
        let settings = parse(Some("4"), Some("60")).expect("valid values");
        assert_eq!(settings.max_messages, 4);
        assert_eq!(settings.ttl_ms, 60_000);
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = parse(Some("0"), None).expect_err("zero is rejected");
        assert_eq!(
            error.message(),
            "component config `history_max_messages` is invalid: expected a positive whole number, got `0`"
        );
        let error = parse(None, Some("soon")).expect_err("text is rejected");
        assert!(error.message().contains("`history_ttl_seconds`"));
        let error = parse(None, Some(&u64::MAX.to_string())).expect_err("overflows");
        assert!(error.message().contains("too large"));
    }
}
