//! `llmchat:runtime/llm`: completions from the host's provider, whole or streamed. Each
//! completion is a `chat <model>` span when tracing is on; a streamed one's lasts until the
//! guest drops the stream, and records the time to its first token.

use std::time::Instant;

use futures::StreamExt;
use tracing::{Instrument, Span};
use wasmtime::component::Resource;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::llm::{
    self, Completion, Error, Message, ProviderError, Request, Role, Usage,
};
use crate::llm as provider;
use crate::telemetry::spans;

/// An open streamed completion, owned by the invocation's capability table.
pub struct HostCompletionStream {
    events: provider::CompletionStream,
    usage: Option<provider::Usage>,
    /// The call's turn, held until the stream is dropped.
    _turn: crate::limits::llm::LlmTurn,
    /// Whose budget the stream's tokens count against.
    agent: Option<String>,
    /// The completion's span, ended when the stream is dropped.
    span: Span,
    /// When the call was made, until its first token arrives.
    awaiting_first: Option<Instant>,
}

/// The span of one completion of `request`, with the provider's name.
fn llm_span(llm: &dyn provider::LlmProvider, request: &Request, streaming: bool) -> Span {
    if !crate::telemetry::enabled() {
        return Span::none();
    }
    let model = request.model.as_deref().unwrap_or(llm.default_model());
    let span = spans::llm(model, streaming);
    span.record("gen_ai.provider.name", llm.name());
    span
}

fn record_usage(span: &Span, u: &provider::Usage) {
    span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
    span.record("gen_ai.usage.output_tokens", u.completion_tokens);
}

fn error_kind(e: &provider::LlmError) -> &'static str {
    match e {
        provider::LlmError::InvalidRequest(_) => "invalid_request",
        provider::LlmError::Provider { .. } => "provider",
        provider::LlmError::Unavailable(_) => "unavailable",
        provider::LlmError::Timeout => "timeout",
    }
}

/// The one mapping from provider errors to the WIT error.
fn to_wit(e: provider::LlmError) -> Error {
    match e {
        provider::LlmError::InvalidRequest(m) => Error::InvalidRequest(m),
        provider::LlmError::Provider {
            status, message, ..
        } => Error::Provider(ProviderError { status, message }),
        provider::LlmError::Unavailable(m) => Error::Unavailable(m),
        provider::LlmError::Timeout => Error::Timeout,
    }
}

fn usage_to_wit(u: provider::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    }
}

