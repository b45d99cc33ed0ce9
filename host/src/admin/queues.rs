//! `/admin/queues/...`: enqueue a job, read every queue's counts, and list, retry or purge
//! a queue's dead letters. Works the same on either backend, through [`Queues`].
//!
//! Every handler checks the queue against the manifest first, so an unknown queue is a 404
//! whatever the route; [`QueueError`]s become responses in one `From` impl.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::jobs::JsonOrText;
use crate::manifest::HumanDuration;
use crate::queue::{DeadJob, EnqueueRequest, Enqueued, QueueError, QueueStats, Queues};
use crate::triggers::http::{ApiError, read_body};

/// Dead letters listed when the request gives no `limit`, and the most it may ask for.
const DEFAULT_DEAD_LIMIT: usize = 100;
const MAX_DEAD_LIMIT: usize = 1000;

/// Room in a request body beyond the payload: the other fields, and a payload of the
/// queue's largest size however it is escaped or indented, so that the queue's own limit
/// is the one that answers.
const BODY_SLACK: u64 = 64 << 10;

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let status = match &e {
            QueueError::UnknownQueue(_) => StatusCode::NOT_FOUND,
            QueueError::Invalid(_) => StatusCode::BAD_REQUEST,
            QueueError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            QueueError::Full(_) | QueueError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut api = ApiError::new(status, e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after = Some(1);
        }
        api
    }
}

/// The body of `POST /admin/queues/{queue}/jobs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    /// Kept as the client wrote it: no number is rounded and no key reordered.
    payload: Box<RawValue>,
    delay: Option<String>,
    dedup_key: Option<String>,
    max_attempts: Option<u32>,
    backoff: Option<String>,
    priority: Option<u8>,
}

#[derive(Serialize)]
struct EnqueueResponse<'a> {
    id: &'a str,
    duplicate: bool,
}

pub async fn enqueue(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body: EnqueueBody = read_payload_json(&queues, &queue, body).await?;
    let delay = body
        .delay
        .map(|d| d.parse::<HumanDuration>())
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("`delay`: {e}")))?;
    let request = EnqueueRequest {
        delay: delay.map(|d| d.0),
        max_attempts: body.max_attempts,
        backoff: body.backoff,
        dedup_key: body.dedup_key,
        priority: body.priority,
        trace_context: None,
    };
    let enqueued = queues
        .enqueue(&queue, body.payload.get().to_string(), request)
        .await?;
    let response = EnqueueResponse {
        id: enqueued.id(),
        duplicate: matches!(enqueued, Enqueued::Duplicate(_)),
    };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

#[derive(Serialize)]
struct QueueList<'a> {
    backend: &'static str,
    queues: Vec<QueueRow<'a>>,
}

#[derive(Serialize)]
struct QueueRow<'a> {
    queue: &'a str,
    component: &'a str,
    concurrency: u32,
    paused: bool,
    #[serde(flatten)]
    stats: QueueStats,
}

pub async fn list(State(queues): State<Arc<Queues>>) -> Result<Response, ApiError> {
    let mut rows = Vec::new();
    let triggers = queues.triggers();
    for trigger in &triggers {
        rows.push(QueueRow {
            queue: &trigger.queue,
            component: &trigger.component,
            concurrency: trigger.concurrency,
            paused: queues.is_paused(&trigger.queue),
            stats: queues.backend().stats(&trigger.queue).await?,
        });
    }
    let backend = queues.backend().name();
    Ok(Json(QueueList {
        backend,
        queues: rows,
    })
    .into_response())
}

#[derive(Deserialize)]
pub struct DeadQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct DeadList {
    queue: String,
    jobs: Vec<DeadRow>,
}

#[derive(Serialize)]
struct DeadRow {
    id: String,
    payload: JsonOrText,
    attempt: u32,
    max_attempts: u32,
    error: String,
    failed_at_ms: u64,
    enqueued_at_ms: u64,
}

