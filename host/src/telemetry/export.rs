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

/// How long the last export at shutdown may take.
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
    /// Exports until `stop`, then flushes what is queued within [`FLUSH_BOUND`].
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batching.max_batch);
        loop {
            let first = tokio::select! {
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
            if stopping {
                break;
            }
        }
        let flush = async {
            while let Ok(span) = self.spans.try_recv() {
                batch.push(span);
                if batch.len() >= self.batching.max_batch {
                    self.export(std::mem::take(&mut batch)).await;
                }
            }
            if !batch.is_empty() {
                self.export(batch).await;
            }
        };
        if crate::timers::timeout(FLUSH_BOUND, flush).await.is_err() {
            tracing::warn!(
                "exporting the last spans took longer than {FLUSH_BOUND:?}; the rest are lost"
            );
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
