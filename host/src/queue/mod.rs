//! Durable jobs: enqueue, at-least-once delivery to queue-processor components, retries with
//! backoff, delays, dead letters and stalled-job recovery.
//!
//! [`QueueBackend`] is the seam: [`memory::MemoryQueue`] (embedded, bounded, not durable)
//! and [`redis::RedisQueue`] (Streams + consumer groups, production) pass one conformance
//! suite. [`Queues`] is the front the rest of the host uses: it knows the manifest's queues
//! and checks every job against them before a backend sees it. The queue trigger
//! (`triggers::queue`) runs the jobs.

pub mod jobs;
pub mod memory;
pub mod redis;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;

pub use self::jobs::{Finished, JobInfo, JobState};
use self::watch::JobWatch;
use crate::manifest::{Backoff, KeepJobs, QueueTrigger};
use crate::metrics::QueueSource;
pub use crate::metrics::QueueStats;
use crate::scheduler::EntryWaker;
use crate::timers::now_ms;

/// Why a queue operation failed; mapped to the WIT `queue.error` in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("payload too large: {0}")]
    TooLarge(String),
    #[error("queue full: {0}")]
    Full(String),
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
}

/// A job as stored: everything needed to run and retry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub queue: String,
    /// JSON text.
    pub payload: String,
    /// 1-based number of the attempt this delivery is.
    pub attempt: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// When the job was first enqueued, in ms since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// The error of the attempt before this one, when this is a retry.
    pub last_error: Option<String>,
    /// 0 to [`MAX_PRIORITY`], higher first; always 0 on a queue without `priorities`.
    pub priority: u8,
    /// The W3C `traceparent` of the span that enqueued it, with tracing on, so that its
    /// processing joins that trace.
    pub trace_context: Option<String>,
}

/// The highest job priority.
pub const MAX_PRIORITY: u8 = 9;

/// A job handed to a worker, with the backend's handle to acknowledge it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub job: Job,
    /// Opaque to callers: a stream entry id (redis) or a token (memory).
    pub receipt: String,
}

impl Delivery {
    /// The delivery without its payload: what names the job and its attempt (for progress),
    /// without copying a payload of up to `max_payload` per job.
    pub fn handle(&self) -> Delivery {
        Delivery {
            job: Job {
                id: self.job.id.clone(),
                queue: self.job.queue.clone(),
                payload: String::new(),
                attempt: self.job.attempt,
                max_attempts: self.job.max_attempts,
                backoff: self.job.backoff,
                enqueued_at_ms: self.job.enqueued_at_ms,
                last_error: None,
                priority: self.job.priority,
                trace_context: None,
            },
            receipt: self.receipt.clone(),
        }
    }
}

/// A job that ran out of attempts or failed permanently.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadJob {
    pub job: Job,
    pub error: String,
    pub failed_at_ms: u64,
}

/// What enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    New(String),
    /// The dedup key was seen inside its window: the earlier job's id.
    Duplicate(String),
}

