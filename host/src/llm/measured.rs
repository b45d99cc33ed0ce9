//! Every LLM call timed and counted by provider and model: the provider the host uses is
//! the configured one wrapped in [`Measured`], so no provider records anything itself.
//!
//! A completion's time to first token is its whole time (the answer comes in one piece); a
//! stream's is the time to its first text delta, and its duration runs to its end. A stream
//! dropped before its end (the component stopped reading, or ended) counts as `cancelled`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use futures::Stream;

use super::{Completion, CompletionStream, LlmError, LlmProvider, Request, StreamEvent};
use crate::metrics::{LlmCallLabels, LlmMetrics};

/// `inner`, with its calls recorded in `metrics`.
pub struct Measured {
    inner: Arc<dyn LlmProvider>,
    metrics: LlmMetrics,
}

impl Measured {
    pub fn new(inner: Arc<dyn LlmProvider>, metrics: LlmMetrics) -> Self {
        Self { inner, metrics }
    }

    fn labels(&self, request: &Request) -> LlmCallLabels {
        let model = request
            .model
            .as_deref()
            .unwrap_or_else(|| self.inner.default_model());
        self.metrics.labels(self.inner.name(), model)
    }
}

/// The `outcome` label of a failed call.
fn outcome(e: &LlmError) -> &'static str {
    match e {
        LlmError::InvalidRequest(_) => "invalid_request",
        LlmError::Provider { .. } => "provider_error",
        LlmError::Unavailable(_) => "unavailable",
        LlmError::Timeout => "timeout",
    }
}

#[async_trait]
impl LlmProvider for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn default_model(&self) -> &str {
        self.inner.default_model()
    }

    async fn embed(
        &self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        self.inner.embed(model, inputs).await
    }

    async fn complete(&self, request: Request) -> Result<Completion, LlmError> {
        let labels = self.labels(&request);
        let started = Instant::now();
        let result = self.inner.complete(request).await;
        let took = started.elapsed();
        match &result {
            Ok(_) => {
                self.metrics.first_token(&labels, took);
                self.metrics.ended(&labels, "ok", took);
            }
            Err(e) => self.metrics.ended(&labels, outcome(e), took),
        }
        result
    }

    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError> {
        let labels = self.labels(&request);
        let started = Instant::now();
        match self.inner.stream(request).await {
            Ok(inner) => Ok(Box::pin(MeasuredStream {
                inner,
                call: Some(Call {
                    metrics: self.metrics.clone(),
                    labels,
                    started,
                    first_token: false,
                }),
            })),
            Err(e) => {
                self.metrics.ended(&labels, outcome(&e), started.elapsed());
                Err(e)
            }
        }
    }

    async fn probe(&self) -> Result<(), LlmError> {
        self.inner.probe().await
    }
}

/// A streamed call still going.
struct Call {
    metrics: LlmMetrics,
    labels: LlmCallLabels,
    started: Instant,
    first_token: bool,
}

impl Call {
    fn end(self, outcome: &'static str) {
        self.metrics
            .ended(&self.labels, outcome, self.started.elapsed());
    }
}

struct MeasuredStream {
    inner: CompletionStream,
    call: Option<Call>,
}

impl Stream for MeasuredStream {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(StreamEvent::Delta(_)))) => {
                if let Some(call) = self.call.as_mut()
                    && !call.first_token
                {
                    call.first_token = true;
                    call.metrics
                        .first_token(&call.labels, call.started.elapsed());
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let outcome = outcome(e);
                if let Some(call) = self.call.take() {
                    call.end(outcome);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.end("ok");
                }
            }
            Poll::Ready(Some(Ok(StreamEvent::Usage(_)))) | Poll::Pending => {}
        }
        polled
    }
}

impl Drop for MeasuredStream {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.end("cancelled");
        }
    }
}
