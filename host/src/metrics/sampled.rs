//! What is read at scrape time rather than counted as it happens: the queues' counts (from
//! their backend, possibly Redis, so asynchronously), the Redis pool's snapshot, and the
//! process's RSS and tokio tasks.
//!
//! The queues and the pool are read through [`QueueSource`] and [`PoolSource`], which the
//! queue front and the Redis pool implement, so that metrics imports neither.
//!
//! A [`Sample`] is taken first, asynchronously, then handed to the encoder as a
//! [`Collector`] of constant gauges and counters. The queue counters are the backend's own
//! totals, exported as `ConstCounter`s from the sample rather than counted here (a custom
//! collector, not gauges set at scrape time, so that they keep their counter type). On Redis
//! they are the queue's totals across every host and survive restarts, so every host
//! exports the same value: aggregate them with `max`, not `sum`. Nothing here arms a timer;
//! sampling happens only when scraped.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

/// How long a scrape waits for one queue's counts before reporting it down; Prometheus's
/// default scrape timeout is 10 s, and the queues are sampled concurrently.
const QUEUE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// One queue's counts, as its backend keeps them: what `llmchat queues` shows and what a
/// scrape reports (the queue backends produce this type; it lives here, below them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub waiting: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
    /// The backend's running totals (on Redis, across every host).
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
}

/// Where a scrape reads the queues' counts: the queue front of `main`.
#[async_trait]
pub trait QueueSource: Send + Sync {
    /// Every queue of the manifest.
    fn queue_names(&self) -> Vec<String>;
    /// One queue's counts, from its backend.
    async fn queue_counts(&self, queue: &str) -> anyhow::Result<QueueStats>;
}

/// The Redis pool's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub connections: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub waiters: u64,
    pub waits: u64,
    pub timeouts: u64,
}

/// Where a scrape reads the Redis pool's figures, and where the pool records its waits.
pub trait PoolSource: Send + Sync {
    fn pool_counts(&self) -> PoolCounts;
    /// From now on, observe every wait for a command slot in `histogram`.
    fn record_waits_in(&self, histogram: Histogram);
}

/// One scrape's readings.
#[derive(Debug)]
pub(super) struct Sample {
    /// Every queue of the manifest; `None` when its backend did not answer.
    queues: Vec<(String, Option<QueueStats>)>,
    pool: Option<PoolCounts>,
    resident_memory: Option<u64>,
    alive_tasks: usize,
    timers_armed: usize,
}

impl Sample {
    pub(super) async fn take(queues: &dyn QueueSource, pool: Option<&dyn PoolSource>) -> Sample {
        let names = queues.queue_names();
        let stats = join_all(names.iter().map(|q| async move {
            match crate::timers::timeout(QUEUE_STATS_TIMEOUT, queues.queue_counts(q)).await {
                Ok(Ok(stats)) => Some(stats),
                Ok(Err(e)) => {
                    tracing::debug!(queue = %q, "sampling queue counts for /metrics failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!(queue = %q, "sampling queue counts for /metrics timed out");
                    None
                }
            }
        }))
        .await;
        Sample {
            queues: names.into_iter().zip(stats).collect(),
            pool: pool.map(PoolSource::pool_counts),
            resident_memory: resident_memory(),
            alive_tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            timers_armed: crate::timers::armed(),
        }
    }
}

/// Reads one of the backend's running totals out of a queue's counts.
type QueueTotal = fn(&QueueStats) -> u64;

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(metric)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(metric)
}

impl Collector for Sample {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        family(
            e,
            "queue_stats_up",
            "1 when the queue's counts were read from its backend for this scrape, 0 when the backend did not answer (its other queue series are then absent).",
            self.queues.iter().map(|(q, s)| {
                (
                    vec![("queue", q.as_str())],
                    ConstGauge::new(u64::from(s.is_some())),
                )
            }),
        )?;
        let up = || {
            self.queues
                .iter()
                .filter_map(|(q, s)| s.as_ref().map(|s| (q.as_str(), s)))
        };
        family(
            e,
            "queue_jobs",
            "Jobs of the queue by state: waiting, in_flight (delivered, not finished), delayed (due later, retries included) and dead.",
            up().flat_map(|(q, s)| {
                [
                    ("waiting", s.waiting),
                    ("in_flight", s.in_flight),
                    ("delayed", s.delayed),
                    ("dead", s.dead),
                ]
                .map(|(state, n)| (vec![("queue", q), ("state", state)], ConstGauge::new(n)))
            }),
        )?;
        let totals: [(&str, &str, QueueTotal); 3] = [
            (
                "queue_processed",
                "Jobs of the queue that completed, counted by its backend.",
                |s| s.processed,
            ),
            (
                "queue_failed",
                "Jobs of the queue that were dead-lettered, counted by its backend.",
                |s| s.failed,
            ),
            (
                "queue_retried",
                "Failed attempts of the queue's jobs that were scheduled again, counted by its backend.",
                |s| s.retried,
            ),
        ];
        for (name, help, value) in totals {
            family(
                e,
                name,
                help,
                up().map(|(q, s)| (vec![("queue", q)], ConstCounter::new(value(s)))),
            )?;
        }
        if let Some(pool) = &self.pool {
            let gauges = [
                (
                    "redis_pool_connections",
                    "Redis connections the host holds: command connections plus the blocking reader.",
                    pool.connections,
                ),
                (
                    "redis_pool_in_flight",
                    "Redis commands in flight now.",
                    pool.in_flight,
                ),
                (
                    "redis_pool_max_in_flight",
                    "The cap on Redis commands in flight (`[redis] max_in_flight`).",
                    pool.max_in_flight,
                ),
                (
                    "redis_pool_waiters",
                    "Redis commands waiting for a slot now.",
                    pool.waiters,
                ),
            ];
            for (name, help, v) in gauges {
                gauge(e, name, help, v)?;
            }
            counter(
                e,
                "redis_pool_waits",
                "Redis commands that had to wait for a slot.",
                pool.waits,
            )?;
            counter(
                e,
                "redis_pool_timeouts",
                "Redis commands refused because no slot came within `acquire_timeout`.",
                pool.timeouts,
            )?;
        }
        if let Some(rss) = self.resident_memory {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident set size of the host process.",
                rss,
            )?;
        }
        gauge(
            e,
            "tokio_alive_tasks",
            "Tasks alive in the host's tokio runtime.",
            self.alive_tasks as u64,
        )?;
        gauge(
            e,
            "timers_armed",
            "Timers the host has armed now (its own: every sleep and timeout goes through one counted door).",
            self.timers_armed as u64,
        )?;
        Ok(())
    }
}

/// The process's resident set size: resident pages from `/proc/self/statm` times the page
/// size. `None` where there is no procfs.
#[cfg(target_os = "linux")]
pub(crate) fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size()?)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn resident_memory() -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
#[expect(unsafe_code, reason = "sysconf is a C function")]
fn page_size() -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0)
}
