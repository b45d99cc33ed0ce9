//! What the scheduler reports: its number of entries and how late they start.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::quantiles::{LogHistogram, Snapshot};

/// Upper bounds of the lag buckets, in seconds: 50 µs to 1 s.
pub const LAG_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The scheduler's side of [`super::Metrics`], recorded by the scheduler.
pub struct SchedulerMetrics {
    pub(super) entries: Gauge,
    pub(super) lag: Histogram,
    window: LogHistogram,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self {
            entries: Gauge::default(),
            lag: Histogram::new(LAG_BUCKETS),
            window: LogHistogram::default(),
        }
    }
}

impl SchedulerMetrics {
    pub fn set_entries(&self, n: usize) {
        self.entries.set(n as i64);
    }

    pub fn record_lag(&self, lag: Duration) {
        self.lag.observe(lag.as_secs_f64());
        self.window.record(lag);
    }

    /// The lag counts so far, for quantiles over a window.
    pub fn lag_snapshot(&self) -> Snapshot {
        self.window.snapshot()
    }
}
