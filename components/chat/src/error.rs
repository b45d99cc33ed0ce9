//! Every way a request can fail, and the one place where a failure becomes a response.
//!
//! Handlers return `Result<_, ApiError>`; [`ApiError::into_response`] is the only mapping
//! from a failure to a status and a `{"error": "..."}` body, and the SSE stream reuses
//! [`ApiError::message`] for its `error` event so both paths say the same thing.

use crate::bindings::{kv, llm};
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
    /// The route exists, but not for this method; `allow` is the one it accepts.
    MethodNotAllowed {
        method: Method,
        path: String,
        allow: Method,
    },
    /// The agent named in the path or the body is not configured.
    UnknownAgent(String),
    /// The component's own config is missing or wrong: an operator error, not the client's.
    Config { key: &'static str, reason: String },
    /// The llm capability failed.
    Llm(llm::Error),
    /// The conversation store (kv capability) failed.
    Kv(kv::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute { .. } | Self::UnknownAgent(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Config { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Llm(llm::Error::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Self::Llm(_) => StatusCode::BAD_GATEWAY,
            Self::Kv(kv::Error::QuotaExceeded(_)) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Kv(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            } => format!("method {method} not allowed for {path}; use {allow}"),
            Self::UnknownAgent(id) => format!("unknown agent `{id}`"),
            Self::Config { key, reason } => {
                format!("component config `{key}` is invalid: {reason}")
            }
            Self::Llm(llm::Error::Timeout) => "llm provider timed out".to_owned(),
            Self::Llm(error) => format!("llm provider failed: {}", llm_reason(error)),
            Self::Kv(kv::Error::QuotaExceeded(reason)) => {
                format!("conversation store full: {reason}")
            }
            Self::Kv(kv::Error::Invalid(reason) | kv::Error::Unavailable(reason)) => {
                format!("conversation store unavailable: {reason}")
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = response::json(self.status(), &json!({ "error": self.message() }));
        if let Self::MethodNotAllowed { allow, .. } = &self {
            let allow = HeaderValue::from_str(allow.as_str())
                .expect("a method name is a valid header value");
            response.headers_mut().insert("allow", allow);
        }
        response
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
    }
}
