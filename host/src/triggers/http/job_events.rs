//! A job's changes as Server-Sent Events: for `GET /admin/queues/{q}/jobs/{id}/events`, and
//! for a component that answers with the header [`HANDOFF_HEADER`] (`queue/id`): having
//! checked that the caller may follow that job, it hands the response to the host, which
//! streams the job's events (chat's `GET /api/jobs/{id}/events`). No component instance stays
//! alive for a stream.
//!
//! The stream never trusts a message for the job's state: a wake-up (from this host, or
//! through Redis from the host running the job) makes it read the job again and send what
//! changed. So a missed wake-up costs at most [`RECHECK`] of delay, never a wrong or lost
//! final state.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::queue::watch::JobWatch;
use crate::queue::{JobInfo, JobState, Queues};

/// How often an event stream sends a keep-alive comment and reads its job again anyway.
pub const RECHECK: Duration = Duration::from_secs(15);
/// How often an event stream renews its watch of the job in Redis.
const RENEW_WATCH: Duration = Duration::from_secs(120);
/// The response header by which a component hands its response over to the job's events.
pub const HANDOFF_HEADER: &str = "llmchat-job-events";

/// The SSE response following `first` until it ends.
pub fn response(queues: Arc<Queues>, first: JobInfo) -> Response {
    let (queue, id) = (first.job.queue.clone(), first.job.id.clone());
    Sse::new(job_events(queues, first, queue, id))
        .keep_alive(KeepAlive::new().interval(RECHECK))
        .into_response()
}

/// JSON text as JSON, anything else as a string.
#[derive(Serialize)]
#[serde(untagged)]
pub enum JsonOrText {
    Json(Box<RawValue>),
    Text(String),
}

impl JsonOrText {
    pub fn of(text: String) -> Self {
        match serde_json::from_str::<Box<RawValue>>(&text) {
            Ok(json) => JsonOrText::Json(json),
            Err(_) => JsonOrText::Text(text),
        }
    }
}

/// One job as the admin API, `llmchat job` and the queue page show it.
#[derive(Serialize)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub priority: u8,
    pub enqueued_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    pub payload: JsonOrText,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub progress: Option<JsonOrText>,
}

impl From<JobInfo> for JobView {
    fn from(info: JobInfo) -> Self {
        let job = info.job;
        Self {
            id: job.id,
            queue: job.queue,
            state: info.state,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            priority: job.priority,
            enqueued_at_ms: job.enqueued_at_ms,
            due_at_ms: info.due_at_ms,
            started_at_ms: info.started_at_ms,
            finished_at_ms: info.finished_at_ms,
            payload: JsonOrText::of(job.payload),
            result: info.result,
            error: info.error,
            progress: info.progress.map(JsonOrText::of),
        }
    }
}

/// What an event stream remembers between reads of its job.
struct Follow {
    queues: Arc<Queues>,
    queue: String,
    id: String,
    watch: Option<JobWatch>,
    watched_at: tokio::time::Instant,
    /// What was last sent: the state, the attempt and the progress.
    sent: Option<(JobState, u32, Option<String>)>,
    /// The stream has sent its last event.
    ended: bool,
    /// The first read, sent before any wait.
    first: Option<JobInfo>,
}

/// The events of one job: its state first, then every change, ending after a final state
/// (or when the job is gone: removed, or dropped by retention).
pub fn job_events(
    queues: Arc<Queues>,
    first: JobInfo,
    queue: String,
    id: String,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let follow = Follow {
        queues,
        queue,
        id,
        watch: None,
        watched_at: tokio::time::Instant::now(),
        sent: None,
        ended: false,
        first: Some(first),
    };
    futures::stream::unfold(follow, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            let read = match f.first.take() {
                Some(info) => Ok(Some(info)),
                None => {
                    f.wait().await;
                    f.queues.backend().job(&f.queue, &f.id).await
                }
            };
            let info = match read {
                Ok(info) => info,
                // Redis is away: say so, and try again at the next wake-up or recheck.
                Err(e) => {
                    let event = Event::default().event("error").data(e.to_string());
                    return Some((Ok(event), f));
                }
            };
            if let Some(event) = f.change(info) {
                // Watch only once the first state is out, and only a job that can change.
                if !f.ended && f.watch.is_none() {
                    f.renew_watch().await;
                }
                return Some((Ok(event), f));
            }
        }
    })
}

impl Follow {
    /// Waits for a wake-up of the job, or [`RECHECK`]; renews the watch when it is due.
    async fn wait(&mut self) {
        if self.watched_at.elapsed() >= RENEW_WATCH || self.watch.is_none() {
            self.renew_watch().await;
        }
        match &mut self.watch {
            Some(watch) => {
                let _ = crate::timers::timeout(RECHECK, watch.changed()).await;
            }
            None => crate::timers::sleep(RECHECK).await,
        }
    }

    async fn renew_watch(&mut self) {
        match self.queues.backend().watch(&self.queue, &self.id).await {
            Ok(watch) => {
                self.watch = Some(watch);
                self.watched_at = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::debug!(queue = %self.queue, job = %self.id, "watching a job failed, rechecking every {RECHECK:?}: {e}")
            }
        }
    }

    /// The event for what changed since the last one sent, if anything did.
    fn change(&mut self, info: Option<JobInfo>) -> Option<Event> {
        let Some(info) = info else {
            self.ended = true;
            let data = serde_json::json!({ "id": self.id, "queue": self.queue });
            return Some(Event::default().event("removed").data(data.to_string()));
        };
        let now = (info.state, info.job.attempt, info.progress.clone());
        let previous = self.sent.replace(now.clone());
        if previous.as_ref() == Some(&now) {
            return None;
        }
        let progress_only = previous
            .as_ref()
            .is_some_and(|(state, attempt, _)| (*state, *attempt) == (now.0, now.1));
        let name = match info.state {
            _ if progress_only => "progress",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Failed => "failed",
            _ => "state",
        };
        self.ended = info.state.is_final();
        let data = if name == "progress" {
            info.progress.unwrap_or_else(|| "null".into())
        } else {
            serde_json::to_string(&JobView::from(info)).unwrap_or_default()
        };
        Some(Event::default().event(name).data(data))
    }
}
