//! A queue processor that writes what `chat` shows about a conversation besides its
//! messages: reads the history from kv, asks the llm for a short summary or a title and
//! stores it next to the history.
//!
//! A job is `{"conversation_id": "...", "kind"?: "summary" | "title", "agent"?: "..."}`
//! (`kind` defaults to `summary`; `agent` is accepted and not used yet). The processor runs
//! with chat's kv namespace (`kv_namespace = "chat"` in the manifest), so
//! `conversation:{id}`, `summary:{id}` and `title:{id}` are chat's keys. Delivery is at
//! least once; writing twice only overwrites the summary or title, so a repeat is harmless.
//!
//! Modules: [`job`] parses the payload, [`settings`] reads the config, [`prompt`] builds the
//! llm request, [`title`] cleans up a title, [`failure`] decides retry or fail for every
//! capability error.

mod bindings;
mod failure;
mod job;
mod prompt;
mod settings;
mod title;

use bindings::{Guest, Job, JobError, kv, llm, queue};
use conversation_store::{Message, history_key, summary_key, title_key};
use job::Kind;

struct Summarizer;

impl Guest for Summarizer {
    fn process(job: Job) -> Result<String, JobError> {
        let job = job::parse(&job.payload).map_err(JobError::Fail)?;
        let settings = settings::load().map_err(JobError::Fail)?;
        match job.kind {
            Kind::Summary => summarize(&job.conversation_id, &settings),
            Kind::Title => give_title(&job.conversation_id, &settings),
        }
    }
}

bindings::export!(Summarizer with_types_in bindings);

fn summarize(id: &str, settings: &settings::Settings) -> Result<String, JobError> {
    progress("reading the conversation");
    let Some(messages) = history(id)? else {
        return Ok("nothing to summarize".to_owned());
    };
    progress("asking the model");
    let summary = ask(&settings.prompt, &messages)?;
    progress("saving the summary");
    let summary = summary.trim();
    if summary.is_empty() {
        return Err(JobError::Retry(
            "the llm answered with an empty summary".to_owned(),
        ));
    }
    kv::set(&summary_key(id), summary.as_bytes(), Some(settings.ttl_ms)).map_err(failure::kv)?;
    Ok(format!("summarized {id} ({} messages)", messages.len()))
}

fn give_title(id: &str, settings: &settings::Settings) -> Result<String, JobError> {
    let Some(messages) = history(id)? else {
        return Ok("nothing to title".to_owned());
    };
    let title = title::clean(&ask(&settings.title_prompt, &messages)?);
    if title.is_empty() {
        return Err(JobError::Retry(
            "the llm answered with an empty title".to_owned(),
        ));
    }
    kv::set(&title_key(id), title.as_bytes(), Some(settings.ttl_ms)).map_err(failure::kv)?;
    Ok(format!("titled {id}"))
}

/// Tells whoever follows the job (chat's `GET /api/jobs/{id}/events`) which step runs now.
/// Progress is a courtesy: failing to report it never fails the summary.
fn progress(step: &str) {
    let _ = queue::progress(&serde_json::json!({ "step": step }).to_string());
}

/// The stored messages of a conversation; `None` when it has none (never saved, expired or
/// deleted), since there is nothing to write about then.
fn history(id: &str) -> Result<Option<Vec<Message>>, JobError> {
    let Some(bytes) = kv::get(&history_key(id)).map_err(failure::kv)? else {
        return Ok(None);
    };
    // Retrying cannot make a stored value parse; chat replaces it on the next turn.
    let messages: Vec<Message> = serde_json::from_slice(&bytes).map_err(|error| {
        JobError::Fail(format!(
            "conversation `{id}` has unreadable history: {error}"
        ))
    })?;
    Ok((!messages.is_empty()).then_some(messages))
}

/// The llm's answer to `instruction` about the conversation.
fn ask(instruction: &str, messages: &[Message]) -> Result<String, JobError> {
    let completion =
        llm::complete(&prompt::request(instruction, messages)).map_err(failure::llm)?;
    Ok(completion.content)
}
