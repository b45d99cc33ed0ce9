//! `POST /api/conversations/{id}/summarize` and `GET /api/jobs/{id}/events`: a summary asked
//! for now, and its progress followed as Server-Sent Events.
//!
//! The summary is a job for the `summarizer`; the answer is `202` with its id. Who may follow
//! a job is chat's rule: the caller names the conversation (`?conversation=ID`, the same
//! capability that reads the conversation), and chat remembers which conversation each job
//! it enqueued belongs to (kv `job:{id}`, kept a day). A job of another conversation is a
//! 404, as an unknown one is. Chat then hands the response to the host
//! (`llmchat-job-events: queue/id`), which streams the job's events: no instance stays alive
//! for the stream.

use crate::bindings::kv;
use crate::error::ApiError;
use crate::{history, ids, jobs, response, settings};
use serde::Serialize;
use wstd::http::{Body, HeaderValue, Response, StatusCode};

/// How long chat remembers whose job is whose.
const JOB_OWNER_TTL_MS: u64 = 24 * 3600 * 1000;
/// The response header by which the host takes over the response (see the module doc).
const HANDOFF_HEADER: &str = "llmchat-job-events";

#[derive(Serialize)]
struct Accepted<'a> {
    conversation_id: &'a str,
    job_id: &'a str,
    /// Where the job's progress streams.
    events: String,
}

fn owner_key(job_id: &str) -> String {
    format!("job:{job_id}")
}

pub fn summarize(id: &str) -> Result<Response<Body>, ApiError> {
    let id = ids::from_path(id)?;
    history::find(id)?.ok_or_else(|| ApiError::UnknownConversation(id.to_owned()))?;
    let job_id = jobs::request_summary_now(id, &settings::summary()?.queue)?;
    kv::set(&owner_key(&job_id), id.as_bytes(), Some(JOB_OWNER_TTL_MS)).map_err(ApiError::Kv)?;
    let accepted = Accepted {
        conversation_id: id,
        job_id: &job_id,
        events: format!("/api/jobs/{job_id}/events?conversation={id}"),
    };
    Ok(response::json(StatusCode::ACCEPTED, &accepted))
}

/// The conversation named by the query (`conversation=ID`).
fn conversation_of(query: Option<&str>) -> Result<&str, ApiError> {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("conversation="))
        .filter(|id| ids::is_valid(id))
        .ok_or_else(|| {
            ApiError::BadRequest("give the job's conversation: `?conversation=ID`".to_owned())
        })
}

pub fn events(job_id: &str, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let conversation = conversation_of(query)?;
    let owner = kv::get(&owner_key(job_id)).map_err(ApiError::Kv)?;
    if owner.as_deref() != Some(conversation.as_bytes()) {
        return Err(ApiError::UnknownJob(job_id.to_owned()));
    }
    let queue = settings::summary()?.queue;
    let handoff = HeaderValue::from_str(&format!("{queue}/{job_id}"))
        .map_err(|_| ApiError::UnknownJob(job_id.to_owned()))?;
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert(HANDOFF_HEADER, handoff);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversation_comes_from_the_query_and_must_be_an_id() {
        assert_eq!(conversation_of(Some("conversation=c-1")).ok(), Some("c-1"));
        assert_eq!(
            conversation_of(Some("x=1&conversation=c-1")).ok(),
            Some("c-1")
        );
        assert!(conversation_of(None).is_err());
        assert!(conversation_of(Some("conversation=")).is_err());
    }
}
