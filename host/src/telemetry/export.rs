//! [`ExportTask`]: the one task that sends spans to the collector, in batches.
//!
//! It waits for a first span, then gathers more until the batch is full
//! (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`) or the delay (`OTEL_BSP_SCHEDULE_DELAY`) is over, and
//! exports it; one export at a time, so a slow collector only fills the processor's queue
//! (whose overflow is counted), never the host's memory. At shutdown it sends what had
//! ended by then, within [`FLUSH_BOUND`].

use std::time::Duration;

use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the exporter may go on once shutdown has begun.
pub const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// How spans are batched.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_batch: usize,
    pub delay: Duration,
}

pub struct ExportTask<E> {
    pub(super) spans: mpsc::Receiver<SpanData>,
    pub(super) exporter: E,
    pub(super) batching: Batching,
}

impl<E: SpanExporter> ExportTask<E> {
    /// Exports until `stop`, then flushes what is queued; everything after `stop` is done
    /// within [`FLUSH_BOUND`], so a collector that does not answer delays shutdown no longer.
    pub async fn run(self, stop: CancellationToken) {
        let bound = async {
            stop.cancelled().await;
            crate::timers::sleep(FLUSH_BOUND).await;
        };
        tokio::select! {
            () = self.work(stop.clone()) => {}
            () = bound => tracing::warn!(
                "the OTLP endpoint did not take the last spans within {FLUSH_BOUND:?} of shutdown; spans lost"
            ),
        }
    }

    async fn work(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batching.max_batch);
        loop {
            // Spans first: what had ended when the stop came is still sent, in full batches.
            let first = tokio::select! {
                biased;
                span = self.spans.recv() => span,
                () = stop.cancelled() => break,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let due = crate::timers::sleep(self.batching.delay);
            tokio::pin!(due);
            let mut stopping = false;
            while batch.len() < self.batching.max_batch {
                tokio::select! {
                    biased;
                    span = self.spans.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    () = &mut due => break,
                    () = stop.cancelled() => {
                        stopping = true;
                        break;
                    }
                }
            }
            self.export(std::mem::take(&mut batch)).await;
            if stopping || stop.is_cancelled() {
                break;
            }
        }
        // What had ended by the stop.
        while let Ok(span) = self.spans.try_recv() {
            batch.push(span);
            if batch.len() >= self.batching.max_batch {
                self.export(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.export(batch).await;
        }
    }

    async fn export(&self, batch: Vec<SpanData>) {
        let count = batch.len();
        if let Err(e) = self.exporter.export(batch).await {
            tracing::warn!(
                spans = count,
                "exporting spans to the OTLP endpoint failed: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::telemetry::processor::BoundedProcessor;

    /// Records the size of each batch it is given.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Recorder {
        fn sizes(&self) -> Vec<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch.len());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spans_are_batched_by_size_then_by_delay_and_flushed_at_stop() {
        let (processor, spans) = BoundedProcessor::new(100, Counter::default());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let recorder = Recorder::default();
        let task = ExportTask {
            spans,
            exporter: recorder.clone(),
            batching: Batching {
                max_batch: 2,
                delay: Duration::from_secs(1),
            },
        };
        let stop = CancellationToken::new();
        let running = tokio::spawn(task.run(stop.clone()));
        for _ in 0..5 {
            tracer.in_span("s", |_| {});
        }
        // Two full batches at once, the fifth span alone once the delay is over (the
        // paused clock jumps ahead whenever every task waits).
        let started = tokio::time::Instant::now();
        while recorder.sizes() != [2, 2, 1] {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                recorder.sizes()
            );
            crate::timers::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "the last span waited for the delay"
        );

        // What ended before stop is sent at stop, without waiting for the delay.
        for _ in 0..3 {
            tracer.in_span("s", |_| {});
        }
        let stopped_at = tokio::time::Instant::now();
        stop.cancel();
        running.await.expect("the export task");
        assert_eq!(recorder.sizes(), [2, 2, 1, 2, 1]);
        assert!(stopped_at.elapsed() < Duration::from_secs(1));
    }
}
