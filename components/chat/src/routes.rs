//! The route table: which handler answers a request, 404 for an unknown path and 405
//! (with an `allow` header) for a known path asked with the wrong method.

use crate::agents::{self, PublicAgent};
use crate::chat;
use crate::error::ApiError;
use crate::response;
use serde::Serialize;
use wstd::http::{Body, Method, Request, Response, StatusCode};

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `GET /api/agents`
    Agents,
    /// `GET /api/agents/{id}`
    Agent(&'a str),
    /// `POST /api/chat`
    Chat,
}

impl Route<'_> {
    fn method(&self) -> Method {
        match self {
            Self::Agents | Self::Agent(_) => Method::GET,
            Self::Chat => Method::POST,
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/api/agents" => Some(Route::Agents),
        "/api/chat" => Some(Route::Chat),
        _ => path
            .strip_prefix("/api/agents/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(Route::Agent),
    }
}

pub async fn handle(request: Request<Body>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_owned();
    let Some(route) = route(&path) else {
        return Err(ApiError::NoRoute {
            method: request.method().clone(),
            path,
        });
    };
    let allow = route.method();
    if request.method() != allow {
        return Err(ApiError::MethodNotAllowed {
            method: request.method().clone(),
            path,
            allow,
        });
    }
    match route {
        Route::Agents => list_agents(),
        Route::Agent(id) => get_agent(id),
        Route::Chat => chat::handle(request).await,
    }
}

#[derive(Serialize)]
struct AgentList<'a> {
    agents: Vec<PublicAgent<'a>>,
}

fn list_agents() -> Result<Response<Body>, ApiError> {
    let agents = agents::load()?;
    let agents = agents.iter().map(agents::Agent::public).collect();
    Ok(response::json(StatusCode::OK, &AgentList { agents }))
}

fn get_agent(id: &str) -> Result<Response<Body>, ApiError> {
    let agent = agents::find(agents::load()?, id)?;
    Ok(response::json(StatusCode::OK, &agent.public()))
}

#[cfg(test)]
mod tests {
    use super::{Route, route};

    #[test]
    fn known_paths() {
        assert_eq!(route("/api/agents"), Some(Route::Agents));
        assert_eq!(route("/api/agents/general"), Some(Route::Agent("general")));
        assert_eq!(route("/api/chat"), Some(Route::Chat));
    }

    #[test]
    fn unknown_paths() {
        for path in [
            "/",
            "/x",
            "/api/agents/",
            "/api/agents/a/b",
            "/api/chat/",
            "/api",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }
}
