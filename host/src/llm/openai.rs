//! The `openai` provider: any OpenAI-compatible `POST {base_url}/chat/completions`, plain or
//! streamed (`stream: true`, Server-Sent Events). The API key is read once, at start-up, from
//! the environment variable the manifest names.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::sse::SseDecoder;
use super::{
    Completion, CompletionStream, LlmError, LlmProvider, Request, StreamEvent, Usage, check_request,
};
use crate::manifest::LlmSettings;

/// How much of an error body is quoted back to the component.
const MAX_ERROR_TEXT: usize = 500;

pub struct OpenAiProvider {
    /// As the manifest names it (`openai` in the single-provider form).
    name: String,
    client: reqwest::Client,
    url: String,
    /// `GET {base_url}/models`: what [`LlmProvider::probe`] asks.
    models_url: String,
    api_key: Option<String>,
    model: String,
    timeout: Duration,
    /// `POST {base_url}/embeddings`, and the model it uses when a call names none.
    embeddings_url: String,
    embedding_model: Option<String>,
}

/// Largest embeddings answer read: inputs × dimensions × a float's text, with room.
const MAX_EMBED_ANSWER: usize = 32 << 20;

impl OpenAiProvider {
    pub fn from_settings(name: &str, settings: &LlmSettings) -> Result<Self> {
        let LlmSettings::Openai {
            base_url,
            api_key_env,
            model,
            timeout,
            connect_timeout,
            embedding_model,
        } = settings
        else {
            bail!("not an openai provider configuration");
        };
        let (api_key, client) = key_and_client(api_key_env.as_deref(), connect_timeout.0)?;
        Ok(Self {
            name: name.to_string(),
            client,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            models_url: format!("{}/models", base_url.trim_end_matches('/')),
            api_key,
            model: model.clone(),
            timeout: timeout.0,
            embeddings_url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            embedding_model: embedding_model.clone(),
        })
    }

    fn body(&self, request: &Request, stream: bool) -> serde_json::Value {
        let mut body = json!({
            "model": request.model.as_deref().unwrap_or(&self.model),
            "messages": request.messages,
            "stream": stream,
        });
        if let Some(n) = request.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }

    /// Sends the request and returns the response once its status says success.
    async fn send(&self, request: &Request, stream: bool) -> Result<reqwest::Response, LlmError> {
        let builder = self
            .client
            .post(&self.url)
            .json(&self.body(request, stream));
        self.call(builder).await
    }

    /// Sends with the API key and the timeout; a response whose status is not a success
    /// becomes the provider's error, quoting its body.
    async fn call(
        &self,
        mut builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LlmError> {
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        send_checked(builder, self.timeout).await
    }
}

/// The API key from the variable `api_key_env` names (read once, at start-up), and an HTTP
/// client that gives up connecting after `connect_timeout`.
pub(super) fn key_and_client(
    api_key_env: Option<&str>,
    connect_timeout: Duration,
) -> Result<(Option<String>, reqwest::Client)> {
    let api_key = match api_key_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("environment variable `{var}` (named by its api_key_env) is not set")
        })?),
        None => None,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .context("building an HTTP client for the provider")?;
    Ok((api_key, client))
}

/// Sends `builder` within `timeout`; a response whose status is not a success becomes the
/// provider's error, quoting its message and keeping its `Retry-After`.
pub(super) async fn send_checked(
    builder: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, LlmError> {
    let response = crate::timers::timeout(timeout, builder.send())
        .await
        .map_err(|_| LlmError::Timeout)?
        .map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text = crate::timers::timeout(timeout, response.text())
        .await
        .map_err(|_| LlmError::Timeout)?
        .unwrap_or_default();
    Err(LlmError::Provider {
        status: status.as_u16(),
        message: error_message(&text),
        retry_after,
    })
}

fn transport_error(e: reqwest::Error) -> LlmError {
    if e.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Unavailable(format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ))
    }
}

