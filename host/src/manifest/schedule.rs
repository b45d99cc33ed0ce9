//! `[[trigger.schedule]]` and `[dashboard]`: when monitor components run, and how much
//! history the dashboard keeps.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::triggers::{Export, TriggerKind, check_declared, component_of};
use super::{ComponentSpec, HumanDuration, check_name};

/// Shortest `every`: the scheduler's lag is well under a millisecond, but a period below
/// this would mostly measure instantiation.
const MIN_EVERY: Duration = Duration::from_millis(10);

/// One `[[trigger.schedule]]` entry, validated.
#[derive(Debug, Clone)]
pub struct ScheduleTrigger {
    /// Unique among schedules; names the tick claim in Redis, the metrics and the log.
    pub name: String,
    pub component: String,
    pub when: When,
    /// Wall-clock limit of one run.
    pub timeout: Duration,
}

/// When a schedule ticks. Ticks are wall-clock instants (UTC), so every host of a cluster
/// computes the same ones, and a tick's time identifies it.
#[derive(Debug, Clone)]
pub enum When {
    /// At every multiple of the period since the Unix epoch.
    Every(Duration),
    /// At every match of a cron expression (5 fields, or 6 with seconds first), in UTC.
    Cron(Box<croner::Cron>, String),
}

impl When {
    /// The `every` or `cron` field of a table (exactly one of them), checked.
    pub fn from_fields(every: Option<HumanDuration>, cron: Option<String>) -> Result<When> {
        Ok(match (every, cron) {
            (Some(_), Some(_)) => bail!("fields `every` and `cron`: give one, not both"),
            (None, None) => {
                bail!(
                    "field `every` or `cron` is required (e.g. every = \"30s\" or cron = \"0 3 * * *\")"
                )
            }
            (Some(every), None) => {
                if every.0 < MIN_EVERY {
                    bail!(
                        "field `every`: {every} is below the minimum of {}",
                        HumanDuration(MIN_EVERY)
                    );
                }
                When::Every(every.0)
            }
            (None, Some(text)) => {
                let cron = parse_cron(&text).map_err(|e| anyhow::anyhow!("field `cron`: {e}"))?;
                When::Cron(Box::new(cron), text)
            }
        })
    }

    /// The first tick strictly after `after_ms` (ms since the epoch), in ms since the epoch.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            When::Every(period) => {
                let p = (period.as_millis() as u64).max(1);
                Some((after_ms / p + 1) * p)
            }
            When::Cron(cron, _) => {
                let after = DateTime::<Utc>::from_timestamp_millis(after_ms as i64)?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Every(p) => write!(f, "every {}", HumanDuration(*p)),
            When::Cron(_, text) => write!(f, "cron {text:?} (UTC)"),
        }
    }
}

/// One `[[trigger.schedule]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTriggerConfig {
    /// Default: the component's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A cron expression: 5 fields, or 6 with seconds first.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(text).map_err(|e| format!("{text:?} is not a cron expression: {e}"))
}

impl TriggerKind for ScheduleTrigger {
    type Config = ScheduleTriggerConfig;
    /// Schedule names.
    type Seen = HashSet<String>;
    const EXPORT: Export = Export::Monitor;

    fn label(config: &ScheduleTriggerConfig) -> String {
        let label = config.name.as_deref().or(config.component.as_deref());
        format!("{:?}", label.unwrap_or_default())
    }

    fn validate(
        config: ScheduleTriggerConfig,
        deployed: Option<&str>,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<ScheduleTrigger> {
        let component = component_of(config.component, deployed)?;
        check_declared(&component, components)?;
        let name = config.name.unwrap_or_else(|| component.clone());
        check_name(&name).map_err(|e| anyhow::anyhow!("field `name`: {e}"))?;
        check_unique(&name, seen)?;
        let when = When::from_fields(config.every, config.cron)?;
        let timeout = config.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        if timeout.is_zero() {
            bail!("field `timeout`: must be greater than zero");
        }
        Ok(ScheduleTrigger {
            name,
            component,
            when,
            timeout,
        })
    }

    /// Its component is declared and no other schedule of `seen` has its name.
    fn check(
        &self,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<()> {
        check_declared(&self.component, components)?;
        check_unique(&self.name, seen)
    }

    fn component(&self) -> &str {
        &self.component
    }

    fn describe(&self) -> String {
        format!("schedule `{}`", self.name)
    }

    fn clash(&self, theirs: &ScheduleTrigger) -> Option<String> {
        (theirs.name == self.name).then(|| {
            format!(
                "schedule `{}` belongs to component `{}`",
                self.name, theirs.component
            )
        })
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "when": self.when.to_string(),
            "timeout": HumanDuration(self.timeout).to_string(),
        })
    }
}

fn check_unique(name: &str, seen: &mut HashSet<String>) -> Result<()> {
    if !seen.insert(name.to_string()) {
        bail!("field `name`: two schedules are named {name:?}; give one a `name` of its own");
    }
    Ok(())
}

/// `[dashboard]`: the bounded in-memory history behind `/dashboard`. Long-term history is
/// Prometheus's job; this is a window of `samples × sample_every` (1 hour by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    #[serde(default = "default_sample_every")]
    pub sample_every: HumanDuration,
    #[serde(default = "default_samples")]
    pub samples: usize,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            sample_every: default_sample_every(),
            samples: default_samples(),
        }
    }
}

fn default_sample_every() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_samples() -> usize {
    360
}

/// Most samples a history may keep: about 1 MB of memory.
const MAX_SAMPLES: usize = 10_000;

impl DashboardSettings {
    pub(super) fn validate(&self) -> Result<()> {
        if self.sample_every.0 < MIN_EVERY {
            bail!(
                "in [dashboard]: field `sample_every`: {} is below the minimum of {}",
                self.sample_every,
                HumanDuration(MIN_EVERY)
            );
        }
        if !(1..=MAX_SAMPLES).contains(&self.samples) {
            bail!(
                "in [dashboard]: field `samples`: {} is outside 1..={MAX_SAMPLES}",
                self.samples
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ticks_at_multiples_of_the_period() {
        let when = When::Every(Duration::from_secs(30));
        assert_eq!(when.next_after(0), Some(30_000));
        assert_eq!(when.next_after(29_999), Some(30_000));
        assert_eq!(when.next_after(30_000), Some(60_000));
    }

    #[test]
    fn a_cron_of_a_day_that_never_comes_never_ticks() {
        let cron = croner::Cron::from_str("0 0 31 2 *").unwrap();
        let when = When::Cron(Box::new(cron), "0 0 31 2 *".into());
        assert_eq!(when.next_after(1_795_694_400_000), None);
    }

    #[test]
    fn cron_ticks_at_its_matches_in_utc() {
        let cron = croner::Cron::from_str("0 3 * * *").unwrap();
        let when = When::Cron(Box::new(cron), "0 3 * * *".into());
        // 2026-11-26T12:00:00Z → next 03:00 is 2026-11-27T03:00:00Z.
        let noon = 1_795_694_400_000;
        let next = when.next_after(noon).unwrap();
        assert_eq!(next - noon, 15 * 3600 * 1000);
        assert_eq!(when.next_after(next), Some(next + 24 * 3600 * 1000));
    }
}
