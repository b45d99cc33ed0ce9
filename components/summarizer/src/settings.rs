//! The component config: `prompt` (the summarizing instruction, default
//! [`DEFAULT_PROMPT`]), `title_prompt` (the titling instruction, default
//! [`DEFAULT_TITLE_PROMPT`]) and `summary_ttl_seconds` (how long a summary or a title
//! lives, default 86400, the same as chat's history).
//!
//! A bad value is an operator error that no retry can fix, so it fails the job and names
//! the key.

use crate::bindings::config;
use crate::prompt::{DEFAULT_PROMPT, DEFAULT_TITLE_PROMPT};

const PROMPT_KEY: &str = "prompt";
const TITLE_PROMPT_KEY: &str = "title_prompt";
const TTL_SECONDS_KEY: &str = "summary_ttl_seconds";
const DEFAULT_TTL_SECONDS: u64 = 86_400;

#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    pub prompt: String,
    pub title_prompt: String,
    /// What `kv::set` takes for a summary or a title: `summary_ttl_seconds` × 1000.
    pub ttl_ms: u64,
}

pub fn load() -> Result<Settings, String> {
    parse(
        config::get(PROMPT_KEY).as_deref(),
        config::get(TITLE_PROMPT_KEY).as_deref(),
        config::get(TTL_SECONDS_KEY).as_deref(),
    )
}

fn parse(
    prompt: Option<&str>,
    title_prompt: Option<&str>,
    ttl_seconds: Option<&str>,
) -> Result<Settings, String> {
    let prompt = instruction(PROMPT_KEY, prompt, DEFAULT_PROMPT)?;
    let title_prompt = instruction(TITLE_PROMPT_KEY, title_prompt, DEFAULT_TITLE_PROMPT)?;
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
    Ok(Settings {
        prompt,
        title_prompt,
        ttl_ms,
    })
}

/// A prompt from the config, or `default` when the key is not set; a blank one is refused.
fn instruction(key: &str, raw: Option<&str>, default: &str) -> Result<String, String> {
    match raw {
        None => Ok(default.to_owned()),
        Some(raw) if raw.trim().is_empty() => Err(invalid(key, "it is empty")),
        Some(raw) => Ok(raw.to_owned()),
    }
}

fn invalid(key: &str, reason: &str) -> String {
    format!("component config `{key}` is invalid: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        assert_eq!(
            parse(None, None, None).expect("defaults are valid"),
            Settings {
                prompt: DEFAULT_PROMPT.to_owned(),
                title_prompt: DEFAULT_TITLE_PROMPT.to_owned(),
                ttl_ms: 86_400_000
            }
        );
    }

    #[test]
    fn configured_values_are_used() {
        let settings =
            parse(Some("One line."), Some("Two words."), Some("60")).expect("valid values");
        assert_eq!(settings.prompt, "One line.");
        assert_eq!(settings.title_prompt, "Two words.");
        assert_eq!(settings.ttl_ms, 60_000);
    }

    #[test]
    fn bad_values_name_the_key() {
        assert_eq!(
            parse(Some(" "), None, None).expect_err("blank prompt"),
            "component config `prompt` is invalid: it is empty"
        );
        assert_eq!(
            parse(None, Some("\n"), None).expect_err("blank title prompt"),
            "component config `title_prompt` is invalid: it is empty"
        );
        assert_eq!(
            parse(None, None, Some("0")).expect_err("zero ttl"),
            "component config `summary_ttl_seconds` is invalid: expected a positive whole number, got `0`"
        );
        assert!(
            parse(None, None, Some(&u64::MAX.to_string()))
                .expect_err("overflows")
                .contains("too large")
        );
    }
}
