//! Every way a request can fail, and the one place where a failure becomes a response.
//!
//! Handlers return `Result<_, ApiError>`; [`ApiError::into_response`] is the only mapping
//! from a failure to a status and a `{"error": "..."}` body, and the SSE stream reuses
//! [`ApiError::message`] for its `error` event so both paths say the same thing.

use crate::bindings::{kv, llm, queue};
use crate::response;
use serde_json::json;
use wstd::http::{Body, HeaderValue, Method, Response, StatusCode};

/// Why a request failed; each variant maps to exactly one status.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a missing or wrong-typed field, a bad id.
    BadRequest(String),
    /// The request body is over the size we accept, in bytes.
    PayloadTooLarge(usize),
    /// No route matches the path.
    NoRoute { method: Method, path: String },
    /// The route exists, but not for this method; `allow` lists the ones it accepts.
    MethodNotAllowed {
        method: Method,
        path: String,
        allow: &'static [Method],
    },
    /// The agent named in the path or the body is not configured.
    UnknownAgent(String),
    /// No history is stored for the conversation in the path (never created, or expired).
    UnknownConversation(String),
    /// No job of this id belongs to the conversation named (or it is unknown).
    UnknownJob(String),
    /// The component's own config is missing or wrong: an operator error, not the client's.
    Config { key: &'static str, reason: String },
    /// The llm capability failed.
    Llm(llm::Error),
    /// The conversation store (kv capability) failed.
    Kv(kv::Error),
    /// A job could not be enqueued on `queue` (queue capability).
    Queue { queue: String, error: queue::Error },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute { .. }
            | Self::UnknownAgent(_)
            | Self::UnknownConversation(_)
            | Self::UnknownJob(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Config { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Llm(llm::Error::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            // The agent's token budget ([quotas] agent_tokens) is used up for now.
            Self::Llm(llm::Error::QuotaExceeded(_)) => StatusCode::TOO_MANY_REQUESTS,
            Self::Llm(_) => StatusCode::BAD_GATEWAY,
            Self::Kv(kv::Error::QuotaExceeded(_)) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Kv(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Our own config names a queue the manifest does not declare.
            Self::Queue {
                error: queue::Error::UnknownQueue(_),
                ..
            } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Queue {
                error: queue::Error::Invalid(_) | queue::Error::TooLarge(_),
                ..
            } => StatusCode::BAD_REQUEST,
            Self::Queue { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The text of the `error` field: says what failed, quotes the bad value.
    pub fn message(&self) -> String {
        match self {
            Self::BadRequest(reason) => reason.clone(),
            Self::PayloadTooLarge(limit) => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            Self::NoRoute { method, path } => format!("no route for {method} {path}"),
            Self::MethodNotAllowed {
                method,
                path,
                allow,
            } => format!(
                "method {method} not allowed for {path}; use {}",
                join(allow, " or ")
            ),
            Self::UnknownAgent(id) => format!("unknown agent `{id}`"),
            Self::UnknownConversation(id) => format!("unknown conversation `{id}`"),
            Self::UnknownJob(id) => format!("unknown job `{id}` for this conversation"),
            Self::Config { key, reason } => {
                format!("component config `{key}` is invalid: {reason}")
            }
            Self::Llm(llm::Error::Timeout) => "llm provider timed out".to_owned(),
            Self::Llm(llm::Error::QuotaExceeded(reason)) => format!("llm quota exceeded: {reason}"),
            Self::Llm(error) => format!("llm provider failed: {}", llm_reason(error)),
            Self::Kv(kv::Error::QuotaExceeded(reason)) => {
                format!("conversation store full: {reason}")
            }
            Self::Kv(kv::Error::Invalid(reason) | kv::Error::Unavailable(reason)) => {
                format!("conversation store unavailable: {reason}")
            }
            Self::Queue { queue, error } => queue_reason(queue, error),
        }
    }

    /// Whether the client should simply try again shortly (sent with `retry-after: 1`).
    fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Queue {
                error: queue::Error::Full(_) | queue::Error::Unavailable(_),
                ..
            }
        )
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = response::json(self.status(), &json!({ "error": self.message() }));
        if let Self::MethodNotAllowed { allow, .. } = &self {
            let allow = HeaderValue::from_str(&join(allow, ", "))
                .expect("method names are a valid header value");
            response.headers_mut().insert("allow", allow);
        }
        if self.is_busy() {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

fn join(methods: &[Method], separator: &str) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(separator)
}

fn queue_reason(queue: &str, error: &queue::Error) -> String {
    match error {
        // The host's text is the queue name itself; only a different one adds anything.
        queue::Error::UnknownQueue(reason) if reason != queue => {
            format!("no `[[trigger.queue]]` declares queue `{queue}`: {reason}")
        }
        queue::Error::UnknownQueue(_) => format!("no `[[trigger.queue]]` declares queue `{queue}`"),
        queue::Error::Invalid(reason) => format!("job for queue `{queue}` is invalid: {reason}"),
        queue::Error::TooLarge(reason) => {
            format!("job for queue `{queue}` is too large: {reason}")
        }
        queue::Error::Full(reason) => format!("queue `{queue}` is full: {reason}"),
        queue::Error::Unavailable(reason) => format!("queue `{queue}` is unavailable: {reason}"),
    }
}

fn llm_reason(error: &llm::Error) -> String {
    match error {
        llm::Error::InvalidRequest(reason) => format!("invalid request: {reason}"),
        llm::Error::Provider(llm::ProviderError { status, message }) => {
            format!("status {status}: {message}")
        }
        llm::Error::Unavailable(reason) => format!("unavailable: {reason}"),
        llm::Error::Timeout => "timed out".to_owned(),
        llm::Error::QuotaExceeded(reason) => format!("quota exceeded: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_error(error: queue::Error) -> ApiError {
        ApiError::Queue {
            queue: "cleanup".to_owned(),
            error,
        }
    }

    #[test]
    fn method_not_allowed_lists_every_allowed_method() {
        let error = ApiError::MethodNotAllowed {
            method: Method::PUT,
            path: "/api/conversations/c".to_owned(),
            allow: &[Method::GET, Method::DELETE],
        };
        assert_eq!(
            error.message(),
            "method PUT not allowed for /api/conversations/c; use GET or DELETE"
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET, DELETE");
    }

    #[test]
    fn queue_errors_map_to_the_party_at_fault() {
        let unknown = queue_error(queue::Error::UnknownQueue("cleanup".to_owned()));
        assert_eq!(unknown.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            unknown.message(),
            "no `[[trigger.queue]]` declares queue `cleanup`"
        );
        let unknown = queue_error(queue::Error::UnknownQueue("gone".to_owned()));
        assert_eq!(
            unknown.message(),
            "no `[[trigger.queue]]` declares queue `cleanup`: gone"
        );
        for error in [
            queue::Error::Invalid("x".to_owned()),
            queue::Error::TooLarge("x".to_owned()),
        ] {
            let response = queue_error(error).into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            assert!(!response.headers().contains_key("retry-after"));
        }
        for error in [
            queue::Error::Full("x".to_owned()),
            queue::Error::Unavailable("x".to_owned()),
        ] {
            let response = queue_error(error).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
        }
    }

    #[test]
    fn unknown_conversation_is_a_404_naming_it() {
        let error = ApiError::UnknownConversation("c-1".to_owned());
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        assert_eq!(error.message(), "unknown conversation `c-1`");
    }
}
