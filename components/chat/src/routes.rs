//! The route table: which handler answers a request, 404 for an unknown path and 405
//! (with an `allow` header) for a known path asked with a method it does not take.
//!
//! [`endpoint`] is the whole table, pure so it is tested without a host: a path picks a
//! [`Route`], and the route with the method picks an [`Endpoint`]. [`Route::allow`] lists
//! the methods of each route for the 405, and a test checks it against the table.

use crate::agents::{self, PublicAgent};
use crate::error::ApiError;
use crate::response;
use crate::{chat, conversations, summaries};
use serde::Serialize;
use wstd::http::{Body, Method, Request, Response, StatusCode};

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_OR_DELETE: &[Method] = &[Method::GET, Method::DELETE];

/// A known path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    /// `/api/agents`
    Agents,
    /// `/api/agents/{id}`
    Agent(&'a str),
    /// `/api/chat`
    Chat,
    /// `/api/conversations/{id}`
    Conversation(&'a str),
    /// `/api/conversations/{id}/summarize`
    Summarize(&'a str),
    /// `/api/jobs/{id}/events`
    JobEvents(&'a str),
}

/// A handler: a route together with one of its methods.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
    ListAgents,
    GetAgent(&'a str),
    Chat,
    GetConversation(&'a str),
    DeleteConversation(&'a str),
    Summarize(&'a str),
    JobEvents(&'a str),
}

impl Route<'_> {
    /// The methods this route answers, for the `allow` header.
    fn allow(self) -> &'static [Method] {
        match self {
            Self::Agents | Self::Agent(_) => GET,
            Self::Chat | Self::Summarize(_) => POST,
            Self::JobEvents(_) => GET,
            Self::Conversation(_) => GET_OR_DELETE,
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/api/agents" => Some(Route::Agents),
        "/api/chat" => Some(Route::Chat),
        _ => None,
    }
    .or_else(|| segment(path, "/api/agents/").map(Route::Agent))
    .or_else(|| segment(path, "/api/conversations/").map(Route::Conversation))
    .or_else(|| {
        let id = path.strip_suffix("/summarize")?;
        segment(id, "/api/conversations/").map(Route::Summarize)
    })
    .or_else(|| {
        let id = path.strip_suffix("/events")?;
        segment(id, "/api/jobs/").map(Route::JobEvents)
    })
}

/// The one non-empty path segment after `prefix`.
fn segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn endpoint<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, ApiError> {
    let Some(route) = route(path) else {
        return Err(ApiError::NoRoute {
            method: method.clone(),
            path: path.to_owned(),
        });
    };
    match (route, method) {
        (Route::Agents, &Method::GET) => Ok(Endpoint::ListAgents),
        (Route::Agent(id), &Method::GET) => Ok(Endpoint::GetAgent(id)),
        (Route::Chat, &Method::POST) => Ok(Endpoint::Chat),
        (Route::Conversation(id), &Method::GET) => Ok(Endpoint::GetConversation(id)),
        (Route::Conversation(id), &Method::DELETE) => Ok(Endpoint::DeleteConversation(id)),
        (Route::Summarize(id), &Method::POST) => Ok(Endpoint::Summarize(id)),
        (Route::JobEvents(id), &Method::GET) => Ok(Endpoint::JobEvents(id)),
        _ => Err(ApiError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: route.allow(),
        }),
    }
}

pub async fn handle(request: Request<Body>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_owned();
    match endpoint(request.method(), &path)? {
        Endpoint::ListAgents => list_agents(),
        Endpoint::GetAgent(id) => get_agent(id),
        Endpoint::Chat => chat::handle(request).await,
        Endpoint::GetConversation(id) => conversations::get(id),
        Endpoint::DeleteConversation(id) => conversations::delete(id),
        Endpoint::Summarize(id) => summaries::summarize(id),
        Endpoint::JobEvents(id) => summaries::events(id, request.uri().query()),
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
    use super::*;

    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];

    #[test]
    fn known_paths() {
        assert_eq!(route("/api/agents"), Some(Route::Agents));
        assert_eq!(route("/api/agents/general"), Some(Route::Agent("general")));
        assert_eq!(route("/api/chat"), Some(Route::Chat));
        assert_eq!(
            route("/api/conversations/c-1"),
            Some(Route::Conversation("c-1"))
        );
        assert_eq!(
            route("/api/conversations/c-1/summarize"),
            Some(Route::Summarize("c-1"))
        );
        assert_eq!(route("/api/jobs/j1/events"), Some(Route::JobEvents("j1")));
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
            "/api/conversations",
            "/api/conversations/",
            "/api/conversations/a/b",
            "/api/conversations//summarize",
            "/api/jobs/j1",
            "/api/jobs//events",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn conversation_methods_pick_their_handler() {
        assert_eq!(
            endpoint(&Method::GET, "/api/conversations/c").expect("routed"),
            Endpoint::GetConversation("c")
        );
        assert_eq!(
            endpoint(&Method::DELETE, "/api/conversations/c").expect("routed"),
            Endpoint::DeleteConversation("c")
        );
    }

    /// `allow` says exactly which methods the table routes, for every route.
    #[test]
    fn allow_matches_the_table() {
        for path in [
            "/api/agents",
            "/api/agents/a",
            "/api/chat",
            "/api/conversations/c",
            "/api/conversations/c/summarize",
            "/api/jobs/j/events",
        ] {
            let allow = route(path).expect("known path").allow();
            for method in &METHODS {
                match endpoint(method, path) {
                    Ok(_) => assert!(allow.contains(method), "{method} {path} is routed"),
                    Err(ApiError::MethodNotAllowed { allow: listed, .. }) => {
                        assert!(!allow.contains(method), "{method} {path} is refused");
                        assert_eq!(listed, allow);
                    }
                    Err(error) => panic!("{method} {path}: {}", error.message()),
                }
            }
        }
    }
}
