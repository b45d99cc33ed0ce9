//! `[[trigger.queue]]`: a queue and the component that processes its jobs.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{Export, TriggerKind, as_text, check_declared, component_of};
use crate::manifest::{Backoff, ByteSize, ComponentSpec, HumanDuration, Rate, When, check_name};

/// Most jobs of one queue a host processes at once.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// One `[[trigger.queue]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTriggerConfig {
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_text"
    )]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window: Option<HumanDuration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_text"
    )]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_completed: Option<KeepJobs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<KeepJobs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeat: Vec<RepeatConfig>,
}

/// One `repeat = [{ every = "5m", payload = {...} }]` entry as written (or `cron`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    pub payload: serde_json::Value,
}

/// A job enqueued at every tick of `when`, once across every host sharing the Redis.
#[derive(Debug, Clone)]
pub struct Repeat {
    pub when: When,
    /// JSON text.
    pub payload: String,
    /// Names the tick claim and the dedup key: the queue, and a hash of `when` and the
    /// payload, so a deploy that keeps an entry keeps its claims.
    pub key: String,
}

/// Most `repeat` entries of one queue.
pub const MAX_REPEATS: usize = 64;

impl Repeat {
    /// One entry, checked: a schedule that ticks, a payload within `max_payload`.
    pub fn from_config(queue: &str, config: RepeatConfig, max_payload: u64) -> Result<Repeat> {
        let when = When::from_fields(config.every, config.cron)?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if when.next_after(now_ms).is_none() {
            bail!("{when} never ticks");
        }
        let payload = serde_json::to_string(&config.payload)?;
        if payload.len() as u64 > max_payload {
            bail!(
                "field `payload`: {} bytes, above the queue's max_payload of {max_payload}",
                payload.len()
            );
        }
        // FNV-1a: stable across builds and hosts, unlike std's hasher.
        let hash = format!("{when}|{payload}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Ok(Repeat {
            when,
            payload,
            key: format!("repeat:{queue}:{hash:016x}"),
        })
    }
}

/// How many finished jobs a queue keeps, and for how long: `{ count = 1000, age = "1h" }`.
/// A job is dropped when either bound is passed (the oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepJobs {
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<HumanDuration>,
}

/// Most finished jobs a queue may keep per kind: the records are Redis memory.
pub const MAX_KEEP: u64 = 1_000_000;

impl KeepJobs {
    /// Keeps nothing: completed jobs are deleted when acknowledged (the default).
    pub const NONE: KeepJobs = KeepJobs {
        count: 0,
        age: None,
    };

    /// The age bound in ms, if any.
    pub fn age_ms(&self) -> Option<u64> {
        self.age.map(|a| a.0.as_millis() as u64)
    }

    /// Whether anything is kept at all.
    pub fn keeps(&self) -> bool {
        self.count > 0 && self.age.is_none_or(|a| !a.0.is_zero())
    }
}

/// A queue and the component that processes its jobs, checked. It also reads from TOML with
/// the manifest's defaults, for tests that need one without a manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTrigger {
    pub queue: String,
    pub component: String,
    /// Jobs of this queue processed at once by this host.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: u32,
    /// Attempts before a job is dead-lettered (a job may ask for another number).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "defaults::backoff")]
    pub backoff: Backoff,
    /// Wall-clock limit of one attempt.
    #[serde(default = "defaults::job_timeout")]
    pub timeout: HumanDuration,
    /// How long a delivered job may go without a sign of life (its host died) before it is
    /// given to another host.
    #[serde(default = "defaults::visibility")]
    pub visibility: HumanDuration,
    /// Largest payload accepted at enqueue.
    #[serde(default = "defaults::max_payload")]
    pub max_payload: ByteSize,
    /// Most waiting plus delayed jobs the queue holds; enqueue beyond it fails `full`.
    #[serde(default = "defaults::max_waiting")]
    pub max_waiting: u64,
    /// How long a dedup key keeps a second job with the same key out.
    #[serde(default = "defaults::dedup_window")]
    pub dedup_window: HumanDuration,
    /// Jobs started per period across every host on the same Redis, e.g. `"50/s"`; a job
    /// over the rate waits in its slot (it is not failed).
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Jobs of this queue running at once across every host sharing the backend; a job
    /// over it waits in its slot for a lease (it is not failed).
    #[serde(default)]
    pub global_concurrency: Option<u32>,
    /// Whether jobs carry a priority (0 to 9, higher first, FIFO within one). Off by
    /// default: a queue with priorities keeps its waiting jobs ordered (on Redis a sorted set
    /// that a read releases from), which costs each job a little more than a plain FIFO.
    #[serde(default)]
    pub priorities: bool,
    /// Completed jobs kept with their result, for `llmchat job` and the queue page; none
    /// by default, so the default costs nothing.
    #[serde(default = "defaults::keep_completed")]
    pub keep_completed: KeepJobs,
    /// Dead letters kept (jobs out of attempts or failed for good): the newest 10,000 by
    /// default, with no age limit.
    #[serde(default = "defaults::keep_failed")]
    pub keep_failed: KeepJobs,
    /// Jobs enqueued on a schedule (`repeat = [...]`).
    #[serde(skip)]
    pub repeat: Vec<Repeat>,
}

impl QueueTriggerConfig {
    /// The queue `queue`, nothing else set.
    pub fn queue(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            ..Default::default()
        }
    }
}

impl TriggerKind for QueueTrigger {
    type Config = QueueTriggerConfig;
    /// Queue names.
    type Seen = HashSet<String>;
    const EXPORT: Export = Export::Processor;

