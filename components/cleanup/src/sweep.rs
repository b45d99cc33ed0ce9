//! The daily sweep: what a schedule tick (`monitoring.run`) and a `{"kind": "sweep"}` job
//! both run.
//!
//! Today it deletes nothing, and that is correct rather than unfinished: every key chat and
//! summarizer write carries a TTL (`history_ttl_seconds`, `summary_ttl_seconds`), so the kv
//! store expires abandoned conversations by itself, and a deleted conversation's keys are
//! removed by its own cleanup job. (kv cannot list keys either, so a sweep could not find
//! strays if there were any.) The sweep is the place for work that TTLs cannot do, should
//! a key without one ever appear; its report already says how much it deleted.

use crate::bindings::{Report, Sample};

pub struct Sweep {
    /// Keys deleted by this sweep.
    pub deleted: u64,
}

/// Sweeps the kv namespace; see the module doc for why there is nothing to delete.
pub fn run() -> Sweep {
    Sweep { deleted: 0 }
}

impl Sweep {
    /// The job's note, for the log.
    pub fn note(&self) -> String {
        match self.deleted {
            0 => "nothing to sweep: kv keys expire by TTL".to_owned(),
            deleted => format!("swept {deleted} keys"),
        }
    }

    /// The tick's report: `cleanup_runs` = 1 (so a dashboard can see the sweep runs at all)
    /// and `cleanup_deleted_keys`; nothing here warrants an alert.
    pub fn report(&self) -> Report {
        Report {
            samples: vec![
                sample("cleanup_runs", 1.0),
                sample("cleanup_deleted_keys", self.deleted as f64),
            ],
            alerts: Vec::new(),
        }
    }
}

fn sample(name: &str, value: f64) -> Sample {
    Sample {
        name: name.to_owned(),
        labels: Vec::new(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_deletes_nothing_and_says_so() {
        let sweep = run();
        assert_eq!(sweep.deleted, 0);
        assert_eq!(sweep.note(), "nothing to sweep: kv keys expire by TTL");
    }

    #[test]
    fn the_report_counts_the_run_without_alerts() {
        let report = Sweep { deleted: 3 }.report();
        let samples: Vec<_> = report
            .samples
            .iter()
            .map(|sample| (sample.name.as_str(), sample.labels.len(), sample.value))
            .collect();
        assert_eq!(
            samples,
            [("cleanup_runs", 0, 1.0), ("cleanup_deleted_keys", 0, 3.0)]
        );
        assert!(report.alerts.is_empty());
    }
}
