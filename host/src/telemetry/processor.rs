//! [`BoundedProcessor`]: hands each ended span to the exporter task without ever waiting.
//!
//! The SDK calls `on_end` on the thread that ends the span, which is a request's or a job's
//! task. A full queue (the collector is slow or down) must cost that task nothing, so the
//! span is dropped and counted (`llmchat_otel_spans_dropped_total`) instead of waited for.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Sends ended spans into a bounded channel read by [`super::export::ExportTask`].
#[derive(Debug)]
pub struct BoundedProcessor {
    spans: mpsc::Sender<SpanData>,
    dropped: Counter,
}

impl BoundedProcessor {
    /// The processor and the receiving end of its queue of at most `capacity` spans.
    pub fn new(capacity: usize, dropped: Counter) -> (Self, mpsc::Receiver<SpanData>) {
        let (spans, receiver) = mpsc::channel(capacity.max(1));
        (Self { spans, dropped }, receiver)
    }
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Full (the exporter is behind) or closed (it ended at shutdown): dropped, counted.
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Flushing is the exporter task's, at shutdown ([`super::export::ExportTask::run`]).
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    #[test]
    fn a_full_queue_drops_and_counts_spans_without_blocking() {
        let dropped = Counter::default();
        let (processor, mut spans) = BoundedProcessor::new(2, dropped.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        for name in ["a", "b", "c", "d", "e"] {
            tracer.in_span(name, |_| {});
        }
        assert_eq!(
            dropped.get(),
            3,
            "the three spans past capacity are counted"
        );
        let kept: Vec<String> = std::iter::from_fn(|| spans.try_recv().ok())
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(kept, ["a", "b"], "the first two are kept, in order");
        // Once the exporter is gone, every span is a counted drop.
        drop(spans);
        tracer.in_span("f", |_| {});
        assert_eq!(dropped.get(), 4);
    }
}