/// The body of `response`, refused past `cap` bytes (the host reads it on a component's
/// behalf: it must not grow without bound), each chunk within `timeout`.
async fn read_capped(
    response: reqwest::Response,
    cap: usize,
    timeout: Duration,
) -> Result<Vec<u8>, LlmError> {
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    loop {
        match crate::timers::timeout(timeout, body.next()).await {
            Err(_) => return Err(LlmError::Timeout),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(transport_error(e)),
            Ok(Some(Ok(chunk))) => {
                if out.len() + chunk.len() > cap {
                    return Err(LlmError::Unavailable(format!(
                        "the provider's answer is larger than {cap} bytes"
                    )));
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (how long from now; zero if past).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The `error.message` of an OpenAI error body, or the start of the body itself.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        message: String,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => b.error.message,
        Err(_) => body.chars().take(MAX_ERROR_TEXT).collect(),
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    model: String,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChunkResponse {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChoiceMessage>,
}

/// Turns one SSE data payload into stream events; `None` means the stream is done.
fn parse_chunk(data: &str) -> Result<Option<Vec<StreamEvent>>, LlmError> {
    if data.trim() == "[DONE]" {
        return Ok(None);
    }
    let chunk: ChunkResponse = serde_json::from_str(data)
        .map_err(|e| LlmError::Unavailable(format!("malformed stream chunk: {e}")))?;
    if let Some(error) = chunk.error {
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("stream error");
        return Err(LlmError::Provider {
            status: 200,
            message: message.to_string(),
            retry_after: None,
        });
    }
    let mut events: Vec<StreamEvent> = chunk
        .choices
        .into_iter()
        .filter_map(|c| c.delta.and_then(|d| d.content))
        .filter(|s| !s.is_empty())
        .map(StreamEvent::Delta)
        .collect();
    events.extend(chunk.usage.map(StreamEvent::Usage));
    Ok(Some(events))
}

/// A provider's event stream read as [`StreamEvent`]s: the SSE payloads of `body`, each
/// turned into events by `parse` (`None`: the provider said the stream is done).
pub(super) struct StreamState {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: SseDecoder,
    pending: VecDeque<StreamEvent>,
    idle_timeout: Duration,
    done: bool,
    parse: fn(&str) -> Result<Option<Vec<StreamEvent>>, LlmError>,
}

impl StreamState {
    /// The events of `response`'s body; a gap longer than `idle_timeout` is a timeout.
    pub(super) fn of(
        response: reqwest::Response,
        idle_timeout: Duration,
        parse: fn(&str) -> Result<Option<Vec<StreamEvent>>, LlmError>,
    ) -> CompletionStream {
        let state = StreamState {
            body: response.bytes_stream().boxed(),
            decoder: SseDecoder::default(),
            pending: VecDeque::new(),
            idle_timeout,
            done: false,
            parse,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            let event = s.next_event().await?;
            Some((event, s))
        });
        Box::pin(stream)
    }

    async fn next_event(&mut self) -> Option<Result<StreamEvent, LlmError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let payloads = match crate::timers::timeout(self.idle_timeout, self.body.next()).await {
                Err(_) => return self.fail(LlmError::Timeout),
                Ok(Some(Err(e))) => return self.fail(transport_error(e)),
                Ok(Some(Ok(bytes))) => match self.decoder.push(&bytes) {
                    Ok(p) => p,
                    Err(e) => return self.fail(LlmError::Unavailable(e)),
                },
                Ok(None) => {
                    // A stream that ends without [DONE] still delivers what it sent.
                    self.done = true;
                    self.decoder.finish().into_iter().collect()
                }
            };
            for data in payloads {
                match (self.parse)(&data) {
                    Ok(Some(events)) => self.pending.extend(events),
                    Ok(None) => self.done = true,
                    Err(e) => return self.fail(e),
                }
            }
        }
    }

    fn fail(&mut self, e: LlmError) -> Option<Result<StreamEvent, LlmError>> {
        self.done = true;
        self.pending.clear();
        Some(Err(e))
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn probe(&self) -> Result<(), LlmError> {
        self.call(self.client.get(&self.models_url)).await.map(drop)
    }

    async fn embed(
        &self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        super::check_embed(&inputs)?;
        let Some(model) = model.or_else(|| self.embedding_model.clone()) else {
            return Err(LlmError::InvalidRequest(format!(
                "name an embedding model, or set `embedding_model` on provider `{}`",
                self.name
            )));
        };
        let body = json!({ "model": model, "input": inputs, "encoding_format": "float" });
        let response = self
            .call(self.client.post(&self.embeddings_url).json(&body))
            .await?;
        let bytes = read_capped(response, MAX_EMBED_ANSWER, self.timeout).await?;
        #[derive(Deserialize)]
        struct Answer {
            data: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            index: usize,
            embedding: Vec<f32>,
        }
        let mut answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| LlmError::Unavailable(format!("malformed embeddings answer: {e}")))?;
        answer.data.sort_by_key(|item| item.index);
        let in_order = answer
            .data
            .iter()
            .enumerate()
            .all(|(i, item)| item.index == i);
        if answer.data.len() != inputs.len() || !in_order {
            return Err(LlmError::Unavailable(format!(
                "the embeddings answer has {} vectors for {} inputs",
                answer.data.len(),
                inputs.len()
            )));
        }
        Ok(answer.data.into_iter().map(|item| item.embedding).collect())
    }

    async fn complete(&self, request: Request) -> Result<Completion, LlmError> {
        check_request(&request)?;
        let response = self.send(&request, false).await?;
        let body: ChatResponse = crate::timers::timeout(self.timeout, response.json())
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(|e| LlmError::Unavailable(format!("malformed response: {e}")))?;
        let content = body
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| LlmError::Unavailable("response has no choices".into()))?;
        Ok(Completion {
            content,
            model: body.model,
            provider: self.name.clone(),
            usage: body.usage,
        })
    }

    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError> {
        check_request(&request)?;
        let response = self.send(&request, true).await?;
        Ok(StreamState::of(response, self.timeout, parse_chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_deltas_and_usage() {
        let e = parse_chunk(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(e, vec![StreamEvent::Delta("Hi".into())]);
        let e = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            e,
            vec![StreamEvent::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 1
            })]
        );
        assert_eq!(parse_chunk("[DONE]").unwrap(), None);
        assert!(parse_chunk("{oops").is_err());
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(error_message("plain"), "plain");
    }
}
