//! The background jobs chat hands to queue processors: summarize a long conversation, and
//! clean up a deleted one.
//!
//! Payloads are small JSON objects (the processors' contract, see `components/README.md`).
//! A summary is a nicety, so failing to ask for one never fails the chat answer: it is
//! logged and the answer goes out. A cleanup is what `DELETE` promises, so its failure is
//! the request's failure.

use crate::bindings::queue;
use crate::error::ApiError;
use crate::log;
use crate::settings::SummarySettings;
use serde::Serialize;

#[derive(Serialize)]
struct SummarizeJob<'a> {
    conversation_id: &'a str,
    agent: &'a str,
}

#[derive(Serialize)]
struct CleanupJob<'a> {
    conversation_id: &'a str,
}

/// Asks for a summary once the conversation holds enough messages; logs a failure.
///
/// `stored` is what the conversation holds after this turn and `max_messages` what it can
/// ever hold, so a `summarize_after` above the history limit still triggers at the limit.
/// The job is deduplicated on the conversation id, so later turns inside the queue's dedup
/// window do not pile up summaries of the same conversation.
pub fn request_summary(
    conversation_id: &str,
    agent: &str,
    stored: usize,
    max_messages: usize,
    settings: &SummarySettings,
) {
    if !wants_summary(stored, max_messages, settings.after) {
        return;
    }
    let job = SummarizeJob {
        conversation_id,
        agent,
    };
    let options = queue::EnqueueOptions {
        dedup_key: Some(conversation_id.to_owned()),
        ..default_options()
    };
    if let Err(error) = enqueue(&settings.queue, &job, &options) {
        log::warn(&format!(
            "conversation `{conversation_id}` was not queued for a summary: {}",
            error.message()
        ));
    }
}

/// Enqueues the deletion of a conversation's keys and returns the job id.
pub fn request_cleanup(conversation_id: &str, queue_name: &str) -> Result<String, ApiError> {
    enqueue(
        queue_name,
        &CleanupJob { conversation_id },
        &default_options(),
    )
}

fn wants_summary(stored: usize, max_messages: usize, after: usize) -> bool {
    stored >= after.min(max_messages)
}

fn default_options() -> queue::EnqueueOptions {
    queue::EnqueueOptions {
        delay_ms: None,
        max_attempts: None,
        backoff: None,
        dedup_key: None,
    }
}

fn enqueue(
    queue_name: &str,
    job: &impl Serialize,
    options: &queue::EnqueueOptions,
) -> Result<String, ApiError> {
    let payload = serde_json::to_string(job).expect("job payloads always serialize");
    queue::enqueue(queue_name, &payload, options).map_err(|error| ApiError::Queue {
        queue: queue_name.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_wanted_from_the_threshold_on() {
        assert!(!wants_summary(8, 20, 10));
        assert!(wants_summary(10, 20, 10));
        assert!(wants_summary(12, 20, 10));
    }

    #[test]
    fn a_threshold_above_the_history_limit_triggers_at_the_limit() {
        assert!(!wants_summary(3, 4, 10));
        assert!(wants_summary(4, 4, 10));
    }

    #[test]
    fn payloads_are_the_processors_contract() {
        let summarize = SummarizeJob {
            conversation_id: "c-1",
            agent: "general",
        };
        assert_eq!(
            serde_json::to_string(&summarize).expect("serializes"),
            r#"{"conversation_id":"c-1","agent":"general"}"#
        );
        let cleanup = CleanupJob {
            conversation_id: "c-1",
        };
        assert_eq!(
            serde_json::to_string(&cleanup).expect("serializes"),
            r#"{"conversation_id":"c-1"}"#
        );
    }
}
