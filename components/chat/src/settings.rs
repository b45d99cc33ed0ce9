//! The component's settings, read from the component config with their defaults.
//!
//! `history_max_messages` (default 20) bounds what one conversation keeps in kv;
//! `history_ttl_seconds` (default 86400) makes an idle conversation expire, so the store
//! never grows without bound. `summarize_after` (default 10) is how long a conversation
//! gets before a summary is asked for, on queue `summarize_queue` (default `summarize`);
//! a title is asked for after the first exchange, on `title_queue` (default `titles`); a
//! deleted conversation is cleaned up on `cleanup_queue` (default `cleanup`).
//!
//! A bad value fails the request with a 500 naming the key, before any work is done.

use crate::bindings::config;
use crate::error::ApiError;

const MAX_MESSAGES_KEY: &str = "history_max_messages";
const TTL_SECONDS_KEY: &str = "history_ttl_seconds";
const SUMMARIZE_AFTER_KEY: &str = "summarize_after";
const SUMMARIZE_QUEUE_KEY: &str = "summarize_queue";
const TITLE_QUEUE_KEY: &str = "title_queue";
const CLEANUP_QUEUE_KEY: &str = "cleanup_queue";
const DEFAULT_MAX_MESSAGES: usize = 20;
const DEFAULT_TTL_SECONDS: u64 = 86_400;
const DEFAULT_SUMMARIZE_AFTER: usize = 10;
const DEFAULT_SUMMARIZE_QUEUE: &str = "summarize";
const DEFAULT_TITLE_QUEUE: &str = "titles";
const DEFAULT_CLEANUP_QUEUE: &str = "cleanup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// The most messages a conversation keeps; older ones are dropped first.
    pub max_messages: usize,
    /// How long an untouched conversation lives, in milliseconds (what `kv::set` takes).
    pub ttl_ms: u64,
}

/// When and where to ask for a conversation summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummarySettings {
    /// A conversation holding at least this many messages gets summarized.
    pub after: usize,
    /// The queue the summarizer consumes.
    pub queue: String,
}

pub fn history() -> Result<HistorySettings, ApiError> {
    parse_history(
        config::get(MAX_MESSAGES_KEY).as_deref(),
        config::get(TTL_SECONDS_KEY).as_deref(),
    )
}

pub fn summary() -> Result<SummarySettings, ApiError> {
    parse_summary(
        config::get(SUMMARIZE_AFTER_KEY).as_deref(),
        config::get(SUMMARIZE_QUEUE_KEY).as_deref(),
    )
}

/// The queue that titles new conversations (the summarizer consumes it).
pub fn title_queue() -> Result<String, ApiError> {
    queue_name(
        TITLE_QUEUE_KEY,
        config::get(TITLE_QUEUE_KEY).as_deref(),
        DEFAULT_TITLE_QUEUE,
    )
}

/// The queue the cleanup processor consumes.
pub fn cleanup_queue() -> Result<String, ApiError> {
    queue_name(
        CLEANUP_QUEUE_KEY,
        config::get(CLEANUP_QUEUE_KEY).as_deref(),
        DEFAULT_CLEANUP_QUEUE,
    )
}

fn parse_history(
    max_messages: Option<&str>,
    ttl_seconds: Option<&str>,
) -> Result<HistorySettings, ApiError> {
    let max_messages = positive(MAX_MESSAGES_KEY, max_messages, DEFAULT_MAX_MESSAGES as u64)?;
    let ttl_seconds = positive(TTL_SECONDS_KEY, ttl_seconds, DEFAULT_TTL_SECONDS)?;
    Ok(HistorySettings {
        max_messages: to_usize(MAX_MESSAGES_KEY, max_messages)?,
        ttl_ms: ttl_seconds
            .checked_mul(1000)
            .ok_or_else(|| too_large(TTL_SECONDS_KEY))?,
    })
}

fn parse_summary(after: Option<&str>, queue: Option<&str>) -> Result<SummarySettings, ApiError> {
    let after = positive(SUMMARIZE_AFTER_KEY, after, DEFAULT_SUMMARIZE_AFTER as u64)?;
    Ok(SummarySettings {
        after: to_usize(SUMMARIZE_AFTER_KEY, after)?,
        queue: queue_name(SUMMARIZE_QUEUE_KEY, queue, DEFAULT_SUMMARIZE_QUEUE)?,
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

fn to_usize(key: &'static str, value: u64) -> Result<usize, ApiError> {
    usize::try_from(value).map_err(|_| too_large(key))
}

fn too_large(key: &'static str) -> ApiError {
    ApiError::Config {
        key,
        reason: "the value is too large".to_owned(),
    }
}

/// A queue name; the manifest decides which queues exist, so only emptiness is checked here.
fn queue_name(key: &'static str, raw: Option<&str>, default: &str) -> Result<String, ApiError> {
    match raw.map(str::trim) {
        None => Ok(default.to_owned()),
        Some("") => Err(ApiError::Config {
            key,
            reason: "expected a queue name, got an empty string".to_owned(),
        }),
        Some(name) => Ok(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let settings = parse_history(None, None).expect("defaults are valid");
        assert_eq!(
            settings,
            HistorySettings {
                max_messages: 20,
                ttl_ms: 86_400_000
            }
        );
        assert_eq!(
            parse_summary(None, None).expect("defaults are valid"),
            SummarySettings {
                after: 10,
                queue: "summarize".to_owned()
            }
        );
    }

    #[test]
    fn configured_values_are_used() {
        let settings = parse_history(Some("4"), Some("60")).expect("valid values");
        assert_eq!(settings.max_messages, 4);
        assert_eq!(settings.ttl_ms, 60_000);
        let summary = parse_summary(Some(" 6 "), Some("digest")).expect("valid values");
        assert_eq!(summary.after, 6);
        assert_eq!(summary.queue, "digest");
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = parse_history(Some("0"), None).expect_err("zero is rejected");
        assert_eq!(
            error.message(),
            "component config `history_max_messages` is invalid: expected a positive whole number, got `0`"
        );
        let error = parse_history(None, Some("soon")).expect_err("text is rejected");
        assert!(error.message().contains("`history_ttl_seconds`"));
        let error = parse_history(None, Some(&u64::MAX.to_string())).expect_err("overflows");
        assert!(error.message().contains("too large"));
        let error = parse_summary(Some("-1"), None).expect_err("negative is rejected");
        assert!(error.message().contains("`summarize_after`"));
        let error = parse_summary(None, Some(" ")).expect_err("blank is rejected");
        assert_eq!(
            error.message(),
            "component config `summarize_queue` is invalid: expected a queue name, got an empty string"
        );
    }

    #[test]
    fn queue_names_default_and_are_trimmed() {
        let title = |raw| queue_name(TITLE_QUEUE_KEY, raw, DEFAULT_TITLE_QUEUE);
        assert_eq!(title(None).expect("default"), "titles");
        assert_eq!(title(Some(" names ")).expect("configured"), "names");
        assert_eq!(
            title(Some("")).expect_err("empty is rejected").message(),
            "component config `title_queue` is invalid: expected a queue name, got an empty string"
        );
    }
}
