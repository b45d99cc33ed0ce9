//! LLM providers behind one trait, [`LlmProvider`]: `echo` (the embedded, deterministic
//! default), `openai` (any OpenAI-compatible `/v1/chat/completions`: OpenAI, Ollama, vLLM,
//! llama.cpp) and `anthropic` (the native Messages API), several of them behind the
//! [`Router`] that retries and falls over. API keys stay here in the host; components only
//! see completions.

mod anthropic;
mod breaker;
mod echo;
mod measured;
mod openai;
mod router;
mod sse;

use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

pub use anthropic::AnthropicProvider;
pub use echo::EchoProvider;
pub use measured::Measured;
pub use openai::OpenAiProvider;
pub use router::Router;

use crate::manifest::LlmSettings;
use crate::metrics::LlmMetrics;

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
    Provider {
        status: u16,
        message: String,
        /// The provider's `Retry-After`, when it sent one (a 429 or 503).
        retry_after: Option<std::time::Duration>,
    },
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider timed out")]
    Timeout,
}

/// A source of completions.
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// The provider's name as reported to components, e.g. "echo".
    fn name(&self) -> &str;
    /// The model a request that names none gets, for metrics.
    fn default_model(&self) -> &str;
    async fn complete(&self, request: Request) -> Result<Completion, LlmError>;
    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError>;
    /// A cheap request that proves the provider answers, for the `probe` capability.
    async fn probe(&self) -> Result<(), LlmError>;
    /// One vector per input, in order (inputs already checked by [`check_embed`]).
    async fn embed(
        &self,
        model: Option<String>,
        _inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let _ = model;
        Err(LlmError::InvalidRequest(format!(
            "provider `{}` has no embeddings",
            self.name()
        )))
    }
}

/// Most inputs of one `embed` call, and their bounds: a component cannot make the host hold
/// more than this, nor an answer much larger than inputs × dimensions.
pub const MAX_EMBED_INPUTS: usize = 128;
pub const MAX_EMBED_INPUT: usize = 16 * 1024;
pub const MAX_EMBED_TOTAL: usize = 256 * 1024;

/// Refuses an `embed` call beyond the bounds, naming which.
pub fn check_embed(inputs: &[String]) -> Result<(), LlmError> {
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(LlmError::InvalidRequest(format!(
            "embed takes 1 to {MAX_EMBED_INPUTS} inputs, not {}",
            inputs.len()
        )));
    }
    if let Some((i, long)) = inputs
        .iter()
        .enumerate()
        .find(|(_, s)| s.len() > MAX_EMBED_INPUT)
    {
        return Err(LlmError::InvalidRequest(format!(
            "embed input {i} is {} bytes, above {MAX_EMBED_INPUT}",
            long.len()
        )));
    }
    let total: usize = inputs.iter().map(String::len).sum();
    if total > MAX_EMBED_TOTAL {
        return Err(LlmError::InvalidRequest(format!(
            "embed inputs are {total} bytes in all, above {MAX_EMBED_TOTAL}"
        )));
    }
    Ok(())
}

/// The providers of `[llm]` behind their router, each measured in `metrics`.
pub fn from_config(
    config: &crate::manifest::LlmConfig,
    metrics: LlmMetrics,
) -> Result<Arc<dyn LlmProvider>> {
    let mut providers = std::collections::BTreeMap::new();
    for (name, settings) in &config.providers {
        let inner = from_settings(name, settings)
            .map_err(|e| anyhow::anyhow!("in [llm] provider `{name}`: {e:#}"))?;
        providers.insert(
            name.clone(),
            Arc::new(Measured::new(inner, metrics.clone())) as Arc<dyn LlmProvider>,
        );
    }
    Ok(Arc::new(Router::new(config, providers, metrics)))
}

/// Builds one provider, named `name`.
pub fn from_settings(name: &str, settings: &LlmSettings) -> Result<Arc<dyn LlmProvider>> {
    Ok(match settings {
        LlmSettings::Echo { word_delay } => {
            Arc::new(EchoProvider::new(name, word_delay.map(|d| d.0)))
        }
        LlmSettings::Openai { .. } => Arc::new(OpenAiProvider::from_settings(name, settings)?),
        LlmSettings::Anthropic { .. } => {
            Arc::new(AnthropicProvider::from_settings(name, settings)?)
        }
    })
}

/// Rejects requests no provider can answer.
fn check_request(request: &Request) -> Result<(), LlmError> {
    if request.messages.is_empty() {
        return Err(LlmError::InvalidRequest("no messages".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_calls_are_bounded_by_count_size_and_total() {
        let ok = vec!["a".to_string(); MAX_EMBED_INPUTS];
        assert!(check_embed(&ok).is_ok());
        let e = check_embed(&[]).unwrap_err().to_string();
        assert!(e.contains("1 to 128 inputs, not 0"), "{e}");
        let e = check_embed(&vec!["a".to_string(); MAX_EMBED_INPUTS + 1]).unwrap_err();
        assert!(e.to_string().contains("not 129"), "{e}");
        let long = vec!["x".repeat(MAX_EMBED_INPUT + 1)];
        assert!(
            check_embed(&long)
                .unwrap_err()
                .to_string()
                .contains("input 0")
        );
        let total = vec!["x".repeat(MAX_EMBED_INPUT); 17];
        assert!(
            check_embed(&total)
                .unwrap_err()
                .to_string()
                .contains("in all")
        );
    }
}
