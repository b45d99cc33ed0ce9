//! A lock-free log-bucket histogram whose quantiles can be read over any window: the
//! dashboard keeps the previous snapshot and reads p50/p99 of what happened since.
//!
//! Prometheus histograms serve scrapers; this one serves the in-process history. Four
//! buckets per octave from 1 µs to about 18 minutes: a quantile is off by at most 19%.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const PER_OCTAVE: f64 = 4.0;
const BUCKETS: usize = 128;

/// Counts of durations per log bucket.
pub struct LogHistogram {
    counts: [AtomicU64; BUCKETS],
}

/// The counts at one moment; subtract two to get a window.
#[derive(Clone)]
pub struct Snapshot {
    counts: [u64; BUCKETS],
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
        }
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * PER_OCTAVE).ceil() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn upper_bound(i: usize) -> Duration {
    Duration::from_secs_f64(2f64.powf(i as f64 / PER_OCTAVE) / 1e6)
}

impl LogHistogram {
    pub fn record(&self, d: Duration) {
        self.counts[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
        }
    }
}

impl Snapshot {
    /// What was recorded between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) as its bucket's upper bound; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_window_are_within_a_bucket() {
        let h = LogHistogram::default();
        for _ in 0..90 {
            h.record(Duration::from_millis(1));
        }
        let before = h.snapshot();
        for _ in 0..99 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(50));
        let window = h.snapshot().since(&before);
        assert_eq!(window.count(), 100);
        let p50 = window.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_micros(100) && p50 < Duration::from_micros(120),
            "{p50:?}"
        );
        let p100 = window.quantile(1.0).unwrap();
        assert!(
            p100 >= Duration::from_millis(50) && p100 < Duration::from_millis(60),
            "{p100:?}"
        );
        assert_eq!(Snapshot::default().quantile(0.5), None);
    }
}
