//! What can be known about one job: its state, result or last error, progress and times.
//!
//! Both backends answer [`super::QueueBackend::job`] and [`super::QueueBackend::jobs`] with
//! [`JobInfo`]; the admin API, `llmchat job`, the queue page and the components' `status`
//! all read it, so a job looks the same from everywhere.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{Delivery, Job, QueueError};
use crate::manifest::KeepJobs;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready, waiting for a free slot on some host.
    Waiting,
    /// Enqueued with a delay that has not run out.
    Delayed,
    /// Being processed by some host now.
    Active,
    /// Done; kept only under the queue's `keep_completed`.
    Completed,
    /// An attempt failed and the next one waits for its backoff.
    Failed,
    /// Out of attempts, or failed for good: a dead letter.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }

    /// Completed and dead jobs change no more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Dead)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job state {s:?}: use waiting, delayed, active, completed, failed or dead"
                )
            })
    }
}

/// One job as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    pub job: Job,
    pub state: JobState,
    /// When a delayed or failed job runs next, in ms since the Unix epoch.
    pub due_at_ms: Option<u64>,
    /// When its last attempt started (active, completed).
    pub started_at_ms: Option<u64>,
    /// When it completed or died.
    pub finished_at_ms: Option<u64>,
    /// The processor's `Ok` text (completed).
    pub result: Option<String>,
    /// The last attempt's error (failed, dead; a waiting retry keeps it too).
    pub error: Option<String>,
    /// The last `progress` JSON the processor reported.
    pub progress: Option<String>,
}

impl JobInfo {
    /// A job in `state` with nothing else known yet.
    pub fn new(job: Job, state: JobState) -> Self {
        let error = job.last_error.clone();
        Self {
            job,
            state,
            due_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            result: None,
            error,
            progress: None,
        }
    }
}

impl JobInfo {
    /// Why this job (active or finished) cannot be removed: the same words on every backend.
    pub fn refuse_removal(&self) -> QueueError {
        QueueError::Invalid(format!(
            "job `{}` is {}: only a waiting, delayed or failed job can be removed{}",
            self.job.id,
            self.state,
            match self.state {
                JobState::Dead => " (retry or purge dead letters instead)",
                JobState::Active => " (it may finish, fail or be reclaimed first)",
                _ => "",
            }
        ))
    }
}

/// A job whose attempt returned `Ok`, for [`super::QueueBackend::complete`].
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub delivery: Delivery,
    /// The processor's `Ok` text.
    pub result: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// The queue's `keep_completed`.
    pub keep: KeepJobs,
    /// Whether the attempt reported progress (so its progress is cleaned up, or kept).
    pub progressed: bool,
}

/// Longest progress JSON a processor may report.
pub const MAX_PROGRESS: usize = 4096;
/// Longest result text kept with a completed job (longer ones are cut, and say so).
pub const MAX_RESULT: usize = 16 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_from_their_names_and_unknown_ones_are_named() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        let e = "done".parse::<JobState>().unwrap_err();
        assert!(e.contains("\"done\"") && e.contains("completed"), "{e}");
        assert!(JobState::Dead.is_final() && !JobState::Failed.is_final());
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded("ééé", 3);
        assert!(cut.starts_with("é…"), "{cut}");
        assert!(cut.ends_with("(4 bytes cut)"), "{cut}");
    }
}
