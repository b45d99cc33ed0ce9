//! One sample of the dashboard's history, and the sampler that turns the host's running
//! totals into per-interval rates and quantiles.

use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::time::Instant;

use crate::metrics::quantiles::Snapshot;
use crate::metrics::{ActivitySnapshot, Metrics, Trigger};
use crate::queue::Queues;
use crate::redis::RedisPool;
use crate::timers::now_ms;

/// The longest queue counts are reused while this host sees no queue activity: other hosts'
/// changes show within this.
const QUEUE_COUNTS_MAX_AGE: Duration = Duration::from_secs(60);
/// How long one sample waits for a queue's counts.
const QUEUE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueueTotals {
    pub waiting: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub http: f64,
    pub queue: f64,
    pub schedule: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedisSample {
    pub connections: u64,
    pub in_flight: u64,
    pub waiters: u64,
    /// Not sampled yet: the pool's waits are in a Prometheus histogram only.
    pub wait_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerSample {
    pub lag_p99_ms: Option<f64>,
}

/// One point of every series; about 200 bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    /// `None` when the queue backend did not answer.
    pub queues: Option<QueueTotals>,
    pub throughput: Throughput,
    pub latency_ms: Latency,
    pub memory: Memory,
    /// `None` without Redis.
    pub redis: Option<RedisSample>,
    pub scheduler: SchedulerSample,
}

/// The previous readings, to turn totals into windows.
pub(super) struct Sampler {
    at: Instant,
    activity: ActivitySnapshot,
    lag: Snapshot,
    /// The last queue totals read, when, and the host's queue activity then.
    queues: Option<QueueTotals>,
    queues_read_at: Option<Instant>,
    queues_activity: u64,
}

impl Sampler {
    pub(super) fn new(metrics: &Metrics) -> Self {
        Self {
            at: Instant::now(),
            activity: metrics.activity().snapshot(),
            lag: metrics.scheduler().lag_snapshot(),
            queues: None,
            queues_read_at: None,
            queues_activity: 0,
        }
    }

    /// Whether the queue counts must be read again: this host saw queue activity since the
    /// last read, or the last read is too old. An idle host asks Redis once a minute.
    pub(super) fn queue_read_needed(&self, queues: &Queues) -> bool {
        self.queues_read_at
            .is_none_or(|at| at.elapsed() >= QUEUE_COUNTS_MAX_AGE)
            || queues.activity() != self.queues_activity
            || self.queues.is_none()
    }

    /// A sample from the running totals; `queues` are fresh counts when they were read.
    pub(super) fn take(
        &mut self,
        metrics: &Metrics,
        redis: Option<&RedisPool>,
        queues: Option<(Option<QueueTotals>, u64)>,
    ) -> Sample {
        let now = Instant::now();
        if let Some((totals, activity)) = queues {
            self.queues = totals;
            self.queues_read_at = Some(now);
            self.queues_activity = activity;
        }
        let activity = metrics.activity().snapshot();
        let lag = metrics.scheduler().lag_snapshot();
        let seconds = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let rate = |t: Trigger| {
            (activity.invocations[t.index()] - self.activity.invocations[t.index()]) as f64
                / seconds
        };
        let latency = activity.latency.since(&self.activity.latency);
        let lag_window = lag.since(&self.lag);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let sample = Sample {
            t_ms: now_ms(),
            queues: self.queues,
            throughput: Throughput {
                http: rate(Trigger::Http),
                queue: rate(Trigger::Queue),
                schedule: rate(Trigger::Schedule),
            },
            latency_ms: Latency {
                p50: latency.quantile(0.5).map(ms),
                p99: latency.quantile(0.99).map(ms),
            },
            memory: Memory {
                rss_bytes: crate::metrics::resident_memory(),
            },
            redis: redis.map(|pool| {
                let stats = pool.stats();
                RedisSample {
                    connections: stats.connections,
                    in_flight: stats.in_flight,
                    waiters: stats.waiters,
                    wait_p99_ms: None,
                }
            }),
            scheduler: SchedulerSample {
                lag_p99_ms: lag_window.quantile(0.99).map(ms),
            },
        };
        self.at = now;
        self.activity = activity;
        self.lag = lag;
        sample
    }
}

/// The totals over every queue, read from the backend now, with the host's queue activity
/// at the time of reading; `None` totals when a queue's backend did not answer.
pub(super) async fn read_queue_totals(queues: &Queues) -> (Option<QueueTotals>, u64) {
    let activity = queues.activity();
    let names = queues.names();
    let backend = queues.backend();
    let stats = join_all(
        names
            .iter()
            .map(|q| crate::timers::timeout(QUEUE_STATS_TIMEOUT, backend.stats(q))),
    )
    .await;
    let mut totals = QueueTotals::default();
    for (name, stats) in names.iter().zip(stats) {
        match stats {
            Ok(Ok(s)) => {
                totals.waiting += s.waiting;
                totals.in_flight += s.in_flight;
                totals.delayed += s.delayed;
                totals.dead += s.dead;
            }
            Ok(Err(e)) => {
                tracing::debug!(queue = %name, "dashboard: reading queue counts failed: {e}");
                return (None, activity);
            }
            Err(_) => {
                tracing::debug!(queue = %name, "dashboard: reading queue counts timed out");
                return (None, activity);
            }
        }
    }
    (Some(totals), activity)
}