    fn label(config: &QueueTriggerConfig) -> String {
        format!("queue {:?}", config.queue)
    }

    fn validate(
        config: QueueTriggerConfig,
        deployed: Option<&str>,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<QueueTrigger> {
        let trigger = QueueTrigger {
            component: component_of(config.component, deployed)?,
            queue: config.queue,
            concurrency: config.concurrency.unwrap_or_else(defaults::concurrency),
            max_attempts: config.max_attempts.unwrap_or_else(defaults::max_attempts),
            backoff: config.backoff.unwrap_or_else(defaults::backoff),
            timeout: config.timeout.unwrap_or_else(defaults::job_timeout),
            visibility: config.visibility.unwrap_or_else(defaults::visibility),
            max_payload: config.max_payload.unwrap_or_else(defaults::max_payload),
            max_waiting: config.max_waiting.unwrap_or_else(defaults::max_waiting),
            dedup_window: config.dedup_window.unwrap_or_else(defaults::dedup_window),
            rate: config.rate,
            global_concurrency: config.global_concurrency,
            priorities: config.priorities.unwrap_or(false),
            keep_completed: config
                .keep_completed
                .unwrap_or_else(defaults::keep_completed),
            keep_failed: config.keep_failed.unwrap_or_else(defaults::keep_failed),
            repeat: Vec::new(),
        };
        if config.repeat.len() > MAX_REPEATS {
            bail!(
                "field `repeat`: {} entries, the most is {MAX_REPEATS}",
                config.repeat.len()
            );
        }
        let mut trigger = trigger;
        let max_payload = trigger.max_payload.bytes();
        for (i, entry) in config.repeat.into_iter().enumerate() {
            let repeat = Repeat::from_config(&trigger.queue, entry, max_payload)
                .map_err(|e| anyhow::anyhow!("field `repeat` entry {}: {e:#}", i + 1))?;
            if trigger.repeat.iter().any(|r| r.key == repeat.key) {
                bail!(
                    "field `repeat` entry {}: the same schedule and payload twice",
                    i + 1
                );
            }
            trigger.repeat.push(repeat);
        }
        trigger.check(components, seen)?;
        Ok(trigger)
    }

    /// Every rule of a queue trigger: a simple name no other trigger of `seen` has, a
    /// declared component, and limits in range.
    fn check(
        &self,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<()> {
        let t = self;
        check_name(&t.queue).map_err(|e| anyhow::anyhow!("field `queue`: {e}"))?;
        if !seen.insert(t.queue.clone()) {
            bail!(
                "field `queue`: {:?} has two triggers; one component processes a queue",
                t.queue
            );
        }
        check_declared(&t.component, components)?;
        if !(1..=MAX_CONCURRENCY).contains(&t.concurrency) {
            bail!(
                "field `concurrency`: {} is outside 1..={MAX_CONCURRENCY}",
                t.concurrency
            );
        }
        if !(1..=1_000).contains(&t.max_attempts) {
            bail!(
                "field `max_attempts`: {} is outside 1..=1000",
                t.max_attempts
            );
        }
        if t.timeout.0.is_zero() {
            bail!("field `timeout`: must be greater than zero");
        }
        if t.visibility.0 < Duration::from_secs(1) {
            bail!(
                "field `visibility`: {} is below the minimum of 1s",
                t.visibility
            );
        }
        if let Some(n) = t.global_concurrency
            && !(1..=MAX_CONCURRENCY).contains(&n)
        {
            bail!("field `global_concurrency`: {n} is outside 1..={MAX_CONCURRENCY}");
        }
        if t.max_payload.bytes() == 0 || t.max_waiting == 0 {
            bail!("fields `max_payload` and `max_waiting` must be greater than zero");
        }
        for (field, keep) in [
            ("keep_completed", t.keep_completed),
            ("keep_failed", t.keep_failed),
        ] {
            if keep.count > MAX_KEEP {
                bail!(
                    "field `{field}`: count {} is above the maximum of {MAX_KEEP}",
                    keep.count
                );
            }
            if keep.age.is_some_and(|a| a.0.is_zero()) {
                bail!(
                    "field `{field}`: age must be greater than zero (leave it out for no age limit)"
                );
            }
        }
        if t.keep_failed.count == 0 {
            bail!(
                "field `keep_failed`: count must be at least 1: dead letters are how failures are found"
            );
        }
        Ok(())
    }

    fn component(&self) -> &str {
        &self.component
    }

    fn describe(&self) -> String {
        format!("queue {:?}", self.queue)
    }

    fn clash(&self, theirs: &QueueTrigger) -> Option<String> {
        (theirs.queue == self.queue).then(|| {
            format!(
                "queue `{}` is processed by component `{}`",
                self.queue, theirs.component
            )
        })
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "queue": self.queue, "concurrency": self.concurrency })
    }
}

mod defaults {
    use super::{Backoff, ByteSize, HumanDuration, KeepJobs};
    use std::time::Duration;

    pub fn concurrency() -> u32 {
        5
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn backoff() -> Backoff {
        Backoff::Exponential {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
    pub fn job_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn visibility() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn max_payload() -> ByteSize {
        ByteSize(256 << 10)
    }
    pub fn max_waiting() -> u64 {
        100_000
    }
    pub fn keep_completed() -> KeepJobs {
        KeepJobs::NONE
    }
    pub fn keep_failed() -> KeepJobs {
        KeepJobs {
            count: 10_000,
            age: None,
        }
    }
    pub fn dedup_window() -> HumanDuration {
        HumanDuration(Duration::from_secs(3600))
    }
}
