//! `llmchat:runtime/llm`: completions from the host's provider, whole or streamed.

use futures::StreamExt;
use wasmtime::component::Resource;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::llm::{
    self, Completion, Error, Message, ProviderError, Request, Role, Usage,
};
use crate::llm as provider;

/// An open streamed completion, owned by the invocation's capability table.
pub struct HostCompletionStream {
    events: provider::CompletionStream,
    usage: Option<provider::Usage>,
    /// The call's turn, held until the stream is dropped.
    _turn: crate::limits::llm::LlmTurn,
    /// Whose budget the stream's tokens count against.
    agent: Option<String>,
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

    async fn embed(
        &mut self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Vec<f32>>, Error>> {
        Ok(CapabilityCtx::embed(self, model, inputs).await)
    }

    async fn complete_streaming(
        &mut self,
        request: Request,
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
                })?;
                Ok(Ok(stream))
            }
            Err(e) => Ok(Err(to_wit(e))),
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
                Some(Ok(provider::StreamEvent::Delta(text))) => Ok(Some(text)),
                Some(Ok(provider::StreamEvent::Usage(u))) => {
                    let gate = &self.services.llm_gate;
                    gate.record(&self.component.name, u.prompt_tokens, u.completion_tokens);
                    if let Some(agent) = &stream.agent {
                        gate.spend(agent, u.prompt_tokens, u.completion_tokens)
                            .await;
                    }
                    stream.usage = Some(u);
                    continue;
                }
                Some(Err(e)) => Err(to_wit(e)),
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
