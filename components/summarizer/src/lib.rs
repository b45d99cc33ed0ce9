//! A queue processor that summarizes a conversation: reads its history from kv, asks the
//! llm for a short summary and stores it next to the history, where `chat` shows it.
//!
//! A job is `{"conversation_id": "...", "agent"?: "..."}` (`agent` is accepted and not
//! used yet). The processor runs with chat's kv namespace (`kv_namespace = "chat"` in the
//! manifest), so `conversation:{id}` and `summary:{id}` are chat's keys. Delivery is at
//! least once; summarizing twice only overwrites the summary, so a repeat is harmless.
//!
//! Modules: [`job`] parses the payload, [`settings`] reads the config, [`prompt`] builds the
//! llm request, [`failure`] decides retry or fail for every capability error.

mod bindings;
mod failure;
mod job;
mod prompt;
mod settings;

use bindings::{Guest, Job, JobError, kv, llm};
use conversation_store::{Message, history_key, summary_key};

struct Summarizer;

impl Guest for Summarizer {
    fn process(job: Job) -> Result<String, JobError> {
        let job = job::parse(&job.payload).map_err(JobError::Fail)?;
        let settings = settings::load().map_err(JobError::Fail)?;
        summarize(&job.conversation_id, &settings)
    }
}

bindings::export!(Summarizer with_types_in bindings);

fn summarize(id: &str, settings: &settings::Settings) -> Result<String, JobError> {
    let Some(bytes) = kv::get(&history_key(id)).map_err(failure::kv)? else {
        return Ok(nothing());
    };
    // Retrying cannot make a stored value parse; chat replaces it on the next turn.
    let messages: Vec<Message> = serde_json::from_slice(&bytes).map_err(|error| {
        JobError::Fail(format!(
            "conversation `{id}` has unreadable history: {error}"
        ))
    })?;
    if messages.is_empty() {
        return Ok(nothing());
    }
    let completion =
        llm::complete(&prompt::request(&settings.prompt, &messages)).map_err(failure::llm)?;
    let summary = completion.content.trim();
    if summary.is_empty() {
        return Err(JobError::Retry(
            "the llm answered with an empty summary".to_owned(),
        ));
    }
    kv::set(&summary_key(id), summary.as_bytes(), Some(settings.ttl_ms)).map_err(failure::kv)?;
    Ok(format!("summarized {id} ({} messages)", messages.len()))
}

fn nothing() -> String {
    "nothing to summarize".to_owned()
}
