//! What the probes answered, as samples and alerts. Pure (the probe results come in as
//! arguments), so every threshold is unit-tested natively.
//!
//! For each probe:
//! - an answer adds its samples, `*_up` = 1 where there is one, and at most one alert per
//!   measurement: `critical` when it is above its critical threshold, otherwise `warning`
//!   when it is above its warn threshold, never both;
//! - `unavailable` sets `*_up` = 0 and raises a `critical` alert naming what is down and
//!   the host's reason;
//! - `not-configured` adds nothing: a host without Redis has no Redis to be down, and a
//!   sample or alert about it would only be noise.

use crate::bindings::probe::{ProbeError, QueueBacklog};
use crate::bindings::{Alert, Report, Sample, Severity};
use crate::thresholds::Thresholds;

/// `redis_up` and `redis_latency_ms`; alerts on the latency.
pub fn redis(report: &mut Report, latency_us: Result<u64, ProbeError>, thresholds: &Thresholds) {
    let Some(latency_us) = answered(report, "redis", Some("redis_up"), latency_us) else {
        return;
    };
    let ms = millis(latency_us);
    report
        .samples
        .push(sample("redis_latency_ms", Vec::new(), ms));
    let crossed = crossed(
        ms,
        thresholds.redis_latency_warn_ms,
        Some(thresholds.redis_latency_critical_ms),
    );
    if let Some((severity, threshold)) = crossed {
        let level = level(severity);
        alert(
            report,
            severity,
            format!("redis latency: {ms} ms ({level} above {threshold} ms)"),
        );
    }
}

/// `queue_waiting`, `queue_in_flight`, `queue_delayed` and `queue_dead` per queue (label
/// `queue`); alerts on the waiting and the dead jobs.
pub fn queues(
    report: &mut Report,
    backlogs: Result<Vec<QueueBacklog>, ProbeError>,
    thresholds: &Thresholds,
) {
    let Some(backlogs) = answered(report, "the queue backend", None, backlogs) else {
        return;
    };
    for backlog in backlogs {
        let labels = vec![("queue".to_owned(), backlog.queue.clone())];
        for (name, value) in [
            ("queue_waiting", backlog.waiting),
            ("queue_in_flight", backlog.in_flight),
            ("queue_delayed", backlog.delayed),
            ("queue_dead", backlog.dead),
        ] {
            report
                .samples
                .push(sample(name, labels.clone(), value as f64));
        }
        let queue = &backlog.queue;
        let waiting = backlog.waiting;
        let crossed = crossed(
            waiting,
            thresholds.backlog_warn,
            Some(thresholds.backlog_critical),
        );
        if let Some((severity, threshold)) = crossed {
            let level = level(severity);
            alert(
                report,
                severity,
                format!("queue `{queue}`: {waiting} waiting jobs ({level} above {threshold})"),
            );
        }
        // "At or above", unlike the others: with the default of 1, a single dead job is
        // worth a look, and 0 is free to mean "off".
        let dead = backlog.dead;
        let dead_warn = thresholds.dead_warn;
        if dead_warn > 0 && dead >= dead_warn {
            alert(
                report,
                Severity::Warning,
                format!("queue `{queue}`: {dead} dead jobs (warning at {dead_warn} or more)"),
            );
        }
    }
}

/// `llm_up` and `llm_latency_ms`; warns on the latency (a slow provider is not an outage).
pub fn llm(report: &mut Report, latency_us: Result<u64, ProbeError>, thresholds: &Thresholds) {
    let Some(latency_us) = answered(report, "the llm provider", Some("llm_up"), latency_us) else {
        return;
    };
    let ms = millis(latency_us);
    report
        .samples
        .push(sample("llm_latency_ms", Vec::new(), ms));
    if let Some((_, threshold)) = crossed(ms, thresholds.llm_latency_warn_ms, None) {
        alert(
            report,
            Severity::Warning,
            format!("llm latency: {ms} ms (warning above {threshold} ms)"),
        );
    }
}

/// The probe's answer, after recording `up` (when the probe has such a sample) and, when
/// `what` is unavailable, the critical alert; none when there is nothing to measure.
fn answered<T>(
    report: &mut Report,
    what: &str,
    up: Option<&str>,
    result: Result<T, ProbeError>,
) -> Option<T> {
    let (value, is_up) = match result {
        Ok(value) => (Some(value), true),
        Err(ProbeError::NotConfigured(_)) => return None,
        Err(ProbeError::Unavailable(reason)) => {
            alert(
                report,
                Severity::Critical,
                format!("{what} is down: {reason}"),
            );
            (None, false)
        }
    };
    if let Some(up) = up {
        let value = if is_up { 1.0 } else { 0.0 };
        report.samples.push(sample(up, Vec::new(), value));
    }
    value
}

