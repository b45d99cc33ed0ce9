//! A monitor of the host's backends: each tick it asks the host's probes how Redis, the
//! queues and the llm provider are doing, and reports what it finds.
//!
//! Samples (published by the host as `llmchat_monitor_sample{monitor, sample, ...}`):
//! - `redis_up` (1 or 0) and `redis_latency_ms` (the PING round trip);
//! - per queue, labelled `queue` = its name: `queue_waiting`, `queue_in_flight`,
//!   `queue_delayed` and `queue_dead`;
//! - `llm_up` (1 or 0) and `llm_latency_ms`.
//!
//! Alerts: `critical` when a backend is unavailable or a measurement is above its critical
//! threshold, `warning` when above its warn threshold. A backend the host does not have
//! (no Redis configured) is left out. Modules: [`thresholds`] reads the config, [`checks`]
//! turns the probes' answers into samples and alerts.

mod bindings;
mod checks;
mod thresholds;

use bindings::{Guest, Report, Tick, probe};

struct Health;

impl Guest for Health {
    fn run(_tick: Tick) -> Result<Report, String> {
        // Read the config first: a bad threshold fails the tick before any probe is asked.
        let thresholds = thresholds::load()?;
        let mut report = Report {
            samples: Vec::new(),
            alerts: Vec::new(),
        };
        checks::redis(&mut report, probe::redis_latency(), &thresholds);
        checks::queues(&mut report, probe::queues(), &thresholds);
        checks::llm(&mut report, probe::llm_latency(), &thresholds);
        Ok(report)
    }
}

bindings::export!(Health with_types_in bindings);
