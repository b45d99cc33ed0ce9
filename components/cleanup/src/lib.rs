//! Deletes a conversation's kv keys when a client deletes it
//! (`DELETE /api/conversations/{id}` in `chat`), as a queue processor, and runs the daily
//! [`sweep`], as a monitor on a schedule.
//!
//! Jobs (parsed in [`job`]):
//! - `{"conversation_id": "..."}` deletes `conversation:{id}`, `summary:{id}` and
//!   `title:{id}` from chat's kv namespace (`kv_namespace = "chat"` in the manifest).
//!   Deleting is idempotent, so a repeated delivery just finds fewer keys.
//! - `{"kind": "sweep"}` runs the sweep on demand.
//!
//! A schedule tick (`monitoring.run`) runs the sweep and reports samples `cleanup_runs`
//! (1) and `cleanup_deleted_keys`, no alerts. Today the sweep has nothing to delete, since
//! every key is written with a TTL and the kv store expires it.

mod bindings;
mod job;
mod sweep;

use bindings::{Job, JobError, Report, Tick, kv, monitoring, processor};
use conversation_store::{history_key, summary_key, title_key};
use job::CleanupJob;

struct Cleanup;

impl processor::Guest for Cleanup {
    fn process(job: Job) -> Result<String, JobError> {
        match job::parse(&job.payload).map_err(JobError::Fail)? {
            CleanupJob::Conversation(id) => delete_conversation(&id),
            CleanupJob::Sweep => Ok(sweep::run().note()),
        }
    }
}

impl monitoring::Guest for Cleanup {
    fn run(_tick: Tick) -> Result<Report, String> {
        Ok(sweep::run().report())
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
