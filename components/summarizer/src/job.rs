//! The job payload: `{"conversation_id": "...", "agent"?: "..."}`, other fields ignored.
//!
//! A payload that does not parse or carries a bad id can never succeed, so every error
//! here becomes a permanent failure (dead letter) rather than a retry.

use conversation_store::{ID_RULE, is_valid_id};
use serde::Deserialize;

#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct SummarizeJob {
    pub conversation_id: String,
}

/// The job in `payload`, or what is wrong with it.
pub fn parse(payload: &str) -> Result<SummarizeJob, String> {
    let job: SummarizeJob = serde_json::from_str(payload)
        .map_err(|error| format!("payload is not a summarize job: {error}"))?;
    if !is_valid_id(&job.conversation_id) {
        return Err(format!(
            "payload field `conversation_id` must be {ID_RULE}, got {:?}",
            job.conversation_id
        ));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_job_chat_enqueues() {
        let job = parse(r#"{"conversation_id":"c-1","agent":"general"}"#).expect("valid job");
        assert_eq!(job.conversation_id, "c-1");
        assert!(parse(r#"{"conversation_id":"c-1"}"#).is_ok());
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let error = parse("oops").expect_err("not JSON");
        assert!(
            error.starts_with("payload is not a summarize job: expected value"),
            "{error}"
        );
        let error = parse(r#"{"agent":"a"}"#).expect_err("no id");
        assert!(error.contains("missing field `conversation_id`"), "{error}");
        let error = parse(r#"{"conversation_id":7}"#).expect_err("wrong type");
        assert!(error.contains("invalid type: integer `7`"), "{error}");
        let error = parse(r#"{"conversation_id":"a:b"}"#).expect_err("bad id");
        assert_eq!(
            error,
            "payload field `conversation_id` must be 1 to 128 characters of A-Z, a-z, 0-9, `_` or `-`, got \"a:b\""
        );
    }
}
