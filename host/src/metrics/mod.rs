//! Prometheus metrics of the host, served by `GET /metrics`.
//!
//! This module only collects: it imports nothing of the host but [`crate::timers`]. The
//! modules that record here convert into its own types ([`ErrorKind`], [`MonitorReport`],
//! [`TokenLabels`]), and what a scrape reads from them comes through [`QueueSource`] and
//! [`PoolSource`], which the queue front and the Redis pool implement.
//!
//! [`Metrics`] is built once in `main` and owns the registry. Two kinds of metrics:
//! - counted as things happen: per component, invocations, errors by [`ErrorKind`], a
//!   duration and a peak-memory histogram, recorded through a [`ComponentMetrics`] handle
//!   that the HTTP server and the queue worker resolve once per component at start-up; and
//!   the Redis pool's wait-time histogram, observed by the pool itself;
//! - sampled when scraped ([`sampled`]): queue counts, the Redis pool's snapshot, RSS and
//!   tokio tasks. No timer samples anything in the background.
//!
//! Every label value comes from a bounded set: component and queue names from the manifest,
//! triggers and error kinds from fixed enums. No path, job id or error text is ever a label.
//!
//! Also here: the scheduler's entries and lag ([`SchedulerMetrics`], recorded by the
//! scheduler), monitors' samples and alerts and schedules' tick outcomes ([`Monitors`]), and
//! the host-wide [`Activity`] the dashboard samples, the HTTP server's connections
//! ([`ConnectionMetrics`]: open, and refused or cut by a limit of `[http]`), and its
//! requests to component routes ([`RouteHttpMetrics`]: by route and status class, timed).

mod activity;
mod component;
mod connections;
mod http;
mod llm;
pub mod monitor;
pub mod quantiles;
mod sampled;
mod scheduler;

use std::sync::Arc;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use activity::{Activity, ActivitySnapshot};
pub use component::{ComponentMetrics, ErrorKind, PeakMemory, Trigger};
pub use connections::{ConnectionLimit, ConnectionMetrics, OpenConnection};
pub use http::{RouteHttpMetrics, StatusClass, UNMATCHED};
pub use llm::{AgentTokenLabels, LlmCallLabels, LlmMetrics, MAX_MODEL_SERIES, TokenLabels};
pub use monitor::{MonitorAlert, MonitorReport, MonitorSample, Monitors, Severity, TickOutcome};
pub(crate) use sampled::resident_memory;
pub use sampled::{PoolCounts, PoolSource, QueueSource, QueueStats};
pub use scheduler::SchedulerMetrics;

use component::{ComponentLabels, ErrorLabels, InvocationLabels};
use sampled::Sample;

/// Every metric name starts with it.
const PREFIX: &str = "llmchat";

/// Upper bounds of the Redis pool's wait-time buckets, in seconds: 100 µs to 5 s (the wait
/// is bounded by `acquire_timeout`, 1 s by default).
const REDIS_WAIT_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, what Prometheus asks for first.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4, for everyone else (curl, older scrapers).
    Prometheus,
}

