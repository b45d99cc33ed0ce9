//! The background jobs chat hands to queue processors: title a new conversation, summarize
//! a long one, and clean up a deleted one.
//!
//! Payloads are small JSON objects (the processors' contract, see `components/README.md`).
//! A title or a summary is a nicety, so failing to ask for one never fails the chat answer:
//! it is logged and the answer goes out. A cleanup is what `DELETE` promises, so its failure
//! is the request's failure.

use crate::bindings::queue;
use crate::error::ApiError;
use crate::log;
use crate::settings::SummarySettings;
use serde::Serialize;

/// What the summarizer writes for a conversation: the `kind` of its job.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Summary,
    Title,
}

#[derive(Serialize)]
struct SummarizeJob<'a> {
    conversation_id: &'a str,
    agent: &'a str,
    kind: Kind,
}

#[derive(Serialize)]
struct TitleJob<'a> {
    conversation_id: &'a str,
    kind: Kind,
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
        kind: Kind::Summary,
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

/// Asks for a summary now (`POST /api/conversations/{id}/summarize`) and returns the job id;
/// not deduplicated, as the conversation may have grown since the last summary.
pub fn request_summary_now(conversation_id: &str, queue_name: &str) -> Result<String, ApiError> {
    let job = TitleJob {
        conversation_id,
        kind: Kind::Summary,
    };
    enqueue(queue_name, &job, &default_options())
}

/// Asks for a title after the first exchange of a conversation; logs a failure.
///
/// `previous` is how many messages the conversation held before this turn (see
/// [`wants_title`]). The dedup key `title:{id}` keeps a repeat out inside the queue's dedup
/// window, and cannot collide with the summary's (the bare id) should both kinds of job be
/// configured onto one queue.
pub fn request_title(conversation_id: &str, previous: usize, queue_name: &str) {
    if !wants_title(previous) {
        return;
    }
    let job = TitleJob {
        conversation_id,
        kind: Kind::Title,
    };
    let options = queue::EnqueueOptions {
        dedup_key: Some(format!("title:{conversation_id}")),
        ..default_options()
    };
    if let Err(error) = enqueue(queue_name, &job, &options) {
        log::warn(&format!(
            "conversation `{conversation_id}` was not queued for a title: {}",
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

/// Whether this turn is the conversation's first: nothing was stored before it.
///
/// Decided on the history before the turn, not on what is stored after it: the stored
/// count is capped by `history_max_messages`, so with a limit of 2 it is 2 after every turn
/// and with a limit of 1 it is never 2, and a count of 1 before the turn is a later turn
/// under a limit of 1. A history that expired, was deleted or no longer parses counts as
/// empty, so that conversation is titled afresh.
fn wants_title(previous: usize) -> bool {
    previous == 0
}

fn default_options() -> queue::EnqueueOptions {
    queue::EnqueueOptions {
        delay_ms: None,
        max_attempts: None,
        backoff: None,
        dedup_key: None,
        priority: None,
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
    use crate::history;

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
    fn only_the_first_exchange_wants_a_title() {
        assert!(wants_title(0));
        assert!(!wants_title(1));
        assert!(!wants_title(2));
        assert!(!wants_title(20));
    }

    #[test]
    fn a_title_is_asked_for_once_whatever_the_history_limit() {
        for max_messages in [1, 2, 3, 4, 20] {
            let mut stored = Vec::new();
            let mut asked = Vec::new();
            for turn in 0..4 {
                asked.push(wants_title(stored.len()));
                let (question, answer) = (format!("q{turn}"), format!("a{turn}"));
                stored = history::append_exchange(stored, &question, &answer, max_messages);
            }
            assert_eq!(
                asked,
                [true, false, false, false],
                "history_max_messages = {max_messages}"
            );
        }
    }

    #[test]
    fn payloads_are_the_processors_contract() {
        let summarize = SummarizeJob {
            conversation_id: "c-1",
            agent: "general",
            kind: Kind::Summary,
        };
        assert_eq!(
            serde_json::to_string(&summarize).expect("serializes"),
            r#"{"conversation_id":"c-1","agent":"general","kind":"summary"}"#
        );
        let title = TitleJob {
            conversation_id: "c-1",
            kind: Kind::Title,
        };
        assert_eq!(
            serde_json::to_string(&title).expect("serializes"),
            r#"{"conversation_id":"c-1","kind":"title"}"#
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
