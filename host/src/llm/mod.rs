//! LLM providers behind one trait, [`LlmProvider`]: `echo` (the embedded, deterministic
//! default) and `openai` (any OpenAI-compatible `/v1/chat/completions`: OpenAI, Ollama,
//! vLLM, llama.cpp). API keys stay here in the host; components only see completions.

mod echo;
mod measured;
mod openai;
mod sse;

use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

pub use echo::EchoProvider;
pub use measured::Measured;
pub use openai::OpenAiProvider;

use crate::manifest::LlmSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    pub model: String,
    pub provider: String,
    pub usage: Option<Usage>,
}

/// One item of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    Usage(Usage),
}

/// A completion arriving piece by piece; ends when the provider is done.
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

/// Why a completion failed; mapped to the WIT `llm.error` in one place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("provider answered {status}: {message}")]
    Provider { status: u16, message: String },
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider timed out")]
    Timeout,
}

/// A source of completions.
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// The provider's name as reported to components, e.g. "echo".
    fn name(&self) -> &'static str;
    /// The model a request that names none gets, for metrics.
    fn default_model(&self) -> &str;
    async fn complete(&self, request: Request) -> Result<Completion, LlmError>;
    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError>;
    /// A cheap request that proves the provider answers, for the `probe` capability.
    async fn probe(&self) -> Result<(), LlmError>;
}

/// Builds the provider the manifest asks for.
pub fn from_settings(settings: &LlmSettings) -> Result<Arc<dyn LlmProvider>> {
    Ok(match settings {
        LlmSettings::Echo { word_delay } => Arc::new(EchoProvider::new(word_delay.map(|d| d.0))),
        LlmSettings::Openai { .. } => Arc::new(OpenAiProvider::from_settings(settings)?),
    })
}

/// Rejects requests no provider can answer.
fn check_request(request: &Request) -> Result<(), LlmError> {
    if request.messages.is_empty() {
        return Err(LlmError::InvalidRequest("no messages".into()));
    }
    Ok(())
}
