//! The admin API under `/admin/`: what `llmchat enqueue`, `queues` and `dead` talk to.
//!
//! [`router`] owns every path under `/admin`, unknown ones included, and
//! [`auth::AdminAuth`] (one middleware in front of all of them) decides who may call them.
//! The HTTP server merges this router ahead of its component fallback, so a component
//! route, even `/...`, can never shadow an admin path or see its requests.

pub mod auth;
mod components;
pub mod jobs;
mod queues;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{Method, Uri};
use axum::routing::{any, get, post, put};
use http::StatusCode;

pub use auth::AdminAuth;

use crate::deploy::Deployer;
use crate::queue::Queues;
use crate::triggers::http::ApiError;

/// What the admin API serves: who may call it, the queues, the deployer.
#[derive(Clone)]
pub struct AdminApi {
    pub auth: AdminAuth,
    pub queues: Arc<Queues>,
    pub deployer: Arc<Deployer>,
}

impl FromRef<AdminApi> for Arc<Queues> {
    fn from_ref(api: &AdminApi) -> Self {
        api.queues.clone()
    }
}

impl FromRef<AdminApi> for Arc<Deployer> {
    fn from_ref(api: &AdminApi) -> Self {
        api.deployer.clone()
    }
}

/// Every path under `/admin`, behind `auth`; paths it does not know are admin 404s. The
/// caller adds its own fallback (and state `S`) for every other path.
pub fn router<S>(api: AdminApi) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let auth = api.auth.clone();
    Router::new()
        .route("/admin/components", get(components::list))
        .route(
            "/admin/components/{name}",
            // The deploy handler bounds the body itself ([deploy] max_component_size).
            put(components::deploy)
                .delete(components::delete)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/admin/components/{name}/rollback",
            post(components::rollback),
        )
        .route("/admin/queues", get(queues::list))
        .route(
            "/admin/queues/{queue}/jobs",
            post(queues::enqueue).get(jobs::list),
        )
        .route(
            "/admin/queues/{queue}/jobs/{id}",
            get(jobs::get).delete(jobs::remove),
        )
        .route("/admin/queues/{queue}/jobs/{id}/events", get(jobs::events))
        .route(
            "/admin/queues/{queue}/repeats",
            get(jobs::repeats).post(jobs::add_repeat),
        )
        .route(
            "/admin/queues/{queue}/repeats/{key}",
            axum::routing::delete(jobs::remove_repeat),
        )
        .route(
            "/admin/queues/{queue}/dead",
            get(queues::dead).delete(queues::purge),
        )
        .route("/admin/queues/{queue}/dead/retry", post(queues::retry))
        .route("/admin/queues/{queue}/pause", post(queues::pause))
        .route("/admin/queues/{queue}/resume", post(queues::resume))
        .route("/admin", any(not_found))
        .route("/admin/", any(not_found))
        .route("/admin/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_admin,
        ))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no admin route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed for {}", uri.path()),
    )
}
