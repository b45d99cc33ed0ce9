//! A local stand-in for a remote OpenAI-compatible API, speaking the real wire format of
//! `POST /v1/chat/completions`: JSON completions, and Server-Sent Events chunks
//! (`data: {...}` lines, a usage chunk, `data: [DONE]`) when `stream` is true.
//!
//! It answers `fake: <last user message>`, records every request body, can be told to fail,
//! and can hold a stream after its first chunk until the test releases it: that is how a
//! test proves chunks reach the client as they are produced, without sleeping.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub const API_KEY: &str = "test-key";

struct Shared {
    requests: Mutex<Vec<Value>>,
    failure: Mutex<Option<(u16, String)>>,
    /// The `Retry-After` seconds sent with the failure.
    retry_after: Mutex<Option<u64>>,
    gated: Mutex<bool>,
    stalled: Mutex<bool>,
    gate: Semaphore,
}

/// The running fake; stops when dropped.
pub struct FakeOpenAi {
    pub base_url: String,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeOpenAi {
    pub fn start() -> FakeOpenAi {
        let shared = Arc::new(Shared {
            requests: Mutex::default(),
            failure: Mutex::default(),
            retry_after: Mutex::default(),
            gated: Mutex::default(),
            stalled: Mutex::default(),
            gate: Semaphore::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(completions))
            .route("/v1/models", axum::routing::get(models))
            .route("/v1/embeddings", axum::routing::post(embeddings))
            .with_state(shared.clone());
        let (addr, stop) = super::serve_on_loopback(app);
        FakeOpenAi {
            base_url: format!("http://{addr}/v1"),
            shared,
            _stop: stop,
        }
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Makes every later request fail with `status` and an OpenAI error body.
    pub fn fail_with(&self, status: u16, message: &str) {
        *self.shared.failure.lock().unwrap() = Some((status, message.to_string()));
    }

    /// As [`Self::fail_with`], with a `Retry-After: seconds` header.
    pub fn fail_with_retry_after(&self, status: u16, message: &str, seconds: u64) {
        *self.shared.retry_after.lock().unwrap() = Some(seconds);
        self.fail_with(status, message);
    }

    /// Makes streams pause after their first content chunk until [`Self::release`].
    pub fn hold_streams(&self) {
        *self.shared.gated.lock().unwrap() = true;
    }

    /// Makes every later request wait forever without answering.
    pub fn stall(&self) {
        *self.shared.stalled.lock().unwrap() = true;
    }

    pub fn release(&self) {
        self.shared.gate.add_permits(1);
    }
}

fn answer_words(body: &Value) -> Vec<String> {
    let last_user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let text = format!("fake: {last_user}");
    let mut words: Vec<String> = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        words.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
    }
    words
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    shared.requests.lock().unwrap().push(body.clone());
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return error(401, "Incorrect API key provided");
    }
    if *shared.stalled.lock().unwrap() {
        std::future::pending::<()>().await;
    }
    if let Some((status, message)) = shared.failure.lock().unwrap().clone() {
        let mut response = error(status, &message);
        if let Some(seconds) = *shared.retry_after.lock().unwrap() {
            response.headers_mut().insert(
                "retry-after",
                seconds.to_string().parse().expect("a header value"),
            );
        }
        return response;
    }
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    let words = answer_words(&body);
    let usage = json!({"prompt_tokens": 7, "completion_tokens": words.len(), "total_tokens": 7 + words.len()});
    if body["stream"] != true {
        return Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": words.concat()}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let gated = *shared.gated.lock().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        events.extend(
            words
                .iter()
                .map(|w| chunk(json!({"content": w}), Value::Null)),
        );
        events.push(chunk(json!({}), json!("stop")));
        events.push(
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                           "model": "fake-model", "choices": [], "usage": usage}),
        );
        for (i, event) in events.iter().enumerate() {
            if tx.send(format!("data: {event}\n\n")).await.is_err() {
                return;
            }
            if gated && i == 1 {
                let Ok(permit) = shared.gate.acquire().await else {
                    return;
                };
                permit.forget();
            }
        }
        let _ = tx.send("data: [DONE]\n\n".to_string()).await;
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

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})),
    )
        .into_response()
}

/// `GET /v1/models`: what the host's llm probe asks.
/// `POST /v1/embeddings`: input `i` (of length `n`) becomes `[n, i, 0.5]`, answered out of
/// order (the API does not promise order; `index` says where each goes).
async fn embeddings(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    shared.requests.lock().unwrap().push(body.clone());
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": [text.len() as f32, i as f32, 0.5]}))
        .collect();
    data.reverse();
    Json(
        json!({"object": "list", "data": data, "model": body["model"],
                "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()}}),
    )
    .into_response()
}

async fn models() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{"id": "fake-model", "object": "model", "owned_by": "llmchat-tests"}]
    }))
}
