//! A queue processor that deletes a conversation's keys when a client deletes it
//! (`DELETE /api/conversations/{id}` in `chat`).
//!
//! Jobs (parsed in [`job`]):
//! - `{"conversation_id": "..."}` deletes `conversation:{id}`, `summary:{id}` and
//!   `title:{id}` from chat's kv namespace (`kv_namespace = "chat"` in the manifest).
//!   Deleting is idempotent, so a repeated delivery just finds fewer keys.
//! - `{"kind": "sweep"}`, for a scheduled run: there is nothing to do, since every key is
//!   written with a TTL and the kv store expires it.

mod bindings;
mod job;

use bindings::{Guest, Job, JobError, kv};
use conversation_store::{history_key, summary_key, title_key};
use job::CleanupJob;

struct Cleanup;

impl Guest for Cleanup {
    fn process(job: Job) -> Result<String, JobError> {
        match job::parse(&job.payload).map_err(JobError::Fail)? {
            CleanupJob::Conversation(id) => delete_conversation(&id),
            CleanupJob::Sweep => Ok("nothing to sweep: kv keys expire by TTL".to_owned()),
        }
    }
}

bindings::export!(Cleanup with_types_in bindings);

fn delete_conversation(id: &str) -> Result<String, JobError> {
    let mut deleted = 0;
    for key in [history_key(id), summary_key(id), title_key(id)] {
        if kv::delete(&key).map_err(kv_error)? {
            deleted += 1;
        }
    }
    Ok(format!("deleted {deleted} keys for {id}"))
}

/// Retry when the store may come back; a refused key cannot become valid.
fn kv_error(error: kv::Error) -> JobError {
    match error {
        kv::Error::Invalid(reason) => JobError::Fail(format!("kv refused the key: {reason}")),
        kv::Error::QuotaExceeded(reason) => JobError::Retry(format!("kv quota exceeded: {reason}")),
        kv::Error::Unavailable(reason) => JobError::Retry(format!("kv unavailable: {reason}")),
    }
}