impl Format {
    /// Picks the format from a request's `Accept` header, as Prometheus's own exporters do.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The host's metrics; built once in `main`, shared by the HTTP server and the queue worker.
pub struct Metrics {
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily<ComponentLabels>,
    peak_memory: HistogramFamily<ComponentLabels>,
    peak_host_memory: HistogramFamily<ComponentLabels>,
    rate_limited: Family<ComponentLabels, Counter>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_agent_tokens: Family<AgentTokenLabels, Counter>,
    queues: Arc<dyn QueueSource>,
    pool: Option<Arc<dyn PoolSource>>,
    scheduler: Arc<SchedulerMetrics>,
    monitors: Arc<Monitors>,
    activity: Arc<Activity>,
    connections: ConnectionMetrics,
    http: http::HttpFamilies,
    llm: LlmMetrics,
}

impl Metrics {
    /// Registers every metric; a scrape reads `queues` and `pool`. With a `pool`, it starts
    /// recording its waits here.
    pub fn new(queues: Arc<dyn QueueSource>, pool: Option<Arc<dyn PoolSource>>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "The llmchat version serving",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "component_invocations",
            "Invocations of the component that ended, by trigger",
            invocations.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "component_errors",
            "Failed invocations of the component, by kind: trap (wasm trap, panic or other abort), timeout, memory (memory_limit hit), guest (the guest reported a failure: a job's retry/fail error, an HTTP error response)",
            errors.clone(),
        );
        let duration: HistogramFamily<ComponentLabels> =
            Family::new_with_constructor(|| Histogram::new(component::DURATION_BUCKETS));
        registry.register_with_unit(
            "component_duration",
            "Wall-clock time of one invocation: instantiation and call",
            Unit::Seconds,
            duration.clone(),
        );
        let peak_memory: HistogramFamily<ComponentLabels> =
            Family::new_with_constructor(|| Histogram::new(component::peak_memory_buckets()));
        registry.register_with_unit(
            "component_peak_memory",
            "The most memory one invocation held: its linear memories and tables plus what the host held for it (the part its memory_limit caps)",
            Unit::Bytes,
            peak_memory.clone(),
        );
        let peak_host_memory: HistogramFamily<ComponentLabels> =
            Family::new_with_constructor(|| Histogram::new(component::peak_memory_buckets()));
        registry.register_with_unit(
            "component_peak_host_memory",
            "The most memory the host held on behalf of one invocation (resources, fields, bodies, streams, buffers); included in component_peak_memory",
            Unit::Bytes,
            peak_host_memory.clone(),
        );
        if let Some(pool) = &pool {
            let wait = Histogram::new(REDIS_WAIT_BUCKETS);
            registry.register_with_unit(
                "redis_pool_wait",
                "How long Redis commands that found every slot busy waited for one (those that gave up included)",
                Unit::Seconds,
                wait.clone(),
            );
            pool.record_waits_in(wait);
        }
        let rate_limited = Family::<ComponentLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "HTTP requests refused with 429 by their route's rate limit, before any instance",
            rate_limited.clone(),
        );
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "llm_tokens",
            "Tokens of the LLM completions each component asked for, by direction: in (prompt) and out (completion)",
            llm_tokens.clone(),
        );
        let llm_agent_tokens = Family::<AgentTokenLabels, Counter>::default();
        registry.register(
            "llm_agent_tokens",
            "Tokens of the LLM completions made for each agent (the `agent` of the llm request; at most 256 agents, the rest as `other`), by direction",
            llm_agent_tokens.clone(),
        );
        let scheduler = Arc::new(SchedulerMetrics::default());
        registry.register(
            "scheduler_entries",
            "Entries of the host's one scheduler: every periodic duty (queue promotion, reclaim, heartbeat, kv sweep, dashboard sampling) and every [[trigger.schedule]]",
            scheduler.entries.clone(),
        );
        registry.register_with_unit(
            "scheduler_lag",
            "How late a scheduler entry started after its due time",
            Unit::Seconds,
            scheduler.lag.clone(),
        );
        let monitors = Arc::new(Monitors::default());
        registry.register(
            "schedule_ticks",
            "Ticks of each [[trigger.schedule]] by outcome: ok, failed, skipped (the previous run was still going), elsewhere (another host ran it), unclaimed (Redis unreachable, so not run)",
            monitors.ticks.clone(),
        );
        registry.register(
            "monitor_sample",
            "The latest value of each sample a monitor reported, labelled by monitor, sample name and the monitor's own labels",
            monitors.samples.clone(),
        );
        registry.register(
            "monitor_alerts",
            "Alerts raised by monitors (and by the host when a monitor's tick fails), by severity",
            monitors.alerts.clone(),
        );
        let open = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now (capped by [http] max_connections)",
            open.clone(),
        );
        let refused = Family::<connections::LimitLabels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections refused or cut by a limit of [http], by limit: max_connections (refused at accept), header_read_timeout (a request head too slow), idle_timeout (a keep-alive connection idle too long)",
            refused.clone(),
        );
        let connections = ConnectionMetrics::new(open, &refused);
        let http = http::HttpFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(component::DURATION_BUCKETS)),
        };
        registry.register(
            "http_requests",
            "HTTP requests to component routes by route pattern (`unmatched`: no route matched) and status class, counted when the response body has been sent or cut",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to the end of its response body, by route pattern",
            Unit::Seconds,
            http.duration.clone(),
        );
        let llm = LlmMetrics::new();
        registry.register(
            "llm_requests",
            "LLM calls by provider, model and outcome: ok, invalid_request, provider_error (the provider answered an error status), unavailable (could not reach it), timeout, cancelled (a stream dropped before its end)",
            llm.requests.clone(),
        );
        registry.register_with_unit(
            "llm_request_duration",
            "Time of one LLM call by provider and model, to the end of its stream when streamed",
            Unit::Seconds,
            llm.duration.clone(),
        );
        registry.register_with_unit(
            "llm_time_to_first_token",
            "Time from an LLM call to its first token (a whole completion's time when not streamed), by provider and model",
            Unit::Seconds,
            llm.first_token.clone(),
        );
        registry.register(
            "llm_retries",
            "LLM calls tried again on the same provider after a 429, a 5xx, a connect error or a timeout",
            llm.retries.clone(),
        );
        registry.register(
            "llm_fallbacks",
            "LLM calls that gave up on one target (provider/model) and went on to the next of their route",
            llm.fallbacks.clone(),
        );
        registry.register(
            "llm_breaker_state",
            "Each LLM provider's circuit as of its last call: 0 closed, 1 open (calls fall over at once), 2 half-open (one probe)",
            llm.breaker.clone(),
        );
        registry.register(
            "otel_spans_dropped",
            "Trace spans dropped because the OTLP export queue was full (the collector is slow or down), or after shutdown",
            crate::telemetry::spans_dropped().clone(),
        );
        Self {
            registry,
            invocations,
            errors,
            duration,
            peak_memory,
            peak_host_memory,
            rate_limited,
            llm_tokens,
            llm_agent_tokens,
            queues,
            pool,
            scheduler,
            monitors,
            activity: Arc::default(),
            connections,
            http,
            llm,
        }
    }

    /// The HTTP server's connection gauge and counters; every limit's series exists (at 0)
    /// from start-up.
    pub fn connections(&self) -> &ConnectionMetrics {
        &self.connections
    }

    /// The request counters and duration histogram of the route `pattern` (as written in
    /// the manifest, or [`UNMATCHED`]); resolve it once per route.
    pub fn http_route(&self, pattern: &str) -> RouteHttpMetrics {
        self.http.route(pattern)
    }

    /// The LLM calls' counts and latencies, which the provider wrapper records.
    pub fn llm(&self) -> LlmMetrics {
        self.llm.clone()
    }

    /// The token counters the LLM gate increments.
    pub fn llm_tokens(&self) -> Family<TokenLabels, Counter> {
        self.llm_tokens.clone()
    }

    pub fn llm_agent_tokens(&self) -> Family<AgentTokenLabels, Counter> {
        self.llm_agent_tokens.clone()
    }

    pub fn scheduler(&self) -> &Arc<SchedulerMetrics> {
        &self.scheduler
    }

    pub fn monitors(&self) -> &Arc<Monitors> {
        &self.monitors
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The handles for `component` run by `trigger`; call it once per component at start-up,
    /// with a name from the manifest. Its series exist (at 0) from then on.
    pub fn component(&self, component: &str, trigger: Trigger) -> Arc<ComponentMetrics> {
        let labels = ComponentLabels {
            component: component.to_string(),
        };
        let mut metrics = ComponentMetrics::new(
            self.invocations.get_or_create_owned(&InvocationLabels {
                component: component.to_string(),
                trigger,
            }),
            |kind| {
                self.errors.get_or_create_owned(&ErrorLabels {
                    component: component.to_string(),
                    kind,
                })
            },
            self.duration.get_or_create_owned(&labels),
            self.peak_memory.get_or_create_owned(&labels),
            self.activity.clone(),
            trigger,
        );
        metrics.peak_host_memory = self.peak_host_memory.get_or_create_owned(&labels);
        // Only HTTP routes have rate limits.
        if trigger == Trigger::Http {
            metrics.rate_limited = Some(self.rate_limited.get_or_create_owned(&labels));
        }
        Arc::new(metrics)
    }

    /// Invocations of `component` that ended, whatever their trigger.
    pub fn invocations_of(&self, component: &str) -> u64 {
        Trigger::ALL
            .into_iter()
            .filter_map(|trigger| {
                self.invocations
                    .get(&InvocationLabels {
                        component: component.to_string(),
                        trigger,
                    })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// Samples what is read at scrape time, then encodes everything in `format`.
    pub async fn scrape(&self, format: Format) -> Result<String, std::fmt::Error> {
        let sample = Sample::take(self.queues.as_ref(), self.pool.as_deref()).await;
        let mut sampled = Registry::with_prefix(PREFIX);
        sampled.register_collector(Box::new(sample));
        let mut out = String::with_capacity(16 << 10);
        match format {
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.registry)?;
                text::encode_registry(&mut out, &sampled)?;
                text::encode_eof(&mut out)?;
            }
            Format::Prometheus => {
                prometheus_text::encode(&mut out, &self.registry)?;
                prometheus_text::encode(&mut out, &sampled)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoQueues;

    #[async_trait::async_trait]
    impl QueueSource for NoQueues {
        fn queue_names(&self) -> Vec<String> {
            Vec::new()
        }

        async fn queue_counts(&self, queue: &str) -> anyhow::Result<QueueStats> {
            anyhow::bail!("no queue {queue:?}")
        }
    }

    fn metrics() -> Metrics {
        Metrics::new(Arc::new(NoQueues), None)
    }

    #[test]
    fn error_kinds_index_their_own_counter() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn recorded_invocations_show_in_both_formats() {
        let metrics = metrics();
        let hello = metrics.component("hello", Trigger::Http);
        hello.invocation(
            std::time::Duration::from_millis(3),
            PeakMemory {
                total: 1 << 20,
                host: 4096,
            },
            None,
        );
        hello.invocation(
            std::time::Duration::from_millis(1),
            PeakMemory {
                total: 16 << 20,
                host: 0,
            },
            Some(ErrorKind::Memory),
        );
        let text = metrics.scrape(Format::Prometheus).await.unwrap();
        for line in [
            r#"llmchat_component_invocations_total{component="hello",trigger="http"} 2"#,
            r#"llmchat_component_errors_total{component="hello",kind="memory"} 1"#,
            r#"llmchat_component_errors_total{component="hello",kind="guest"} 0"#,
            r#"llmchat_component_duration_seconds_count{component="hello"} 2"#,
            r#"llmchat_component_peak_memory_bytes_bucket{component="hello",le="1.6777216e+07"} 2"#,
            r#"llmchat_build_info{version=""#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("llmchat_tokio_alive_tasks "), "{text}");
        let open = metrics.scrape(Format::OpenMetrics).await.unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert_eq!(
            open.matches("# EOF").count(),
            1,
            "one EOF after both registries"
        );
    }

    #[test]
    fn accept_header_picks_the_format() {
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
    }
}
