//! The body of `POST /api/chat`: read it (bounded), parse it, validate every field.
//!
//! Fields are checked one by one rather than through a derived `Deserialize`, so that a
//! wrong type is reported with the field's name (`field `stream` must be a boolean`), not
//! only a line and column. Unknown fields are ignored, so clients may send more.

use crate::error::ApiError;
use crate::ids;
use serde_json::{Map, Value};
use wstd::http::body::util::{BodyExt, LengthLimitError, Limited};
use wstd::http::{Body, Request};

/// The largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct ChatRequest {
    pub agent: String,
    pub message: String,
    pub conversation_id: Option<String>,
    pub stream: bool,
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
pub async fn read_body(request: Request<Body>) -> Result<Vec<u8>, ApiError> {
    let body = Limited::new(request.into_body().into_boxed_body(), MAX_BODY_BYTES);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES))
        }
        Err(error) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {error}"
        ))),
    }
}

pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(invalid("expected a JSON object".to_owned()));
    };
    let agent = string(&fields, "agent")?.ok_or_else(|| missing("agent"))?;
    let message = string(&fields, "message")?.ok_or_else(|| missing("message"))?;
    if message.trim().is_empty() {
        return Err(invalid("field `message` must not be empty".to_owned()));
    }
    let conversation_id = string(&fields, "conversation_id")?;
    if let Some(id) = &conversation_id
        && !ids::is_valid(id)
    {
        return Err(invalid(format!(
            "field `conversation_id` must be {}, got {id:?}",
            ids::ID_RULE
        )));
    }
    let stream = match fields.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(other) => return Err(wrong_type("stream", "a boolean", other)),
    };
    Ok(ChatRequest {
        agent,
        message,
        conversation_id,
        stream,
    })
}

/// A string field; absent and `null` both mean "not given".
fn string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

fn invalid(reason: String) -> ApiError {
    ApiError::BadRequest(format!("invalid JSON body: {reason}"))
}

fn missing(name: &str) -> ApiError {
    invalid(format!("missing field `{name}`"))
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    invalid(format!("field `{name}` must be {expected}, got {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> String {
        match parse(body.as_bytes()) {
            Ok(request) => panic!("expected an error, got {request:?}"),
            Err(error) => error.message(),
        }
    }

    #[test]
    fn parses_a_full_request() {
        let request = parse(
            br#"{"agent":"a","message":"hi","conversation_id":"c-1","stream":true,"extra":1}"#,
        )
        .expect("valid request");
        assert_eq!(
            request,
            ChatRequest {
                agent: "a".to_owned(),
                message: "hi".to_owned(),
                conversation_id: Some("c-1".to_owned()),
                stream: true,
            }
        );
    }

    #[test]
    fn optional_fields_default() {
        let request = parse(br#"{"agent":"a","message":"hi","conversation_id":null}"#)
            .expect("valid request");
        assert_eq!(request.conversation_id, None);
        assert!(!request.stream);
    }

    #[test]
    fn malformed_json_quotes_serde() {
        assert!(error("{").starts_with("invalid JSON body: EOF while parsing"));
        assert_eq!(error("[]"), "invalid JSON body: expected a JSON object");
    }

    #[test]
    fn field_errors_name_the_field() {
        assert_eq!(
            error(r#"{"message":"hi"}"#),
            "invalid JSON body: missing field `agent`"
        );
        assert_eq!(
            error(r#"{"agent":"a","message":5}"#),
            "invalid JSON body: field `message` must be a string, got a number"
        );
        assert_eq!(
            error(r#"{"agent":"a","message":"hi","stream":"yes"}"#),
            "invalid JSON body: field `stream` must be a boolean, got a string"
        );
        assert_eq!(
            error(r#"{"agent":"a","message":"  "}"#),
            "invalid JSON body: field `message` must not be empty"
        );
        assert!(
            error(r#"{"agent":"a","message":"hi","conversation_id":"a/b"}"#)
                .contains("field `conversation_id` must be 1 to 128 characters")
        );
    }
}