impl Enqueued {
    pub fn id(&self) -> &str {
        match self {
            Enqueued::New(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A job ready for a backend: validated, with every default filled in.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job: Job,
    pub delay: Duration,
    pub dedup: Option<(String, Duration)>,
    /// The queue's bound on waiting plus delayed jobs.
    pub max_waiting: u64,
    /// Whether the queue orders its waiting jobs by priority (`priorities`).
    pub prioritized: bool,
}

/// A queue store. Every method is one atomic step as seen by other hosts.
#[async_trait]
pub trait QueueBackend: Send + Sync {
    /// "memory" or "redis", for logs.
    fn name(&self) -> &'static str;

    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError>;

    /// Waits up to `wait` for jobs. `wants` lists (queue, at most how many); the returned
    /// deliveries are in flight until completed, retried, buried, or reclaimed after their
    /// visibility timeout.
    async fn receive(
        &self,
        wants: &[(String, usize)],
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Makes a `receive` that is waiting right now return at once (with what it has, maybe
    /// nothing). The worker calls it when a queue left out of that `receive` (all its slots
    /// were busy) gets a free slot, so that queue is not starved while the reader waits on
    /// idle ones.
    async fn interrupt_receive(&self) -> Result<(), QueueError>;

    /// The queues whose waiting jobs are ordered by priority (`priorities = true`), as of
    /// the manifest now: told at start-up and after every deploy. A backend whose FIFO order
    /// is also its priority order needs nothing.
    fn set_prioritized(&self, _queues: BTreeSet<String>) {}

    /// Makes `queue` ready to receive (a queue added by a deploy); idempotent.
    async fn prepare(&self, _queue: &str) -> Result<(), QueueError> {
        Ok(())
    }

    /// Acknowledges finished jobs (any queues), in one round trip per queue, keeping each
    /// with its result when its queue's `keep_completed` says so.
    async fn complete(&self, done: &[Finished]) -> Result<(), QueueError>;

    /// Takes a failed job back and schedules attempt + 1 at `retry_at_ms`.
    async fn retry(
        &self,
        delivery: &Delivery,
        retry_at_ms: u64,
        error: &str,
    ) -> Result<(), QueueError>;

    /// Moves a job to its queue's dead letters, which keep `keep` (the queue's `keep_failed`).
    async fn bury(
        &self,
        delivery: &Delivery,
        error: &str,
        keep: KeepJobs,
    ) -> Result<(), QueueError>;

    /// Moves delayed jobs that are due to their queues; returns when the next one is due.
    async fn promote_due(&self, queues: &[String], now_ms: u64) -> Result<Option<u64>, QueueError>;

    /// Requeues jobs of `queue` delivered more than `visibility` ago, never finished and not
    /// heartbeated (their host died), as attempt + 1; a job out of attempts is buried under
    /// `keep`. Returns how many were requeued or buried.
    async fn reclaim_stalled(
        &self,
        queue: &str,
        visibility: Duration,
        max: usize,
        keep: KeepJobs,
    ) -> Result<usize, QueueError>;

    /// Tells the backend these deliveries are still being worked on.
    async fn heartbeat(&self, alive: &[Delivery]) -> Result<(), QueueError>;

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError>;

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, QueueError>;

    /// Re-enqueues dead jobs (one by id, or all) with fresh attempts; returns how many.
    async fn retry_dead(&self, queue: &str, id: Option<&str>) -> Result<usize, QueueError>;

    /// Deletes a queue's dead letters; returns how many.
    async fn purge_dead(&self, queue: &str) -> Result<usize, QueueError>;

    /// Job `id` of `queue` as it stands; `None` when it is unknown (never enqueued, or
    /// finished and not kept).
    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>, QueueError>;

    /// Up to `limit` jobs of `queue` in `state`: oldest first for waiting, delayed and failed
    /// (the order they run in), newest first for active, completed and dead.
    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobInfo>, QueueError>;

    /// Removes a waiting, delayed or failed job; returns the state it was in, `None` when
    /// there is no such job. An active or finished job is refused with `Invalid`.
    async fn remove(&self, queue: &str, id: &str) -> Result<Option<JobState>, QueueError>;

    /// Keeps `progress` (JSON, already checked) as the last progress of a job being
    /// processed, and tells its watchers; ignored once the job has finished.
    async fn progress(&self, delivery: &Delivery, progress: &str) -> Result<(), QueueError>;

    /// A ticket that wakes when job `id` of `queue` may have changed, wherever it runs.
    async fn watch(&self, queue: &str, id: &str) -> Result<JobWatch, QueueError>;

    /// Pauses or resumes `queue` for every host sharing the backend (jobs still arrive).
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError>;

    /// The paused queues.
    async fn paused(&self) -> Result<BTreeSet<String>, QueueError>;

    /// Takes one of `limit` leases of `queue` shared by every host, named `token`, for
    /// `ttl` (renewed by [`QueueBackend::renew_leases`]; a dead host's lapse). `None` when
    /// granted; else how long until the earliest lease lapses (try again then at the latest,
    /// or when [`QueueBackend::watch_leases`] wakes).
    async fn acquire_lease(
        &self,
        queue: &str,
        limit: u32,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>, QueueError>;

    /// Gives a lease back and wakes the hosts waiting for one.
    async fn release_lease(&self, queue: &str, token: &str) -> Result<(), QueueError>;

    /// Extends the leases `(queue, token)` held here by `ttl`.
    async fn renew_leases(
        &self,
        leases: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), QueueError>;

    /// Wakes when a lease of `queue` may have been given back.
    async fn watch_leases(&self, queue: &str) -> Result<JobWatch, QueueError>;

    /// The repeat entries added at run time, for every host.
    async fn repeats(&self) -> Result<Vec<RepeatRecord>, QueueError>;

    /// Adds (or keeps) a run-time repeat entry; refused `full` beyond [`MAX_RUNTIME_REPEATS`].
    async fn save_repeat(&self, record: &RepeatRecord) -> Result<(), QueueError>;

    /// Deletes a run-time repeat entry; whether it existed.
    async fn delete_repeat(&self, key: &str) -> Result<bool, QueueError>;
}

/// A repeat entry added at run time (`llmchat enqueue --every`), shared by every host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepeatRecord {
    pub key: String,
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<crate::manifest::HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// JSON text.
    pub payload: String,
}

/// Most repeat entries added at run time, over every queue.
pub const MAX_RUNTIME_REPEATS: usize = 1000;

/// The pseudo job id whose watchers wait for a lease of their queue (not a hex job id).
pub const LEASE_WATCH: &str = "*leases";

/// A new random job id: 128 bits, hex.
pub fn new_job_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// Options of one enqueue call, before defaults.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    pub delay: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub dedup_key: Option<String>,
    /// 0 to [`MAX_PRIORITY`]; only on a queue with `priorities` (0 when none).
    pub priority: Option<u8>,
    /// The enqueuer's W3C `traceparent` (with tracing on), kept with the job.
    pub trace_context: Option<String>,
}

/// The queues of `triggers` with `priorities = true`.
fn prioritized(triggers: &BTreeMap<String, QueueTrigger>) -> BTreeSet<String> {
    triggers
        .values()
        .filter(|t| t.priorities)
        .map(|t| t.queue.clone())
        .collect()
}

/// Longest dedup key accepted.
const MAX_DEDUP_KEY: usize = 256;

/// The queues of the manifest in front of one backend; built once in `main`.
pub struct Queues {
    backend: Arc<dyn QueueBackend>,
    /// Swapped whole when a deploy adds or removes a queue; readers take a snapshot.
    triggers: RwLock<Arc<BTreeMap<String, QueueTrigger>>>,
    /// Pulls the scheduler's promotion entry forward when a job enqueued here is due
    /// earlier than planned; set once the worker has scheduled its maintenance.
    promotion: OnceLock<EntryWaker>,
    /// Bumped by every enqueue, delivery and finish on this host: the dashboard re-reads the
    /// queues' counts only when it moved (or a minute went by), so an idle host stays quiet.
    activity: AtomicU64,
    /// The paused queues as last read from the backend; the reader skips them.
    paused: RwLock<Arc<BTreeSet<String>>>,
    /// Bumped when `paused` changes, so the reader starts its read again without them (a
    /// watch, not a `Notify`: a change while the reader is between two waits is not lost).
    paused_changed: tokio::sync::watch::Sender<u64>,
    /// Wakes the entry that reads the run-time repeat entries again; set by the worker.
    repeats: OnceLock<EntryWaker>,
}

/// What `/metrics` reads at scrape time: every queue's counts, from the backend.
#[async_trait]
impl QueueSource for Queues {
    fn queue_names(&self) -> Vec<String> {
        self.names()
    }

    async fn queue_counts(&self, queue: &str) -> anyhow::Result<QueueStats> {
        Ok(self.backend().stats(queue).await?)
    }
}

impl Queues {
    pub fn new(backend: Arc<dyn QueueBackend>, triggers: &[QueueTrigger]) -> Self {
        let triggers: BTreeMap<String, QueueTrigger> = triggers
            .iter()
            .map(|t| (t.queue.clone(), t.clone()))
            .collect();
        backend.set_prioritized(prioritized(&triggers));
        Self {
            backend,
            triggers: RwLock::new(Arc::new(triggers)),
            promotion: OnceLock::new(),
            activity: AtomicU64::new(0),
            paused: RwLock::default(),
            paused_changed: tokio::sync::watch::Sender::new(0),
            repeats: OnceLock::new(),
        }
    }

    pub(crate) fn wake_repeats_with(&self, waker: EntryWaker) {
        let _ = self.repeats.set(waker);
    }

    /// The run-time repeat entries changed (here, or on another host): read them again.
    pub fn note_repeats_changed(&self) {
        if let Some(waker) = self.repeats.get() {
            waker.wake_at(tokio::time::Instant::now());
        }
    }

    /// Adds a repeat entry to `queue` at run time, checked as a manifest one is; returns it.
    pub async fn add_repeat(
        &self,
        queue: &str,
        every: Option<crate::manifest::HumanDuration>,
        cron: Option<String>,
        payload: String,
    ) -> Result<RepeatRecord, QueueError> {
        let trigger = self.trigger(queue)?;
        let json: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| QueueError::Invalid(format!("payload is not valid JSON: {e}")))?;
        let config = crate::manifest::RepeatConfig {
            every,
            cron: cron.clone(),
            payload: json,
        };
        let repeat =
            crate::manifest::Repeat::from_config(queue, config, trigger.max_payload.bytes())
                .map_err(|e| QueueError::Invalid(format!("{e:#}")))?;
        let record = RepeatRecord {
            key: format!("{}:api", repeat.key),
            queue: queue.to_string(),
            every,
            cron,
            payload: repeat.payload,
        };
        self.backend.save_repeat(&record).await?;
        self.note_repeats_changed();
        Ok(record)
    }

    /// Deletes a run-time repeat entry of `queue`; whether it existed.
    pub async fn remove_repeat(&self, queue: &str, key: &str) -> Result<bool, QueueError> {
        self.trigger(queue)?;
        // A key names its queue (`repeat:QUEUE:HASH:api`, see `add_repeat`).
        let ours = key
            .strip_prefix("repeat:")
            .and_then(|rest| rest.strip_prefix(queue))
            .is_some_and(|rest| rest.starts_with(':'));
        if !ours || !self.backend.delete_repeat(key).await? {
            return Ok(false);
        }
        self.note_repeats_changed();
        Ok(true)
    }

    /// Whether `queue` is paused (as last read: see [`Queues::refresh_paused`]).
    pub fn is_paused(&self, queue: &str) -> bool {
        self.paused
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(queue)
    }

    /// A receiver that sees every change of the set of paused queues.
    pub fn paused_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.paused_changed.subscribe()
    }

    /// Reads the paused queues from the backend: at start-up, after a pause or resume here,
    /// and when another host says it paused or resumed one.
    pub async fn refresh_paused(&self) -> Result<(), QueueError> {
        let paused = self.backend.paused().await?;
        let mut current = self.paused.write().unwrap_or_else(|p| p.into_inner());
        if **current != paused {
            tracing::info!(paused = ?paused, "paused queues changed");
            *current = Arc::new(paused);
            drop(current);
            self.paused_changed.send_modify(|n| *n += 1);
            self.note_activity();
        }
        Ok(())
    }

    /// Pauses (or resumes) `queue` on every host: its jobs wait, running ones finish.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        self.trigger(queue)?;
        self.backend.set_paused(queue, paused).await?;
        self.refresh_paused().await
    }

    pub fn backend(&self) -> &Arc<dyn QueueBackend> {
        &self.backend
    }

    fn snapshot(&self) -> Arc<BTreeMap<String, QueueTrigger>> {
        self.triggers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn trigger(&self, queue: &str) -> Result<QueueTrigger, QueueError> {
        self.snapshot()
            .get(queue)
            .cloned()
            .ok_or_else(|| QueueError::UnknownQueue(queue.to_string()))
    }

    pub fn names(&self) -> Vec<String> {
        self.snapshot().keys().cloned().collect()
    }

    /// Every queue's trigger now, by queue name.
    pub fn triggers(&self) -> Vec<QueueTrigger> {
        self.snapshot().values().cloned().collect()
    }

    /// Replaces the set of queues (a deploy added, changed or removed some). Jobs of a
    /// removed queue stay in the backend; enqueueing to it fails `unknown-queue` from now.
    pub fn set_triggers(&self, triggers: &[QueueTrigger]) {
        let map: BTreeMap<String, QueueTrigger> = triggers
            .iter()
            .map(|t| (t.queue.clone(), t.clone()))
            .collect();
        self.backend.set_prioritized(prioritized(&map));
        *self.triggers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    pub(crate) fn wake_promotion_with(&self, waker: EntryWaker) {
        let _ = self.promotion.set(waker);
    }

    /// Tells the promotion entry that a job enqueued here is due at `due_ms`.
    pub(crate) fn note_local_due(&self, due_ms: u64) {
        if let Some(waker) = self.promotion.get() {
            waker.wake_at(crate::scheduler::instant_of_wall_ms(due_ms));
        }
    }

    /// Counts a change of the queues seen by this host.
    pub(crate) fn note_activity(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// How many changes this host has seen; compare two readings.
    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    /// Validates and enqueues a job; nothing is stored when any check fails.
    pub async fn enqueue(
        &self,
        queue: &str,
        payload: String,
        request: EnqueueRequest,
    ) -> Result<Enqueued, QueueError> {
        let new = self.prepare(queue, payload, request)?;
        let due = (!new.delay.is_zero()).then(|| now_ms() + new.delay.as_millis() as u64);
        let result = self.backend.enqueue(new).await?;
        self.note_activity();
        if let Some(due) = due {
            self.note_local_due(due);
        }
        Ok(result)
    }

    fn prepare(
        &self,
        queue: &str,
        payload: String,
        request: EnqueueRequest,
    ) -> Result<NewJob, QueueError> {
        let trigger = self.trigger(queue)?;
        let limit = trigger.max_payload.bytes();
        if payload.len() as u64 > limit {
            return Err(QueueError::TooLarge(format!(
                "{} bytes, the limit of queue `{queue}` is {limit}",
                payload.len()
            )));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&payload) {
            return Err(QueueError::Invalid(format!(
                "payload is not valid JSON: {e}"
            )));
        }
        let max_attempts = request.max_attempts.unwrap_or(trigger.max_attempts);
        if max_attempts == 0 {
            return Err(QueueError::Invalid(
                "max-attempts must be at least 1".into(),
            ));
        }
        let backoff = match request.backoff {
            Some(b) => b.parse().map_err(QueueError::Invalid)?,
            None => trigger.backoff,
        };
        let dedup = match request.dedup_key {
            Some(k) if k.is_empty() || k.len() > MAX_DEDUP_KEY => {
                return Err(QueueError::Invalid(format!(
                    "dedup-key must be 1 to {MAX_DEDUP_KEY} bytes"
                )));
            }
            Some(k) => Some((k, trigger.dedup_window.0)),
            None => None,
        };
        let priority = match request.priority {
            Some(p) if p > MAX_PRIORITY => {
                return Err(QueueError::Invalid(format!(
                    "priority {p} is out of range: 0 to {MAX_PRIORITY}, higher first"
                )));
            }
            Some(p) if p > 0 && !trigger.priorities => {
                return Err(QueueError::Invalid(format!(
                    "queue `{queue}` does not take priorities: set `priorities = true` on its \
                     [[trigger.queue]]"
                )));
            }
            p => p.unwrap_or(0),
        };
        Ok(NewJob {
            job: Job {
                id: new_job_id(),
                queue: queue.to_string(),
                payload,
                attempt: 1,
                max_attempts,
                backoff,
                enqueued_at_ms: now_ms(),
                last_error: None,
                priority,
                trace_context: request.trace_context,
            },
            delay: request.delay.unwrap_or_default(),
            dedup,
            max_waiting: trigger.max_waiting,
            prioritized: trigger.priorities,
        })
    }
}
