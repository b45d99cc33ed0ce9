//! `/admin/queues/{queue}/jobs/...`: one job by id, jobs listed by state, removing a job,
//! and a job's events as Server-Sent Events.
//! The event stream itself is `triggers::http::job_events`, which components hand requests
//! to as well.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::queue::{JobInfo, JobState, Queues};
pub use crate::triggers::http::job_events::{JobView, JsonOrText};
use crate::triggers::http::{ApiError, job_events};

/// Jobs listed when the request gives no `limit`, and the most it may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Job `id` of `queue`, or a 404 that says why it may be unknown.
async fn find(queues: &Queues, queue: &str, id: &str) -> Result<JobInfo, ApiError> {
    let trigger = queues.trigger(queue)?;
    queues.backend().job(queue, id).await?.ok_or_else(|| {
        let hint = if trigger.keep_completed.keeps() {
            ""
        } else {
            " (completed jobs of this queue are not kept: set `keep_completed`)"
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job `{id}` in queue `{queue}`{hint}"),
        )
    })
}

pub async fn get(
    State(queues): State<Arc<Queues>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let info = find(&queues, &queue, &id).await?;
    Ok(Json(JobView::from(info)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct JobList {
    queue: String,
    state: JobState,
    jobs: Vec<JobView>,
}

pub async fn list(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    queues.trigger(&queue)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let state: JobState = query
        .state
        .as_deref()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "give `state`: waiting, delayed, active, completed, failed or dead",
            )
        })?
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let jobs = queues.backend().jobs(&queue, state, limit).await?;
    Ok(Json(JobList {
        queue,
        state,
        jobs: jobs.into_iter().map(JobView::from).collect(),
    })
    .into_response())
}

pub async fn remove(
    State(queues): State<Arc<Queues>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    queues.trigger(&queue)?;
    match queues.backend().remove(&queue, &id).await? {
        Some(state) => {
            queues.note_activity();
            Ok(Json(serde_json::json!({ "removed": id, "state": state })).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job `{id}` in queue `{queue}`"),
        )),
    }
}

/// `GET .../jobs/{id}/events`: the job's changes as SSE until it ends (see the module doc).
pub async fn events(
    State(queues): State<Arc<Queues>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let first = find(&queues, &queue, &id).await?;
    Ok(job_events::response(queues, first))
}

/// The body of `POST /admin/queues/{queue}/repeats`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatBody {
    every: Option<crate::manifest::HumanDuration>,
    cron: Option<String>,
    payload: Box<serde_json::value::RawValue>,
}

/// `POST /admin/queues/{queue}/repeats`: a repeat entry added at run time, for every host.
pub async fn add_repeat(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body: RepeatBody = super::queues::read_payload_json(&queues, &queue, body).await?;
    let record = queues
        .add_repeat(
            &queue,
            body.every,
            body.cron,
            body.payload.get().to_string(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

#[derive(Serialize)]
struct RepeatRow {
    key: String,
    origin: &'static str,
    schedule: String,
    payload: JsonOrText,
}

/// `GET /admin/queues/{queue}/repeats`: the manifest's entries and the run-time ones.
pub async fn repeats(
    State(queues): State<Arc<Queues>>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    let trigger = queues.trigger(&queue)?;
    let mut rows: Vec<RepeatRow> = trigger
        .repeat
        .iter()
        .map(|r| RepeatRow {
            key: r.key.clone(),
            origin: "manifest",
            schedule: r.when.to_string(),
            payload: JsonOrText::of(r.payload.clone()),
        })
        .collect();
    for record in queues.backend().repeats().await? {
        if record.queue != queue {
            continue;
        }
        let schedule = match (&record.every, &record.cron) {
            (Some(every), _) => format!("every {every}"),
            (None, Some(cron)) => format!("cron {cron:?} (UTC)"),
            (None, None) => String::new(),
        };
        rows.push(RepeatRow {
            key: record.key,
            origin: "api",
            schedule,
            payload: JsonOrText::of(record.payload),
        });
    }
    Ok(Json(serde_json::json!({ "queue": queue, "repeats": rows })).into_response())
}

/// `DELETE /admin/queues/{queue}/repeats/{key}`: a run-time entry (manifest ones stay).
pub async fn remove_repeat(
    State(queues): State<Arc<Queues>>,
    Path((queue, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if queues.remove_repeat(&queue, &key).await? {
        return Ok(Json(serde_json::json!({ "removed": key })).into_response());
    }
    let in_manifest = queues.trigger(&queue)?.repeat.iter().any(|r| r.key == key);
    let why = if in_manifest {
        "; it is the manifest's, which only a manifest change removes"
    } else {
        ""
    };
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no run-time repeat entry `{key}` on queue `{queue}`{why}"),
    ))
}
