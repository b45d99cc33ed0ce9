//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! Off (the default), it costs nothing: [`enabled`] is false, every span constructor in
//! [`spans`] returns `Span::none()` before building anything, and no layer is installed.
//! On, spans are `tracing` spans of the target [`spans::TARGET`] that only the
//! `tracing-opentelemetry` layer sees (the log lines stay as they are); ended spans go
//! through a [`processor::BoundedProcessor`] (never blocks, counts what it drops) to one
//! [`export::ExportTask`] that batches and exports them, and flushes at shutdown.
//! [`Telemetry`] is the owner: built in `main` before the subscriber, run by `up`. JSON log
//! lines written inside a traced span carry its ids ([`log_ids`]).

pub mod export;
pub mod log_ids;
pub mod processor;
pub mod propagation;
pub mod spans;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use self::export::{Batching, ExportTask};
use self::processor::BoundedProcessor;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made at all; checked before building any.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans dropped because the export queue was full (or gone, after shutdown); registered
/// as `llmchat_otel_spans_dropped_total` by the metrics.
pub fn spans_dropped() -> &'static Counter {
    static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
    &DROPPED
}

/// The tracer provider and its exporter task, waiting to be run.
pub struct Telemetry {
    provider: SdkTracerProvider,
    task: ExportTask<opentelemetry_otlp::SpanExporter>,
}

impl Telemetry {
    /// `Ok(None)` when no OTLP endpoint is set. The exporter reads the other
    /// `OTEL_EXPORTER_OTLP_*` variables (headers, timeout) itself, and the SDK
    /// `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn from_env() -> Result<Option<Self>> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return Ok(None);
        }
        if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("llmchat");
        }
        let resource = resource.build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .context("building the OTLP span exporter from the OTEL_EXPORTER_OTLP_* variables")?;
        exporter.set_resource(&resource);
        let capacity = env_number("OTEL_BSP_MAX_QUEUE_SIZE")?.unwrap_or(2048);
        let batching = Batching {
            max_batch: env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?
                .unwrap_or(512)
                .clamp(1, capacity.max(1)),
            delay: Duration::from_millis(
                env_number("OTEL_BSP_SCHEDULE_DELAY")?.unwrap_or(5000) as u64
            ),
        };
        let (processor, spans) = BoundedProcessor::new(capacity, spans_dropped().clone());
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(processor)
            .build();
        Ok(Some(Self {
            provider,
            task: ExportTask {
                spans,
                exporter,
                batching,
            },
        }))
    }

    /// The subscriber layer that turns this module's spans (and only those) into
    /// OpenTelemetry spans; installing it turns [`enabled`] on.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        ENABLED.store(true, Ordering::Relaxed);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("llmchat"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target() == spans::TARGET
            }))
    }

    /// Exports until `stop` is cancelled (after every other part of the host has ended, so
    /// their last spans are in), then flushes within [`export::FLUSH_BOUND`].
    pub async fn run(self, stop: CancellationToken) {
        self.task.run(stop).await;
        ENABLED.store(false, Ordering::Relaxed);
        drop(self.provider);
    }
}

fn env_number(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        _ => Ok(None),
    }
}