/// The severity `value` deserves and the threshold it is above: critical when above
/// `critical`, otherwise warning when above `warn`.
fn crossed<T: PartialOrd + Copy>(value: T, warn: T, critical: Option<T>) -> Option<(Severity, T)> {
    if let Some(critical) = critical
        && value > critical
    {
        return Some((Severity::Critical, critical));
    }
    (value > warn).then_some((Severity::Warning, warn))
}

/// Microseconds, as the probes measure, in milliseconds, as the samples and thresholds are.
fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn sample(name: &str, labels: Vec<(String, String)>, value: f64) -> Sample {
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

fn alert(report: &mut Report, severity: Severity, message: String) {
    report.alerts.push(Alert { severity, message });
}

/// How a message names the severity.
fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Report {
        Report {
            samples: Vec::new(),
            alerts: Vec::new(),
        }
    }

    /// A sample as `(name, labels, value)`, for comparing.
    type Flat<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

    /// Every sample, in order.
    fn samples(report: &Report) -> Vec<Flat<'_>> {
        report
            .samples
            .iter()
            .map(|sample| {
                let labels = sample
                    .labels
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                (sample.name.as_str(), labels, sample.value)
            })
            .collect()
    }

    fn alerts(report: &Report) -> Vec<(Severity, &str)> {
        report
            .alerts
            .iter()
            .map(|alert| (alert.severity, alert.message.as_str()))
            .collect()
    }

    fn redis_report(result: Result<u64, ProbeError>, thresholds: &Thresholds) -> Report {
        let mut report = empty();
        redis(&mut report, result, thresholds);
        report
    }

    fn queue_report(backlogs: Vec<QueueBacklog>, thresholds: &Thresholds) -> Report {
        let mut report = empty();
        queues(&mut report, Ok(backlogs), thresholds);
        report
    }

    fn llm_report(result: Result<u64, ProbeError>, thresholds: &Thresholds) -> Report {
        let mut report = empty();
        llm(&mut report, result, thresholds);
        report
    }

    fn backlog(queue: &str, waiting: u64, dead: u64) -> QueueBacklog {
        QueueBacklog {
            queue: queue.to_owned(),
            waiting,
            in_flight: 2,
            delayed: 3,
            dead,
        }
    }

    fn down(reason: &str) -> ProbeError {
        ProbeError::Unavailable(reason.to_owned())
    }

    fn not_configured() -> ProbeError {
        ProbeError::NotConfigured("no redis".to_owned())
    }

    #[test]
    fn a_fast_redis_is_up_without_alerts() {
        let report = redis_report(Ok(1500), &Thresholds::default());
        assert_eq!(
            samples(&report),
            [("redis_up", vec![], 1.0), ("redis_latency_ms", vec![], 1.5)]
        );
        assert!(report.alerts.is_empty());
        // At the threshold is not above it.
        assert!(
            redis_report(Ok(50_000), &Thresholds::default())
                .alerts
                .is_empty()
        );
    }

    #[test]
    fn a_slow_redis_raises_one_alert_of_the_worst_severity() {
        let thresholds = Thresholds::default();
        assert_eq!(
            alerts(&redis_report(Ok(50_001), &thresholds)),
            [(
                Severity::Warning,
                "redis latency: 50.001 ms (warning above 50 ms)"
            )]
        );
        assert_eq!(
            alerts(&redis_report(Ok(620_500), &thresholds)),
            [(
                Severity::Critical,
                "redis latency: 620.5 ms (critical above 500 ms)"
            )]
        );
        let custom = Thresholds {
            redis_latency_warn_ms: 0.5,
            redis_latency_critical_ms: 2.0,
            ..Thresholds::default()
        };
        assert_eq!(
            alerts(&redis_report(Ok(1000), &custom)),
            [(
                Severity::Warning,
                "redis latency: 1 ms (warning above 0.5 ms)"
            )]
        );
    }

    #[test]
    fn an_unavailable_redis_is_down_and_critical() {
        let report = redis_report(Err(down("connection refused")), &Thresholds::default());
        assert_eq!(samples(&report), [("redis_up", vec![], 0.0)]);
        assert_eq!(
            alerts(&report),
            [(Severity::Critical, "redis is down: connection refused")]
        );
    }

    #[test]
    fn probes_without_a_backend_add_nothing() {
        let thresholds = Thresholds::default();
        let mut report = empty();
        redis(&mut report, Err(not_configured()), &thresholds);
        queues(&mut report, Err(not_configured()), &thresholds);
        llm(&mut report, Err(not_configured()), &thresholds);
        assert!(report.samples.is_empty());
        assert!(report.alerts.is_empty());
    }

    #[test]
    fn every_queue_gets_its_four_samples() {
        let report = queue_report(
            vec![backlog("summarize", 5, 0), backlog("titles", 0, 0)],
            &Thresholds::default(),
        );
        let summarize = vec![("queue", "summarize")];
        let titles = vec![("queue", "titles")];
        assert_eq!(
            samples(&report),
            [
                ("queue_waiting", summarize.clone(), 5.0),
                ("queue_in_flight", summarize.clone(), 2.0),
                ("queue_delayed", summarize.clone(), 3.0),
                ("queue_dead", summarize, 0.0),
                ("queue_waiting", titles.clone(), 0.0),
                ("queue_in_flight", titles.clone(), 2.0),
                ("queue_delayed", titles.clone(), 3.0),
                ("queue_dead", titles, 0.0),
            ]
        );
        assert!(report.alerts.is_empty());
    }

    #[test]
    fn a_backlog_raises_one_alert_of_the_worst_severity() {
        let thresholds = Thresholds::default();
        assert!(
            queue_report(vec![backlog("summarize", 1000, 0)], &thresholds)
                .alerts
                .is_empty()
        );
        assert_eq!(
            alerts(&queue_report(
                vec![backlog("summarize", 1200, 0)],
                &thresholds
            )),
            [(
                Severity::Warning,
                "queue `summarize`: 1200 waiting jobs (warning above 1000)"
            )]
        );
        assert_eq!(
            alerts(&queue_report(
                vec![backlog("titles", 10_001, 0)],
                &thresholds
            )),
            [(
                Severity::Critical,
                "queue `titles`: 10001 waiting jobs (critical above 10000)"
            )]
        );
    }

    #[test]
    fn dead_jobs_warn_from_the_threshold_unless_disabled() {
        let defaults = Thresholds::default();
        assert_eq!(
            alerts(&queue_report(vec![backlog("cleanup", 0, 1)], &defaults)),
            [(
                Severity::Warning,
                "queue `cleanup`: 1 dead jobs (warning at 1 or more)"
            )]
        );
        let three = Thresholds {
            dead_warn: 3,
            ..Thresholds::default()
        };
        assert!(
            queue_report(vec![backlog("cleanup", 0, 2)], &three)
                .alerts
                .is_empty()
        );
        let off = Thresholds {
            dead_warn: 0,
            ..Thresholds::default()
        };
        assert!(
            queue_report(vec![backlog("cleanup", 0, 500)], &off)
                .alerts
                .is_empty()
        );
    }

    #[test]
    fn an_unavailable_queue_backend_is_critical() {
        let mut report = empty();
        queues(&mut report, Err(down("READONLY")), &Thresholds::default());
        assert!(report.samples.is_empty());
        assert_eq!(
            alerts(&report),
            [(Severity::Critical, "the queue backend is down: READONLY")]
        );
    }

    #[test]
    fn a_slow_llm_provider_only_warns() {
        let thresholds = Thresholds::default();
        let fast = llm_report(Ok(2_000_000), &thresholds);
        assert_eq!(
            samples(&fast),
            [("llm_up", vec![], 1.0), ("llm_latency_ms", vec![], 2000.0)]
        );
        assert!(fast.alerts.is_empty());
        assert_eq!(
            alerts(&llm_report(Ok(60_000_000), &thresholds)),
            [(
                Severity::Warning,
                "llm latency: 60000 ms (warning above 2000 ms)"
            )]
        );
    }

    #[test]
    fn an_unavailable_llm_provider_is_down_and_critical() {
        let report = llm_report(Err(down("status 401")), &Thresholds::default());
        assert_eq!(samples(&report), [("llm_up", vec![], 0.0)]);
        assert_eq!(
            alerts(&report),
            [(Severity::Critical, "the llm provider is down: status 401")]
        );
    }
}
