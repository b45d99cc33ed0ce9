//! The `anthropic` provider: Anthropic's native Messages API, `POST {base_url}/messages`,
//! plain or streamed (`stream: true`: the `message_start`, `content_block_delta`,
//! `message_delta`, `message_stop` events, with `ping` and `error` between them).
//!
//! The API differs from OpenAI's where a component would not notice: system messages go in
//! a top-level `system` field, turns must alternate (consecutive turns of one role are joined
//! here), `max_tokens` is required (the manifest's `max_tokens` when the request sets none),
//! and the key goes in `x-api-key` with an `anthropic-version` header.

use std::time::Duration;

use anyhow::{Result, bail};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openai::{StreamState, key_and_client, send_checked};
use super::{
    Completion, CompletionStream, LlmError, LlmProvider, Request, Role, StreamEvent, Usage,
    check_request,
};
use crate::manifest::LlmSettings;

/// The Messages API version this speaks.
pub const API_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    name: String,
    client: reqwest::Client,
    url: String,
    models_url: String,
    api_key: Option<String>,
    model: String,
    max_tokens: u32,
    timeout: Duration,
}

impl AnthropicProvider {
    pub fn from_settings(name: &str, settings: &LlmSettings) -> Result<Self> {
        let LlmSettings::Anthropic {
            base_url,
            api_key_env,
            model,
            max_tokens,
            timeout,
            connect_timeout,
        } = settings
        else {
            bail!("not an anthropic provider configuration");
        };
        let (api_key, client) = key_and_client(api_key_env.as_deref(), connect_timeout.0)?;
        let base = base_url.trim_end_matches('/');
        Ok(Self {
            name: name.to_string(),
            client,
            url: format!("{base}/messages"),
            models_url: format!("{base}/models"),
            api_key,
            model: model.clone(),
            max_tokens: *max_tokens,
            timeout: timeout.0,
        })
    }

