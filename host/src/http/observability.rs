//! The host's own observability endpoints: `GET /metrics` (Prometheus), `/health`
//! (liveness), `/ready` (readiness), and `/dashboard` with its `/dashboard/history` JSON;
//! also the static queue page `/dashboard/queues`, whose data and buttons go through the
//! admin API and its rule. They are matched before the component routes, so no manifest
//! route, not even `/...`, can shadow them.
//!
//! None of them is behind the admin token: `/metrics` is meant for a Prometheus scraper on
//! a private network, which is how Prometheus endpoints are deployed, and `/health` and
//! `/ready` are an orchestrator's liveness and readiness probes. They reveal counts and
//! component and queue names, never payloads.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::json;

use crate::dashboard::{self, Dashboard};
use crate::metrics::{Format, Metrics};
use crate::redis::RedisPool;
use crate::triggers::http::{ApiError, LiveRoutes};

/// How long `/ready` waits for Redis to answer a PING.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(500);

/// What the endpoints read.
pub struct ObservabilityState {
    pub metrics: Arc<Metrics>,
    pub dashboard: Arc<Dashboard>,
    /// The Redis pool, when Redis is configured.
    pub redis: Option<Arc<RedisPool>>,
    /// The live routes, which also know how many components are loaded.
    pub routes: Arc<LiveRoutes>,
}

/// Each endpoint's path and handler. The paths are [`crate::manifest::OBSERVABILITY_PATHS`],
/// which the manifest refuses as component routes (a test holds the two lists equal).
fn endpoints() -> [(&'static str, MethodRouter<Arc<ObservabilityState>>); 6] {
    [
        ("/metrics", get(metrics)),
        ("/health", get(health)),
        ("/ready", get(ready)),
        ("/dashboard", get(dashboard_page)),
        ("/dashboard/history", get(dashboard_history)),
        ("/dashboard/queues", get(queues_page)),
    ]
}

/// `GET` (and `HEAD`) for each of the [`endpoints`]; another method gets a JSON 405.
pub fn router<S>(state: Arc<ObservabilityState>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    endpoints()
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn metrics(State(state): State<Arc<ObservabilityState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    match state.metrics.scrape(format).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            )],
            body,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
        .into_response(),
    }
}

/// The dashboard page: static, with its script inline; it reads `/dashboard/history`.
async fn dashboard_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing outside this host may be loaded by the page, whatever its text says.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        dashboard::PAGE,
    )
        .into_response()
}

/// The queue page: static like the dashboard; its data and buttons go through the admin API,
/// which applies the admin rule (see [`dashboard::queues`]).
async fn queues_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, dashboard::queues::CSP),
        ],
        dashboard::queues::PAGE,
    )
        .into_response()
}

async fn dashboard_history(State(state): State<Arc<ObservabilityState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.dashboard.history_json(),
    )
        .into_response()
}

/// Liveness: answering at all is the proof.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: every component is loaded (always true once the host serves) and Redis, when
/// configured, answers a PING within [`READY_PING_TIMEOUT`].
async fn ready(State(state): State<Arc<ObservabilityState>>) -> Response {
    let redis = match &state.redis {
        None => Ok("not configured"),
        Some(pool) => match crate::timers::timeout(READY_PING_TIMEOUT, pool.ping()).await {
            Ok(Ok(())) => Ok("ok"),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "redis did not answer PING within {READY_PING_TIMEOUT:?}"
            )),
        },
    };
    match redis {
        Ok(redis) => Json(json!({
            "status": "ready",
            "components": state.routes.components(),
            "redis": redis,
        }))
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "redis": reason })),
        )
            .into_response(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed for {}", uri.path()),
    );
    e.allow = Some("GET, HEAD".into());
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OBSERVABILITY_PATHS;

    #[test]
    fn the_endpoints_are_exactly_the_paths_the_manifest_refuses_as_routes() {
        let served = endpoints().map(|(path, _)| path);
        assert_eq!(served, OBSERVABILITY_PATHS);
    }
}
