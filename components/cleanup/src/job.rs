//! The job payload: `{"conversation_id": "..."}` or `{"kind": "sweep"}`, other fields
//! ignored.
//!
//! A payload that does not parse, has an unknown `kind` or a bad id can never succeed, so
//! every error here becomes a permanent failure (dead letter) rather than a retry.

use conversation_store::{ID_RULE, is_valid_id};
use serde::Deserialize;

#[derive(Debug, PartialEq, Eq)]
pub enum CleanupJob {
    /// Delete the keys of this conversation.
    Conversation(String),
    /// The scheduled run.
    Sweep,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
}

/// The job in `payload`, or what is wrong with it.
pub fn parse(payload: &str) -> Result<CleanupJob, String> {
    let payload: Payload = serde_json::from_str(payload)
        .map_err(|error| format!("payload is not a cleanup job: {error}"))?;
    match (payload.kind.as_deref(), payload.conversation_id) {
        (Some("sweep"), _) => Ok(CleanupJob::Sweep),
        (Some(kind), _) => Err(format!(
            "payload field `kind` must be \"sweep\" or absent, got {kind:?}"
        )),
        (None, None) => Err("payload has neither `conversation_id` nor `kind`".to_owned()),
        (None, Some(id)) if !is_valid_id(&id) => Err(format!(
            "payload field `conversation_id` must be {ID_RULE}, got {id:?}"
        )),
        (None, Some(id)) => Ok(CleanupJob::Conversation(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_of_job() {
        assert_eq!(
            parse(r#"{"conversation_id":"c-1"}"#),
            Ok(CleanupJob::Conversation("c-1".to_owned()))
        );
        assert_eq!(parse(r#"{"kind":"sweep"}"#), Ok(CleanupJob::Sweep));
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let error = parse("[").expect_err("not JSON");
        assert!(
            error.starts_with("payload is not a cleanup job: "),
            "{error}"
        );
        assert_eq!(
            parse("{}").expect_err("empty"),
            "payload has neither `conversation_id` nor `kind`"
        );
        assert_eq!(
            parse(r#"{"kind":"purge"}"#).expect_err("unknown kind"),
            "payload field `kind` must be \"sweep\" or absent, got \"purge\""
        );
        assert!(
            parse(r#"{"conversation_id":"a/b"}"#)
                .expect_err("bad id")
                .contains("must be 1 to 128 characters")
        );
        assert!(
            parse(r#"{"conversation_id":1}"#)
                .expect_err("wrong type")
                .contains("invalid type: integer `1`")
        );
    }
}
