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
