//! Reading stream entries straight from Redis replies.
//!
//! Jobs are read on the hot path (every delivery), so entries are parsed from the raw reply
//! in one pass over their field/value pairs, without the per-entry `HashMap` and per-field
//! `String`s that the generic stream reply types build.

use redis::Value;

use super::queue_of_stream;
use crate::queue::{Delivery, Job};

/// The fields of a job this module knows, borrowed from a reply: a stream entry's, a delayed
/// job's hash, a completed job's record or a dead letter.
#[derive(Default)]
pub(super) struct Fields<'a> {
    job_id: Option<&'a str>,
    payload: Option<&'a str>,
    attempt: Option<&'a str>,
    max_attempts: Option<&'a str>,
    backoff: Option<&'a str>,
    enqueued_at: Option<&'a str>,
    /// An immediate job's id suffix (`x`): its id is `ENTRY.SUFFIX`.
    suffix: Option<&'a str>,
    /// The previous attempt's error (`e`), on a retry.
    last_error: Option<&'a str>,
    /// A dead letter's error and time.
    pub error: Option<&'a str>,
    pub failed_at: Option<&'a str>,
    /// A completed record's result and times (`r`, `s`, `f`).
    pub result: Option<&'a str>,
    pub started: Option<&'a str>,
    pub finished: Option<&'a str>,
    /// The last progress (`g`).
    pub progress: Option<&'a str>,
    /// The job's priority (`q`), on a queue with priorities.
    priority: Option<&'a str>,
    /// The enqueuer's `traceparent` (`tc`), written only with tracing on.
    trace_context: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// Reads a flat `[field, value, ...]` list; unknown fields are skipped.
    pub fn read(values: &'a [Value]) -> Self {
        let mut f = Fields::default();
        for pair in values.chunks_exact(2) {
            let value = text(&pair[1]);
            let Some(name) = text(&pair[0]) else {
                continue;
            };
            match name {
                "id" => f.job_id = value,
                "p" => f.payload = value,
                "a" => f.attempt = value,
                "m" => f.max_attempts = value,
                "b" => f.backoff = value,
                "t" => f.enqueued_at = value,
                "e" => f.last_error = value.filter(|e| !e.is_empty()),
                "x" => f.suffix = value,
                "error" => f.error = value,
                "failed_at" => f.failed_at = value,
                "r" => f.result = value,
                "s" => f.started = value,
                "f" => f.finished = value,
                "g" => f.progress = value,
                "q" => f.priority = value,
                "tc" => f.trace_context = value.filter(|tc| !tc.is_empty()),
                _ => {}
            }
        }
        f
    }

    /// The job the fields hold; `None` when a field is missing or malformed. A stream entry
    /// without an `id` field is a job enqueued there directly: its id is `ENTRY.SUFFIX`.
    pub fn job(&self, queue: &str, entry: Option<&str>) -> Option<Job> {
        let id = match (self.job_id, entry, self.suffix) {
            (Some(id), _, _) => id.to_string(),
            (None, Some(entry), Some(suffix)) => format!("{entry}.{suffix}"),
            _ => return None,
        };
        Some(Job {
            id,
            queue: queue.to_string(),
            payload: self.payload?.to_string(),
            attempt: self.attempt?.parse().ok()?,
            max_attempts: self.max_attempts?.parse().ok()?,
            backoff: self.backoff?.parse().ok()?,
            enqueued_at_ms: self.enqueued_at?.parse().ok()?,
            last_error: self.last_error.map(str::to_string),
            priority: match self.priority {
                Some(p) => p.parse().ok()?,
                None => 0,
            },
            trace_context: self.trace_context.map(str::to_string),
        })
    }
}

/// A stream entry: its id and its fields.
pub(super) struct Entry<'a> {
    pub id: &'a str,
    pub fields: Fields<'a>,
}

impl Entry<'_> {
    pub fn job(&self, queue: &str) -> Option<Job> {
        self.fields.job(queue, Some(self.id))
    }
}

pub(super) fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Parses one `[id, [field, value, ...]]` entry; `None` for a deleted or foreign entry.
pub(super) fn entry(value: &Value) -> Option<Entry<'_>> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    Some(Entry {
        id: text(id)?,
        fields: Fields::read(fields),
    })
}

/// The (stream key, entries) pairs of an `XREADGROUP` reply: a RESP2 array or a RESP3 map;
/// none when it timed out (nil).
pub(super) fn streams(reply: &Value) -> Vec<(&Value, &Value)> {
    match reply {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some((&kv[0], &kv[1])),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    }
}

/// The deliveries in an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when it timed out).
pub(super) fn deliveries(reply: &Value, prefix: &str) -> Vec<Delivery> {
    let streams = streams(reply);
    let mut out = Vec::new();
    for (key, entries) in streams {
        let (Some(queue), Value::Array(entries)) =
            (text(key).and_then(|k| queue_of_stream(prefix, k)), entries)
        else {
            continue;
        };
        for value in entries {
            match entry(value).and_then(|e| {
                Some(Delivery {
                    job: e.job(queue)?,
                    receipt: e.id.to_string(),
                })
            }) {
                Some(delivery) => out.push(delivery),
                None => tracing::warn!(queue, "skipping a stream entry that is not a job"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn job_entry(id: &str, attempt: &str) -> Value {
        let fields = [
            "id", "j1", "p", "{}", "a", attempt, "m", "3", "b", "fixed:1s", "t", "5",
        ];
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn reads_jobs_from_a_group_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("llmchat:{jobs}:stream"),
            Value::Array(vec![job_entry("1-0", "2"), job_entry("2-0", "x")]),
        ])]);
        let got = deliveries(&reply, "llmchat");
        assert_eq!(
            got.len(),
            1,
            "the entry with a malformed attempt is skipped"
        );
        assert_eq!(
            (
                got[0].receipt.as_str(),
                got[0].job.attempt,
                got[0].job.queue.as_str()
            ),
            ("1-0", 2, "jobs")
        );
        assert!(deliveries(&Value::Nil, "llmchat").is_empty());
    }
}