    fn body(&self, request: &Request, stream: bool) -> Value {
        let (system, messages) = turns(request);
        let mut body = json!({
            "model": request.model.as_deref().unwrap_or(&self.model),
            "max_tokens": request.max_tokens.unwrap_or(self.max_tokens),
            "messages": messages,
            "stream": stream,
        });
        if !system.is_empty() {
            body["system"] = json!(system);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        body
    }

    /// Sends with the key, the version and the timeout; an error status becomes the
    /// provider's error, quoting its message and keeping its `Retry-After`.
    async fn call(
        &self,
        mut builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LlmError> {
        builder = builder.header("anthropic-version", API_VERSION);
        if let Some(key) = &self.api_key {
            builder = builder.header("x-api-key", key);
        }
        send_checked(builder, self.timeout).await
    }

    async fn send(&self, request: &Request, stream: bool) -> Result<reqwest::Response, LlmError> {
        let builder = self
            .client
            .post(&self.url)
            .json(&self.body(request, stream));
        self.call(builder).await
    }
}

/// The system text (every system message, joined) and the turns, consecutive turns of one
/// role joined, as the API wants them to alternate.
fn turns(request: &Request) -> (String, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<(Role, String)> = Vec::new();
    for m in &request.messages {
        match m.role {
            Role::System => system.push(&m.content),
            role => match turns.last_mut() {
                Some((last, text)) if *last == role => {
                    text.push_str("\n\n");
                    text.push_str(&m.content);
                }
                _ => turns.push((role, m.content.clone())),
            },
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| {
            let role = if role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            json!({ "role": role, "content": content })
        })
        .collect();
    (system.join("\n\n"), turns)
}

#[derive(Deserialize)]
struct MessageResponse {
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

/// One streamed event's data (its `type` says which event it is).
fn parse_event(data: &str) -> Result<Option<Vec<StreamEvent>>, LlmError> {
    let event: Value = serde_json::from_str(data)
        .map_err(|e| LlmError::Unavailable(format!("malformed stream event: {e}")))?;
    let kind = event["type"].as_str().unwrap_or_default();
    let tokens = |v: &Value| v.as_u64().map_or(0, |n| n.min(u64::from(u32::MAX)) as u32);
    Ok(match kind {
        "content_block_delta" => {
            let text = event["delta"]["text"].as_str().unwrap_or_default();
            Some(if text.is_empty() {
                Vec::new()
            } else {
                vec![StreamEvent::Delta(text.to_string())]
            })
        }
        // The prompt's tokens come first (with no answer tokens yet: see `UsageFold`), the
        // answer's at the end.
        "message_start" => Some(vec![StreamEvent::Usage(Usage {
            prompt_tokens: tokens(&event["message"]["usage"]["input_tokens"]),
            completion_tokens: 0,
        })]),
        "message_delta" => Some(vec![StreamEvent::Usage(Usage {
            prompt_tokens: tokens(&event["usage"]["input_tokens"]),
            completion_tokens: tokens(&event["usage"]["output_tokens"]),
        })]),
        "message_stop" => None,
        "error" => {
            let message = event["error"]["message"].as_str().unwrap_or("stream error");
            let status = match event["error"]["type"].as_str() {
                Some("overloaded_error") => 529,
                Some("rate_limit_error") => 429,
                _ => 500,
            };
            return Err(LlmError::Provider {
                status,
                message: message.to_string(),
                retry_after: None,
            });
        }
        // ping, content_block_start, content_block_stop, and event types added later.
        _ => Some(Vec::new()),
    })
}

/// Folds the usage events of a stream into the one a component sees: the prompt's count
/// from `message_start` (the usage with no answer tokens), the answer's from `message_delta`.
struct UsageFold {
    prompt: u32,
}

impl UsageFold {
    fn fold(&mut self, event: StreamEvent) -> Option<StreamEvent> {
        match event {
            StreamEvent::Usage(u) if u.completion_tokens == 0 => {
                self.prompt = u.prompt_tokens;
                None
            }
            StreamEvent::Usage(u) => Some(StreamEvent::Usage(Usage {
                prompt_tokens: self.prompt.max(u.prompt_tokens),
                completion_tokens: u.completion_tokens,
            })),
            other => Some(other),
        }
    }
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn probe(&self) -> Result<(), LlmError> {
        self.call(self.client.get(&self.models_url)).await.map(drop)
    }

    async fn complete(&self, request: Request) -> Result<Completion, LlmError> {
        check_request(&request)?;
        let response = self.send(&request, false).await?;
        let body: MessageResponse = crate::timers::timeout(self.timeout, response.json())
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(|e| LlmError::Unavailable(format!("malformed response: {e}")))?;
        let content: String = body
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        Ok(Completion {
            content,
            model: body.model,
            provider: self.name.clone(),
            usage: body.usage.map(|u| Usage {
                prompt_tokens: u.input_tokens,
                completion_tokens: u.output_tokens,
            }),
        })
    }

    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError> {
        use futures::StreamExt;
        check_request(&request)?;
        let response = self.send(&request, true).await?;
        let mut fold = UsageFold { prompt: 0 };
        let events =
            StreamState::of(response, self.timeout, parse_event).filter_map(move |event| {
                let out = match event {
                    Ok(e) => fold.fold(e).map(Ok),
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(out)
            });
        Ok(Box::pin(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn system_messages_move_out_and_turns_alternate() {
        let request = Request {
            messages: vec![
                message(Role::System, "be brief"),
                message(Role::User, "a"),
                message(Role::User, "b"),
                message(Role::Assistant, "c"),
                message(Role::System, "and kind"),
                message(Role::User, "d"),
            ],
            ..Request::default()
        };
        let (system, turns) = turns(&request);
        assert_eq!(system, "be brief\n\nand kind");
        assert_eq!(
            turns,
            vec![
                json!({"role": "user", "content": "a\n\nb"}),
                json!({"role": "assistant", "content": "c"}),
                json!({"role": "user", "content": "d"}),
            ]
        );
    }

    #[test]
    fn stream_events_become_deltas_usage_and_the_end() {
        let delta = parse_event(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(delta, vec![StreamEvent::Delta("Hi".into())]);
        assert_eq!(parse_event(r#"{"type":"ping"}"#).unwrap(), Some(vec![]));
        assert_eq!(parse_event(r#"{"type":"message_stop"}"#).unwrap(), None);
        let start =
            r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#;
        let end = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#;
        let mut fold = UsageFold { prompt: 0 };
        let mut usage = Vec::new();
        for data in [start, end] {
            for e in parse_event(data).unwrap().unwrap() {
                usage.extend(fold.fold(e));
            }
        }
        assert_eq!(
            usage,
            vec![StreamEvent::Usage(Usage {
                prompt_tokens: 12,
                completion_tokens: 5
            })]
        );
        let e = parse_event(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, LlmError::Provider { status: 529, .. }), "{e}");
    }
}
