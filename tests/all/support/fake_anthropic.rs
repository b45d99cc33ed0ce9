//! A local stand-in for Anthropic's Messages API, speaking its real wire format: `POST
//! /v1/messages` with `x-api-key` and `anthropic-version`, a `message` object back, or with
//! `stream: true` the event sequence `message_start`, `content_block_start`, `ping`,
//! `content_block_delta`s, `content_block_stop`, `message_delta`, `message_stop` (each an
//! `event:` line and a `data:` line).
//!
//! It answers `fake: <last user message>` word by word, records every request body, can be
//! told to fail with an Anthropic error body, and can hold a stream after its first delta
//! until the test releases it.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub const API_KEY: &str = "test-anthropic-key";

struct Shared {
    requests: Mutex<Vec<Value>>,
    failure: Mutex<Option<(u16, String)>>,
    gated: Mutex<bool>,
    gate: Semaphore,
}

/// The running fake; stops when dropped.
pub struct FakeAnthropic {
    pub base_url: String,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeAnthropic {
    pub fn start() -> FakeAnthropic {
        let shared = Arc::new(Shared {
            requests: Mutex::default(),
            failure: Mutex::default(),
            gated: Mutex::default(),
            gate: Semaphore::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/messages", axum::routing::post(messages))
            .with_state(shared.clone());
        let (addr, stop) = super::serve_on_loopback(app);
        FakeAnthropic {
            base_url: format!("http://{addr}/v1"),
            shared,
            _stop: stop,
        }
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Makes every later request fail with `status` and an Anthropic error body.
    pub fn fail_with(&self, status: u16, message: &str) {
        *self.shared.failure.lock().unwrap() = Some((status, message.to_string()));
    }

    /// Makes streams pause after their first text delta until [`Self::release`].
    pub fn hold_streams(&self) {
        *self.shared.gated.lock().unwrap() = true;
    }

    pub fn release(&self) {
        self.shared.gate.add_permits(1);
    }
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, Json(body)).into_response()
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    shared.requests.lock().unwrap().push(body.clone());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-api-key") != Some(API_KEY) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if header("anthropic-version") != Some("2023-06-01") {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    if body["max_tokens"].as_u64().is_none() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    if let Some((status, message)) = shared.failure.lock().unwrap().clone() {
        return error(status, "api_error", &message);
    }
    let model = body["model"].as_str().unwrap_or("claude-fake").to_string();
    let last_user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let text = format!("fake: {last_user}");
    let words: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    if body["stream"] != true {
        return Json(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": words.len()},
        }))
        .into_response();
    }
    let gated = *shared.gated.lock().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(async move {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let mut events = vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null,
                "usage": {"input_tokens": 11, "output_tokens": 1}}}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ];
        let first_delta = events.len();
        events.extend(words.iter().map(|w| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": w}}),
            )
        }));
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": words.len()}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        for (i, e) in events.into_iter().enumerate() {
            if tx.send(e).await.is_err() {
                return;
            }
            if gated && i == first_delta {
                let Ok(permit) = shared.gate.acquire().await else {
                    return;
                };
                permit.forget();
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|s| (Ok::<_, std::convert::Infallible>(s), rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
