//! The live dashboard: a bounded history of the key series, sampled by the scheduler,
//! served as JSON at `/dashboard/history` and drawn by the static page at `/dashboard`;
//! and the queue page at `/dashboard/queues` ([`queues`]), drawn from the admin API.
//!
//! The history is a ring of `[dashboard] samples` entries allocated once (360 × 10 s = one
//! hour by default), so it never grows; older samples are overwritten. Long-term history is
//! Prometheus's job, through `/metrics`.

pub mod queues;
mod sample;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

pub use sample::Sample;

use crate::manifest::DashboardSettings;
use crate::metrics::Metrics;
use crate::metrics::monitor::RecentAlert;
use crate::queue::Queues;
use crate::redis::RedisPool;
use crate::scheduler::Scheduler;
use sample::Sampler;

/// The page, embedded: no build step, no external resource.
pub const PAGE: &str = include_str!("index.html");

/// A ring of at most `capacity` items, allocated once.
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Slots allocated: constant after construction.
    pub fn allocated(&self) -> usize {
        self.items.capacity()
    }

    pub fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }
}

/// The history and its sampler; built once in `main`.
pub struct Dashboard {
    history: Mutex<Ring<Sample>>,
    sampler: Mutex<Sampler>,
    interval: Duration,
    metrics: Arc<Metrics>,
    queues: Arc<Queues>,
    /// `None` without Redis.
    redis: Option<Arc<RedisPool>>,
}

/// `GET /dashboard/history`.
#[derive(Serialize)]
struct HistoryJson<'a> {
    interval_ms: u64,
    capacity: usize,
    samples: &'a [Sample],
    alerts: Vec<RecentAlert>,
    /// Each LLM provider's circuit, as of its last call.
    llm_providers: Vec<ProviderState>,
}

#[derive(Serialize)]
struct ProviderState {
    provider: String,
    /// `closed`, `open` (calls fall over at once) or `half-open` (one probe let through).
    state: &'static str,
}

impl Dashboard {
    /// Samples the host's totals in `metrics`, the counts of `queues` and the `redis` pool.
    pub fn new(
        settings: &DashboardSettings,
        metrics: Arc<Metrics>,
        queues: Arc<Queues>,
        redis: Option<Arc<RedisPool>>,
    ) -> Self {
        Self {
            history: Mutex::new(Ring::new(settings.samples)),
            sampler: Mutex::new(Sampler::new(&metrics)),
            interval: settings.sample_every.0,
            metrics,
            queues,
            redis,
        }
    }

    /// Adds the sampling to `scheduler`: every `sample_every`, at a fixed rate.
    pub fn schedule(self: &Arc<Self>, scheduler: &Scheduler) {
        let dashboard = self.clone();
        let interval = self.interval;
        scheduler.add(
            "dashboard sample",
            Instant::now() + interval,
            Box::new(move |due| {
                let dashboard = dashboard.clone();
                Box::pin(async move {
                    dashboard.sample().await;
                    Some((due + interval).max(Instant::now()))
                })
            }),
        );
    }

    /// Takes one sample now; also gives freed heap back to the OS (the sample is the host's
    /// one periodic duty that always runs, every 10 s by default).
    pub async fn sample(&self) {
        crate::engine::trim_periodically();
        let needed = self.lock_sampler().queue_read_needed(&self.queues);
        let queues = if needed {
            Some(sample::read_queue_totals(&self.queues).await)
        } else {
            None
        };
        let sample = self
            .lock_sampler()
            .take(&self.metrics, self.redis.as_deref(), queues);
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sample);
    }

    fn lock_sampler(&self) -> std::sync::MutexGuard<'_, Sampler> {
        self.sampler.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The history as `GET /dashboard/history` serves it.
    pub fn history_json(&self) -> String {
        let (samples, capacity) = {
            let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            (history.to_vec(), history.capacity)
        };
        let json = HistoryJson {
            interval_ms: self.interval.as_millis() as u64,
            capacity,
            samples: &samples,
            alerts: self.metrics.monitors().recent_alerts(),
            llm_providers: self
                .metrics
                .llm()
                .breaker_states()
                .into_iter()
                .map(|(provider, state)| ProviderState {
                    provider,
                    state: match state {
                        0 => "closed",
                        1 => "open",
                        _ => "half-open",
                    },
                })
                .collect(),
        };
        serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_never_grows() {
        let mut ring = Ring::new(360);
        let allocated = ring.allocated();
        for i in 0..100_000u32 {
            ring.push(i);
        }
        assert_eq!(ring.len(), 360);
        assert_eq!(ring.allocated(), allocated);
        let items = ring.to_vec();
        assert_eq!(items[0], 100_000 - 360);
        assert_eq!(items[359], 99_999);
    }
}