impl From<DeadJob> for DeadRow {
    fn from(dead: DeadJob) -> Self {
        let job = dead.job;
        Self {
            id: job.id,
            payload: JsonOrText::of(job.payload),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            error: dead.error,
            failed_at_ms: dead.failed_at_ms,
            enqueued_at_ms: job.enqueued_at_ms,
        }
    }
}

pub async fn dead(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
    query: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    queues.trigger(&queue)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_DEAD_LIMIT)
        .min(MAX_DEAD_LIMIT);
    let jobs: Vec<DeadRow> = queues
        .backend()
        .dead_letters(&queue, limit)
        .await?
        .into_iter()
        .map(DeadRow::from)
        .collect();
    Ok(Json(DeadList { queue, jobs }).into_response())
}

/// The body of `POST /admin/queues/{queue}/dead/retry`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    id: Option<String>,
    #[serde(default)]
    all: bool,
}

pub async fn retry(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    queues.trigger(&queue)?;
    let id = match read_json(body, BODY_SLACK).await? {
        RetryBody {
            id: Some(id),
            all: false,
        } => Some(id),
        RetryBody {
            id: None,
            all: true,
        } => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                r#"give either {"id": "..."} or {"all": true}"#,
            ));
        }
    };
    let retried = queues.backend().retry_dead(&queue, id.as_deref()).await?;
    if let (Some(id), 0) = (&id, retried) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no dead job `{id}` in queue `{queue}`"),
        ));
    }
    Ok(Json(serde_json::json!({ "retried": retried })).into_response())
}

/// `POST /admin/queues/{queue}/pause` and `/resume`: on every host.
pub async fn pause(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&queues, queue, true).await
}

pub async fn resume(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&queues, queue, false).await
}

async fn set_paused(queues: &Queues, queue: String, paused: bool) -> Result<Response, ApiError> {
    queues.set_paused(&queue, paused).await?;
    Ok(Json(serde_json::json!({ "queue": queue, "paused": paused })).into_response())
}

pub async fn purge(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    queues.trigger(&queue)?;
    let purged = queues.backend().purge_dead(&queue).await?;
    Ok(Json(serde_json::json!({ "purged": purged })).into_response())
}

/// A JSON request body carrying a job payload for `queue` (which must exist), bounded by the
/// queue's `max_payload` plus [`BODY_SLACK`].
pub(super) async fn read_payload_json<T: serde::de::DeserializeOwned>(
    queues: &Queues,
    queue: &str,
    body: Body,
) -> Result<T, ApiError> {
    let limit = queues.trigger(queue)?.max_payload.bytes();
    read_json(body, limit.saturating_mul(2) + BODY_SLACK).await
}

/// A JSON request body of at most `limit` bytes, or a 400 (413) naming the problem.
async fn read_json<T: serde::de::DeserializeOwned>(body: Body, limit: u64) -> Result<T, ApiError> {
    let body = read_body(body, limit).await?;
    parse_json(&body)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_errors_map_to_statuses_with_retry_after_for_503() {
        let cases = [
            (QueueError::UnknownQueue("q".into()), 404, None),
            (QueueError::Invalid("x".into()), 400, None),
            (QueueError::TooLarge("x".into()), 413, None),
            (QueueError::Full("x".into()), 503, Some(1)),
            (QueueError::Unavailable("x".into()), 503, Some(1)),
        ];
        for (error, status, retry_after) in cases {
            let text = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(api.status.as_u16(), status, "{text}");
            assert_eq!(api.retry_after, retry_after, "{text}");
            assert_eq!(api.message, text);
        }
    }

    #[test]
    fn enqueue_bodies_keep_the_payload_text_and_refuse_unknown_fields() {
        let body: EnqueueBody = parse_json(br#"{"payload": {"b": 1, "a": 1e400}}"#).unwrap();
        assert_eq!(body.payload.get(), r#"{"b": 1, "a": 1e400}"#);
        let e = parse_json::<EnqueueBody>(br#"{"payload": 1, "dedup": "k"}"#)
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("unknown field `dedup`"), "{}", e.message);
        let e = parse_json::<EnqueueBody>(b"{}").err().unwrap();
        assert!(
            e.message.contains("missing field `payload`"),
            "{}",
            e.message
        );
    }
}
