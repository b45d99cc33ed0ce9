//! The LLMChat API as a `wasi:http/incoming-handler` component.
//!
//! The HTTP side comes from `wstd` (the standard `wasi:http/proxy` export that
//! `wasmtime serve` runs, see [`server`]); the chat side imports the `llmchat:runtime`
//! capabilities (`kv`, `llm`, `log`, `config`, `queue`), generated in [`bindings`]. The host
//! creates a fresh instance for every request, so nothing here caches across requests:
//! settings are read from `config` and history from `kv` each time.
//!
//! Modules: [`routes`] picks a handler, [`agents`] and [`settings`] read the component
//! config, [`chat`] answers `POST /api/chat`, [`conversations`] reads and deletes a
//! conversation, [`history`] keeps conversations in kv, [`jobs`] enqueues the title,
//! summary and cleanup jobs, [`sse`] streams answers, [`error`] turns every failure into
//! one JSON response.

mod agents;
mod bindings;
mod chat;
mod conversations;
mod error;
mod history;
mod ids;
mod jobs;
mod log;
mod response;
mod routes;
mod server;
mod settings;
mod sse;
mod summaries;

use wstd::http::{Body, Request, Response};

/// Answers one request; every failure has already become its JSON error response here.
async fn respond(request: Request<Body>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match routes::handle(request).await {
        Ok(response) => response,
        Err(error) => {
            let line = format!("{method} {path} failed: {}", error.message());
            if error.status().is_server_error() {
                log::warn(&line);
            } else {
                log::info(&line);
            }
            error.into_response()
        }
    }
}