fn request_from_wit(r: Request) -> provider::Request {
    let role = |r: Role| match r {
        Role::System => provider::Role::System,
        Role::User => provider::Role::User,
        Role::Assistant => provider::Role::Assistant,
    };
    provider::Request {
        model: r.model,
        messages: r
            .messages
            .into_iter()
            .map(|Message { role: r, content }| provider::Message {
                role: role(r),
                content,
            })
            .collect(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
    }
}

impl llm::Host for &mut CapabilityCtx {
    async fn complete(&mut self, request: Request) -> wasmtime::Result<Result<Completion, Error>> {
        let span = llm_span(self.services.llm.as_ref(), &request, false);
        self.complete_in(request, &span)
            .instrument(span.clone())
            .await
    }

    async fn complete_streaming(
        &mut self,
        request: Request,
    ) -> wasmtime::Result<Result<Resource<HostCompletionStream>, Error>> {
        let span = llm_span(self.services.llm.as_ref(), &request, true);
        let opened = self.open_stream(request, span.clone());
        opened.instrument(span).await
    }

    async fn embed(
        &mut self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Vec<f32>>, Error>> {
        Ok(CapabilityCtx::embed(self, model, inputs).await)
    }
}

impl CapabilityCtx {
    async fn complete_in(
        &mut self,
        request: Request,
        span: &Span,
    ) -> wasmtime::Result<Result<Completion, Error>> {
        let component = self.component.name.clone();
        let agent = request.agent.clone();
        if let Some(agent) = &agent
            && let Err(reason) = self.services.llm_gate.check_budget(agent).await
        {
            return Ok(Err(Error::QuotaExceeded(reason)));
        }
        let _turn = match self.services.llm_gate.turn(&component).await {
            Ok(turn) => turn,
            Err(reason) => return Ok(Err(Error::Unavailable(reason))),
        };
        let result = self.services.llm.complete(request_from_wit(request)).await;
        match &result {
            Ok(c) => {
                span.record("gen_ai.response.model", c.model.as_str());
                if let Some(u) = &c.usage {
                    record_usage(span, u);
                }
            }
            Err(e) => spans::record_error(span, error_kind(e)),
        }
        if let Ok(c) = &result
            && let Some(u) = &c.usage
        {
            let gate = &self.services.llm_gate;
            gate.record(&component, u.prompt_tokens, u.completion_tokens);
            if let Some(agent) = &agent {
                gate.spend(agent, u.prompt_tokens, u.completion_tokens)
                    .await;
            }
        }
        Ok(result.map_err(to_wit).map(|c| Completion {
            content: c.content,
            model: c.model,
            provider: c.provider,
            usage: c.usage.map(usage_to_wit),
        }))
    }

    async fn open_stream(
        &mut self,
        request: Request,
        span: Span,
    ) -> wasmtime::Result<Result<Resource<HostCompletionStream>, Error>> {
        let agent = request.agent.clone();
        if let Some(agent) = &agent
            && let Err(reason) = self.services.llm_gate.check_budget(agent).await
        {
            return Ok(Err(Error::QuotaExceeded(reason)));
        }
        let turn = match self.services.llm_gate.turn(&self.component.name).await {
            Ok(turn) => turn,
            Err(reason) => return Ok(Err(Error::Unavailable(reason))),
        };
        match self.services.llm.stream(request_from_wit(request)).await {
            Ok(events) => {
                let stream = self.streams.push(HostCompletionStream {
                    events,
                    usage: None,
                    _turn: turn,
                    agent,
                    span,
                    awaiting_first: Some(Instant::now()),
                })?;
                Ok(Ok(stream))
            }
            Err(e) => {
                spans::record_error(&span, error_kind(&e));
                Ok(Err(to_wit(e)))
            }
        }
    }
}

impl CapabilityCtx {
    /// `llm.embed`: through the component's LLM turn (the calls at once are bounded as for
    /// completions), its inputs bounded before anything is sent.
    pub(super) async fn embed(
        &mut self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        provider::check_embed(&inputs).map_err(to_wit)?;
        let _turn = self
            .services
            .llm_gate
            .turn(&self.component.name)
            .await
            .map_err(Error::Unavailable)?;
        self.services.llm.embed(model, inputs).await.map_err(to_wit)
    }
}

impl llm::HostCompletionStream for &mut CapabilityCtx {
    async fn next(
        &mut self,
        stream: Resource<HostCompletionStream>,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        let stream = self.streams.get_mut(&stream)?;
        loop {
            return Ok(match stream.events.next().await {
                None => Ok(None),
                Some(Ok(provider::StreamEvent::Delta(text))) => {
                    if let Some(asked) = stream.awaiting_first.take() {
                        let ms = asked.elapsed().as_secs_f64() * 1000.0;
                        stream.span.record("llmchat.llm.time_to_first_token_ms", ms);
                    }
                    Ok(Some(text))
                }
                Some(Ok(provider::StreamEvent::Usage(u))) => {
                    record_usage(&stream.span, &u);
                    let gate = &self.services.llm_gate;
                    gate.record(&self.component.name, u.prompt_tokens, u.completion_tokens);
                    if let Some(agent) = &stream.agent {
                        gate.spend(agent, u.prompt_tokens, u.completion_tokens)
                            .await;
                    }
                    stream.usage = Some(u);
                    continue;
                }
                Some(Err(e)) => {
                    spans::record_error(&stream.span, error_kind(&e));
                    Err(to_wit(e))
                }
            });
        }
    }

    async fn usage(
        &mut self,
        stream: Resource<HostCompletionStream>,
    ) -> wasmtime::Result<Option<Usage>> {
        Ok(self.streams.get(&stream)?.usage.map(usage_to_wit))
    }

    async fn drop(&mut self, stream: Resource<HostCompletionStream>) -> wasmtime::Result<()> {
        self.streams.delete(stream)?;
        Ok(())
    }
}
