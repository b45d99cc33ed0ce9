//! `GET` and `DELETE /api/conversations/{id}`: read a conversation back with its title and
//! summary, or have it deleted.
//!
//! Deleting is a job for the `cleanup` processor rather than a direct kv delete, so the
//! answer is `202 Accepted` with the job id: the keys are gone once the job has run.

use crate::error::ApiError;
use crate::history::{self, StoredMessage};
use crate::{ids, jobs, response, settings};
use serde::Serialize;
use wstd::http::{Body, Response, StatusCode};

#[derive(Serialize)]
struct Conversation<'a> {
    conversation_id: &'a str,
    messages: Vec<StoredMessage>,
    summary: Option<String>,
    title: Option<String>,
}

#[derive(Serialize)]
struct Deletion<'a> {
    conversation_id: &'a str,
    job_id: String,
}

pub fn get(id: &str) -> Result<Response<Body>, ApiError> {
    let id = ids::from_path(id)?;
    let messages =
        history::find(id)?.ok_or_else(|| ApiError::UnknownConversation(id.to_owned()))?;
    let conversation = Conversation {
        conversation_id: id,
        messages,
        summary: history::summary(id)?,
        title: history::title(id)?,
    };
    Ok(response::json(StatusCode::OK, &conversation))
}

pub fn delete(id: &str) -> Result<Response<Body>, ApiError> {
    let id = ids::from_path(id)?;
    let job_id = jobs::request_cleanup(id, &settings::cleanup_queue()?)?;
    let deletion = Deletion {
        conversation_id: id,
        job_id,
    };
    Ok(response::json(StatusCode::ACCEPTED, &deletion))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_body_has_null_summary_and_title_when_absent() {
        let conversation = Conversation {
            conversation_id: "c",
            messages: vec![StoredMessage::user("hi")],
            summary: None,
            title: None,
        };
        assert_eq!(
            serde_json::to_string(&conversation).expect("serializes"),
            r#"{"conversation_id":"c","messages":[{"role":"user","content":"hi"}],"summary":null,"title":null}"#
        );
    }

    #[test]
    fn conversation_body_carries_the_title() {
        let conversation = Conversation {
            conversation_id: "c",
            messages: Vec::new(),
            summary: Some("s".to_owned()),
            title: Some("Greetings".to_owned()),
        };
        assert_eq!(
            serde_json::to_string(&conversation).expect("serializes"),
            r#"{"conversation_id":"c","messages":[],"summary":"s","title":"Greetings"}"#
        );
    }
}
