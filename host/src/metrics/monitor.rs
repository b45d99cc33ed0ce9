//! What monitors report, published: their samples as gauges, their alerts as counters, the
//! log and a short list for the dashboard; and how each schedule's ticks ended. A report
//! comes as a [`MonitorReport`], which the WIT `report` converts into (in `capabilities`).
//!
//! A monitor's labels are its own, so they are checked and capped here: names must be
//! Prometheus label names, a report holds at most [`MAX_SAMPLES_PER_REPORT`] samples, and
//! the host holds at most [`MAX_SERIES`] sample series. A series a monitor stops reporting
//! is removed at its next report, so a gauge never shows a stale value as current.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use crate::timers::now_ms;

pub const MAX_SAMPLES_PER_REPORT: usize = 200;
pub const MAX_ALERTS_PER_REPORT: usize = 20;
/// Sample series held across all monitors.
pub const MAX_SERIES: usize = 5_000;
/// Alerts kept for the dashboard, newest last.
pub const RECENT_ALERTS: usize = 100;
const MAX_MESSAGE: usize = 1_000;
const MAX_LABEL_VALUE: usize = 256;

/// One sample series: `monitor`, `sample`, then the monitor's own labels, sorted.
type SeriesLabels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a monitor reported in one tick.
#[derive(Debug, Clone, Default)]
pub struct MonitorReport {
    pub samples: Vec<MonitorSample>,
    pub alerts: Vec<MonitorAlert>,
}

/// One value a monitor measured, published as `llmchat_monitor_sample`.
#[derive(Debug, Clone)]
pub struct MonitorSample {
    /// A Prometheus label name; it becomes the `sample` label.
    pub name: String,
    /// The monitor's own labels.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// An alert a monitor raised.
#[derive(Debug, Clone)]
pub struct MonitorAlert {
    pub severity: Severity,
    pub message: String,
}

/// How a schedule's tick ended, as the `outcome` label of `llmchat_schedule_ticks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickOutcome {
    /// Ran here and returned a report.
    Ok,
    /// Ran here and failed: an error from the monitor, a trap, its timeout or memory cap.
    Failed,
    /// Not run: the previous run was still going (here or on another host).
    Skipped,
    /// Run by another host of the cluster, which claimed it first.
    Elsewhere,
    /// Not run: the claim could not be made (Redis unreachable), so running it could have
    /// run it twice.
    Unclaimed,
}

impl TickOutcome {
    const ALL: [TickOutcome; 5] = [
        TickOutcome::Ok,
        TickOutcome::Failed,
        TickOutcome::Skipped,
        TickOutcome::Elsewhere,
        TickOutcome::Unclaimed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            TickOutcome::Ok => "ok",
            TickOutcome::Failed => "failed",
            TickOutcome::Skipped => "skipped",
            TickOutcome::Elsewhere => "elsewhere",
            TickOutcome::Unclaimed => "unclaimed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct TickLabels {
    schedule: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct AlertLabels {
    monitor: String,
    severity: &'static str,
}

/// An alert as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentAlert {
    pub t_ms: u64,
    pub monitor: String,
    pub severity: Severity,
    pub message: String,
}

/// The monitors' side of [`super::Metrics`].
pub struct Monitors {
    pub(super) samples: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    pub(super) alerts: Family<AlertLabels, Counter>,
    pub(super) ticks: Family<TickLabels, Counter>,
    /// The series each monitor published in its last report.
    published: Mutex<HashMap<String, HashSet<SeriesLabels>>>,
    recent: Mutex<VecDeque<RecentAlert>>,
}

impl Default for Monitors {
    fn default() -> Self {
        Self {
            samples: Family::default(),
            alerts: Family::default(),
            ticks: Family::default(),
            published: Mutex::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_ALERTS)),
        }
    }
}

impl Monitors {
    /// Makes a schedule's tick counters exist (at 0) from start-up.
    pub fn register_schedule(&self, schedule: &str) {
        for outcome in TickOutcome::ALL {
            self.tick_counter(schedule, outcome);
        }
    }

    pub fn tick(&self, schedule: &str, outcome: TickOutcome) {
        self.tick_counter(schedule, outcome).inc();
    }

    fn tick_counter(&self, schedule: &str, outcome: TickOutcome) -> Counter {
        self.ticks.get_or_create_owned(&TickLabels {
            schedule: schedule.to_string(),
            outcome: outcome.as_str(),
        })
    }

    /// Publishes a monitor's report. Returns what was refused (a bad name, too many
    /// samples), each with its reason, for the caller to log; the rest is published.
    pub fn publish(&self, monitor: &str, report: impl Into<MonitorReport>) -> Vec<String> {
        let report = report.into();
        let mut refused = Vec::new();
        let mut series = HashSet::new();
        for (i, sample) in report.samples.iter().enumerate() {
            if i == MAX_SAMPLES_PER_REPORT {
                refused.push(format!(
                    "{} samples beyond the first {MAX_SAMPLES_PER_REPORT} were dropped",
                    report.samples.len() - MAX_SAMPLES_PER_REPORT
                ));
                break;
            }
            match series_labels(monitor, &sample.name, &sample.labels) {
                Ok(labels) => {
                    if !sample.value.is_finite() {
                        refused.push(format!(
                            "sample `{}`: value {} is not finite",
                            sample.name, sample.value
                        ));
                        continue;
                    }
                    self.samples.get_or_create(&labels).set(sample.value);
                    series.insert(labels);
                }
                Err(reason) => refused.push(format!("sample `{}`: {reason}", sample.name)),
            }
        }
        self.replace_series(monitor, series, &mut refused);
        for (i, alert) in report.alerts.iter().enumerate() {
            if i == MAX_ALERTS_PER_REPORT {
                refused.push(format!(
                    "{} alerts beyond the first {MAX_ALERTS_PER_REPORT} were dropped",
                    report.alerts.len() - MAX_ALERTS_PER_REPORT
                ));
                break;
            }
            self.alert(monitor, alert.severity, &alert.message);
        }
        refused
    }

