//! Token usage counters in kv, read by the `usage` monitor (components/python/usage, with
//! `kv_namespace = "chat"`): `usage:requests`, `usage:tokens_in`, `usage:tokens_out`.
//! Counting must never fail an answer, so kv errors are only logged.

use crate::bindings::{kv, llm};
use crate::log;

pub const REQUESTS: &str = "usage:requests";
pub const TOKENS_IN: &str = "usage:tokens_in";
pub const TOKENS_OUT: &str = "usage:tokens_out";

/// Counts one completion and its tokens, when the provider reported them.
pub fn record(usage: Option<&llm::Usage>) {
    let mut counts = vec![(REQUESTS, 1i64)];
    if let Some(u) = usage {
        counts.push((TOKENS_IN, i64::from(u.prompt_tokens)));
        counts.push((TOKENS_OUT, i64::from(u.completion_tokens)));
    }
    for (key, delta) in counts {
        if let Err(e) = kv::increment(key, delta) {
            log::warn(&format!("counting usage in `{key}` failed: {e:?}"));
        }
    }
}
