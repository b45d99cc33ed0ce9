//! `llmchat:runtime/queue`: enqueue jobs on the manifest's queues, read a job's status, and
//! report the progress of the job a processor runs. An enqueue is a `send <queue>` span
//! when tracing is on, and the job keeps that span's context for its processing.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::queue::{
    self, EnqueueOptions, Error, JobState as WitState, JobStatus,
};
use crate::queue::jobs::MAX_PROGRESS;
use crate::queue::{Delivery, EnqueueRequest, JobInfo, JobState, QueueError, Queues};

/// Progress writes of one attempt are at least this far apart; values in between are
/// coalesced (the latest wins).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The job a processor invocation runs, and its progress writes.
pub struct RunningJob {
    delivery: Delivery,
    last_write: Option<Instant>,
    /// A value held back by [`PROGRESS_INTERVAL`], written by the next call or at the end.
    pending: Option<String>,
    /// Whether any progress was reported.
    pub reported: bool,
}

impl RunningJob {
    pub fn new(delivery: Delivery) -> Self {
        Self {
            delivery,
            last_write: None,
            pending: None,
            reported: false,
        }
    }

    async fn report(&mut self, queues: &Queues, json: String) -> Result<(), QueueError> {
        self.reported = true;
        let due = self
            .last_write
            .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL);
        if !due {
            self.pending = Some(json);
            return Ok(());
        }
        self.pending = None;
        self.last_write = Some(Instant::now());
        queues.backend().progress(&self.delivery, &json).await
    }

    /// Writes the held-back value, if any; failures are logged (the job's outcome matters
    /// more than its last progress).
    pub async fn flush(&mut self, queues: &Queues) {
        if let Some(json) = self.pending.take()
            && let Err(e) = queues.backend().progress(&self.delivery, &json).await
        {
            tracing::debug!(job = %self.delivery.job.id, "writing the last progress failed: {e}");
        }
    }
}

fn wit_state(state: JobState) -> WitState {
    match state {
        JobState::Waiting => WitState::Waiting,
        JobState::Delayed => WitState::Delayed,
        JobState::Active => WitState::Active,
        JobState::Completed => WitState::Completed,
        JobState::Failed => WitState::Failed,
        JobState::Dead => WitState::Dead,
    }
}

fn wit_status(info: JobInfo) -> JobStatus {
    JobStatus {
        id: info.job.id,
        queue: info.job.queue,
        state: wit_state(info.state),
        attempt: info.job.attempt,
        max_attempts: info.job.max_attempts,
        enqueued_at_ms: info.job.enqueued_at_ms,
        finished_at_ms: info.finished_at_ms,
        output: info.result,
        error: info.error,
        progress: info.progress,
    }
}

fn error_kind(e: &QueueError) -> &'static str {
    match e {
        QueueError::UnknownQueue(_) => "unknown_queue",
        QueueError::Invalid(_) => "invalid",
        QueueError::TooLarge(_) => "too_large",
        QueueError::Full(_) => "full",
        QueueError::Unavailable(_) => "unavailable",
    }
}

/// The one mapping from host queue errors to the WIT error.
fn to_wit(e: QueueError) -> Error {
    match e {
        QueueError::UnknownQueue(q) => Error::UnknownQueue(q),
        QueueError::Invalid(m) => Error::Invalid(m),
        QueueError::TooLarge(m) => Error::TooLarge(m),
        QueueError::Full(m) => Error::Full(m),
        QueueError::Unavailable(m) => Error::Unavailable(m),
    }
}

impl queue::Host for &mut CapabilityCtx {
    async fn enqueue(
        &mut self,
        queue: String,
        payload: String,
        options: EnqueueOptions,
    ) -> wasmtime::Result<Result<String, Error>> {
        let mut request = EnqueueRequest {
            delay: options.delay_ms.map(Duration::from_millis),
            max_attempts: options.max_attempts,
            backoff: options.backoff,
            dedup_key: options.dedup_key,
            priority: options.priority,
            trace_context: None,
        };
        let span = crate::telemetry::spans::enqueue(&queue);
        // The job's processing will be a child of this span.
        request.trace_context = crate::telemetry::propagation::traceparent_of(&span);
        let queues = &self.services.queues;
        let result = queues
            .enqueue(&queue, payload, request)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(enqueued) => {
                span.record("messaging.message.id", enqueued.id());
            }
            Err(e) => crate::telemetry::spans::record_error(&span, error_kind(e)),
        }
        Ok(result.map(|e| e.id().to_string()).map_err(to_wit))
    }

    async fn progress(&mut self, json: String) -> wasmtime::Result<Result<(), Error>> {
        let Some(job) = self.job.as_mut() else {
            return Ok(Err(Error::Invalid(
                "progress is reported by a queue processor during a job".into(),
            )));
        };
        if json.len() > MAX_PROGRESS {
            return Ok(Err(Error::TooLarge(format!(
                "progress of {} bytes, the limit is {MAX_PROGRESS}",
                json.len()
            ))));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
            return Ok(Err(Error::Invalid(format!(
                "progress is not valid JSON: {e}"
            ))));
        }
        Ok(job
            .report(&self.services.queues, json)
            .await
            .map_err(to_wit))
    }

    async fn status(
        &mut self,
        queue: String,
        id: String,
    ) -> wasmtime::Result<Result<Option<JobStatus>, Error>> {
        let queues = &self.services.queues;
        if let Err(e) = queues.trigger(&queue) {
            return Ok(Err(to_wit(e)));
        }
        let found = queues.backend().job(&queue, &id).await;
        Ok(found.map(|info| info.map(wit_status)).map_err(to_wit))
    }
}
