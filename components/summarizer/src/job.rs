//! The job payload: `{"conversation_id": "...", "kind"?: "summary" | "title", "agent"?:
//! "..."}`, other fields ignored. A missing (or `null`) `kind` is a summary, which is what
//! jobs enqueued before titles existed mean.
//!
//! A payload that does not parse, has an unknown `kind` or a bad id can never succeed, so
//! every error here becomes a permanent failure (dead letter) rather than a retry.

use conversation_store::{ID_RULE, is_valid_id};
use serde::Deserialize;

/// What to write for the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A few sentences at `summary:{id}`.
    Summary,
    /// A few words at `title:{id}`.
    Title,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ConversationJob {
    pub conversation_id: String,
    pub kind: Kind,
}

#[derive(Deserialize)]
struct Payload {
    conversation_id: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The job in `payload`, or what is wrong with it.
pub fn parse(payload: &str) -> Result<ConversationJob, String> {
    let payload: Payload = serde_json::from_str(payload)
        .map_err(|error| format!("payload is not a summarizer job: {error}"))?;
    let kind = match payload.kind.as_deref() {
        None | Some("summary") => Kind::Summary,
        Some("title") => Kind::Title,
        Some(other) => {
            return Err(format!(
                "payload field `kind` must be \"summary\", \"title\" or absent, got {other:?}"
            ));
        }
    };
    if !is_valid_id(&payload.conversation_id) {
        return Err(format!(
            "payload field `conversation_id` must be {ID_RULE}, got {:?}",
            payload.conversation_id
        ));
    }
    Ok(ConversationJob {
        conversation_id: payload.conversation_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, kind: Kind) -> Result<ConversationJob, String> {
        Ok(ConversationJob {
            conversation_id: id.to_owned(),
            kind,
        })
    }

    #[test]
    fn parses_the_jobs_chat_enqueues() {
        assert_eq!(
            parse(r#"{"conversation_id":"c-1","agent":"general","kind":"summary"}"#),
            job("c-1", Kind::Summary)
        );
        assert_eq!(
            parse(r#"{"conversation_id":"c-1","kind":"title"}"#),
            job("c-1", Kind::Title)
        );
    }

    #[test]
    fn a_job_without_a_kind_is_a_summary() {
        // What chat enqueued before titles existed; such jobs may still be waiting.
        assert_eq!(
            parse(r#"{"conversation_id":"c-1","agent":"general"}"#),
            job("c-1", Kind::Summary)
        );
        assert_eq!(
            parse(r#"{"conversation_id":"c-1"}"#),
            job("c-1", Kind::Summary)
        );
        assert_eq!(
            parse(r#"{"conversation_id":"c-1","kind":null}"#),
            job("c-1", Kind::Summary)
        );
    }

    #[test]
    fn an_unknown_kind_is_named() {
        assert_eq!(
            parse(r#"{"conversation_id":"c-1","kind":"headline"}"#).expect_err("unknown kind"),
            "payload field `kind` must be \"summary\", \"title\" or absent, got \"headline\""
        );
        assert_eq!(
            parse(r#"{"conversation_id":"c-1","kind":"Title"}"#).expect_err("kinds are lowercase"),
            "payload field `kind` must be \"summary\", \"title\" or absent, got \"Title\""
        );
        let error = parse(r#"{"conversation_id":"c-1","kind":1}"#).expect_err("wrong type");
        assert!(error.contains("invalid type: integer `1`"), "{error}");
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let error = parse("oops").expect_err("not JSON");
        assert!(
            error.starts_with("payload is not a summarizer job: expected value"),
            "{error}"
        );
        let error = parse(r#"{"agent":"a"}"#).expect_err("no id");
        assert!(error.contains("missing field `conversation_id`"), "{error}");
        let error = parse(r#"{"kind":"title"}"#).expect_err("no id for a title either");
        assert!(error.contains("missing field `conversation_id`"), "{error}");
        let error = parse(r#"{"conversation_id":7}"#).expect_err("wrong type");
        assert!(error.contains("invalid type: integer `7`"), "{error}");
        let error = parse(r#"{"conversation_id":"a:b","kind":"title"}"#).expect_err("bad id");
        assert_eq!(
            error,
            "payload field `conversation_id` must be 1 to 128 characters of A-Z, a-z, 0-9, `_` or `-`, got \"a:b\""
        );
    }
}
