//! The component config: `prompt` (the summarizing instruction, default
//! [`DEFAULT_PROMPT`]) and `summary_ttl_seconds` (how long a summary lives, default 86400,
//! the same as chat's history).
//!
//! A bad value is an operator error that no retry can fix, so it fails the job and names
//! the key.

use crate::bindings::config;
use crate::prompt::DEFAULT_PROMPT;

const PROMPT_KEY: &str = "prompt";
const TTL_SECONDS_KEY: &str = "summary_ttl_seconds";
const DEFAULT_TTL_SECONDS: u64 = 86_400;

#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    pub prompt: String,
    /// What `kv::set` takes: `summary_ttl_seconds` × 1000.
    pub ttl_ms: u64,
}

pub fn load() -> Result<Settings, String> {
    parse(
        config::get(PROMPT_KEY).as_deref(),
        config::get(TTL_SECONDS_KEY).as_deref(),
    )
}

fn parse(prompt: Option<&str>, ttl_seconds: Option<&str>) -> Result<Settings, String> {
    let invalid =
        |key: &str, reason: &str| format!("component config `{key}` is invalid: {reason}");
    let prompt = match prompt {
        None => DEFAULT_PROMPT.to_owned(),
        Some(prompt) if prompt.trim().is_empty() => {
            return Err(invalid(PROMPT_KEY, "it is empty"));
        }
        Some(prompt) => prompt.to_owned(),
    };
    let ttl_seconds = match ttl_seconds {
        None => DEFAULT_TTL_SECONDS,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(value) if value > 0 => value,
            _ => {
                let reason = format!("expected a positive whole number, got `{raw}`");
                return Err(invalid(TTL_SECONDS_KEY, &reason));
            }
        },
    };
    let ttl_ms = ttl_seconds
        .checked_mul(1000)
        .ok_or_else(|| invalid(TTL_SECONDS_KEY, "the value is too large"))?;
    Ok(Settings { prompt, ttl_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        assert_eq!(
            parse(None, None).expect("defaults are valid"),
            Settings {
                prompt: DEFAULT_PROMPT.to_owned(),
                ttl_ms: 86_400_000
            }
        );
    }

    #[test]
    fn configured_values_are_used() {
        let settings = parse(Some("One line."), Some("60")).expect("valid values");
        assert_eq!(settings.prompt, "One line.");
        assert_eq!(settings.ttl_ms, 60_000);
    }

    #[test]
    fn bad_values_name_the_key() {
        assert_eq!(
            parse(Some(" "), None).expect_err("blank prompt"),
            "component config `prompt` is invalid: it is empty"
        );
        assert_eq!(
            parse(None, Some("0")).expect_err("zero ttl"),
            "component config `summary_ttl_seconds` is invalid: expected a positive whole number, got `0`"
        );
        assert!(
            parse(None, Some(&u64::MAX.to_string()))
                .expect_err("overflows")
                .contains("too large")
        );
    }
}