    /// Removes the series the monitor no longer reports, and the new ones beyond the cap.
    fn replace_series(
        &self,
        monitor: &str,
        mut now: HashSet<SeriesLabels>,
        refused: &mut Vec<String>,
    ) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let before = published.remove(monitor).unwrap_or_default();
        for gone in before.difference(&now) {
            self.samples.remove(gone);
        }
        let held: usize = published.values().map(HashSet::len).sum();
        if held + now.len() > MAX_SERIES {
            let keep = MAX_SERIES.saturating_sub(held);
            let dropped: Vec<SeriesLabels> = now.iter().skip(keep).cloned().collect();
            for labels in &dropped {
                self.samples.remove(labels);
                now.remove(labels);
            }
            refused.push(format!(
                "{} sample series dropped: the host holds at most {MAX_SERIES}",
                dropped.len()
            ));
        }
        published.insert(monitor.to_string(), now);
    }

    /// Raises an alert: counted, logged and kept for the dashboard.
    pub fn alert(&self, monitor: &str, severity: Severity, message: &str) {
        let message = truncate(message, MAX_MESSAGE);
        self.alerts
            .get_or_create(&AlertLabels {
                monitor: monitor.to_string(),
                severity: severity.as_str(),
            })
            .inc();
        match severity {
            Severity::Info => tracing::info!(monitor, "alert: {message}"),
            Severity::Warning => tracing::warn!(monitor, "alert: {message}"),
            Severity::Critical => tracing::error!(monitor, "alert: {message}"),
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_ALERTS {
            recent.pop_front();
        }
        recent.push_back(RecentAlert {
            t_ms: now_ms(),
            monitor: monitor.to_string(),
            severity,
            message,
        });
    }

    /// The latest alerts, oldest first.
    pub fn recent_alerts(&self) -> Vec<RecentAlert> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }
}

/// Checks a sample's name and labels and builds its series' label set.
fn series_labels(
    monitor: &str,
    name: &str,
    labels: &[(String, String)],
) -> Result<SeriesLabels, String> {
    if !is_label_name(name) {
        return Err("the name must match [a-zA-Z_][a-zA-Z0-9_]*".into());
    }
    let mut out: SeriesLabels = Vec::with_capacity(labels.len() + 2);
    out.push(("monitor".into(), monitor.into()));
    out.push(("sample".into(), name.into()));
    let mut own: Vec<(String, String)> = labels.to_vec();
    own.sort();
    for (k, v) in own {
        if !is_label_name(&k) || k.starts_with("__") {
            return Err(format!("label {k:?} is not a label name"));
        }
        if k == "monitor" || k == "sample" || out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("label `{k}` is reserved or repeated"));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(format!(
                "label `{k}`: value longer than {MAX_LABEL_VALUE} bytes"
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> MonitorSample {
        MonitorSample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn bad_samples_are_refused_by_name_and_the_rest_published() {
        let m = Monitors::default();
        let report = MonitorReport {
            samples: vec![
                sample("queue_waiting", &[("queue", "summarize")], 3.0),
                sample("bad name", &[], 1.0),
                sample("x", &[("monitor", "spoof")], 1.0),
                sample("y", &[], f64::NAN),
            ],
            alerts: vec![MonitorAlert {
                severity: Severity::Critical,
                message: "redis down".into(),
            }],
        };
        let refused = m.publish("health", report);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].contains("bad name"), "{refused:?}");
        assert_eq!(m.published.lock().unwrap()["health"].len(), 1);
        let alerts = m.recent_alerts();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].severity, Severity::Critical);
    }

    #[test]
    fn a_series_no_longer_reported_is_removed() {
        let m = Monitors::default();
        let first = MonitorReport {
            samples: vec![sample("a", &[], 1.0), sample("b", &[], 2.0)],
            alerts: vec![],
        };
        m.publish("mon", first);
        let second = MonitorReport {
            samples: vec![sample("a", &[], 5.0)],
            alerts: vec![],
        };
        m.publish("mon", second);
        let held = &m.published.lock().unwrap()["mon"];
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn recent_alerts_are_bounded() {
        let m = Monitors::default();
        for i in 0..(RECENT_ALERTS * 3) {
            m.alert("mon", Severity::Info, &format!("alert {i}"));
        }
        let recent = m.recent_alerts();
        assert_eq!(recent.len(), RECENT_ALERTS);
        assert_eq!(
            recent.last().unwrap().message,
            format!("alert {}", RECENT_ALERTS * 3 - 1)
        );
    }
}
