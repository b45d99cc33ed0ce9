//! `repeat = [...]` of a `[[trigger.queue]]`, and the entries added at run time
//! (`llmchat enqueue --every`, kept by the queue backend for every host): jobs enqueued on a
//! schedule (`every` or `cron`, UTC), each tick once across every host sharing the Redis.
//!
//! Run-time entries are read again when one is added or removed (here, or on another host:
//! the control channel says so), after a reconnect, and every [`RESYNC`] as a safety net.
//!
//! Each entry is one entry of the host's scheduler, like a `[[trigger.schedule]]`, and wins
//! its tick through the same claim (`TickClaims`, named by the entry's key): one host
//! enqueues, the others see `Taken`. The job also carries the dedup key `KEY:TICK`, so
//! even a claim that could not be read twice cannot enqueue a tick twice within the queue's
//! dedup window. Ticks missed while no host ran are not made up for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::manifest::{QueueTrigger, Repeat};
use crate::queue::{EnqueueRequest, Queues};
use crate::scheduler::{EntryWaker, SchedulerHandle, instant_of_wall_ms as instant_of};
use crate::timers::now_ms;
use crate::triggers::schedule::{Claim, TickClaims};

/// How long a tick's claim is held: an enqueue is one Redis round trip.
const LEASE: Duration = Duration::from_secs(10);
/// How often the run-time entries are read again when nothing said they changed.
const RESYNC: Duration = Duration::from_secs(600);

/// One repeat entry and its state between ticks.
struct Entry {
    queue: String,
    repeat: Repeat,
    next_tick_ms: AtomicU64,
    /// Set when a deploy removed the entry: it leaves the scheduler.
    retired: AtomicBool,
    waker: OnceLock<EntryWaker>,
}

impl Entry {
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Some(waker) = self.waker.get() {
            waker.wake_at(tokio::time::Instant::now());
        }
    }
}

/// Every repeat entry of every queue of the host; changed by deploys with the queues.
pub struct Repeats {
    current: Mutex<BTreeMap<String, Arc<Entry>>>,
    /// The manifest's entries and the run-time ones, by key: what should tick.
    wanted: Mutex<Wanted>,
    queues: Arc<Queues>,
    claims: Arc<dyn TickClaims>,
    scheduler: SchedulerHandle,
}

#[derive(Default)]
struct Wanted {
    manifest: BTreeMap<String, (String, Repeat)>,
    runtime: BTreeMap<String, (String, Repeat)>,
    /// The queues of the manifest: a run-time entry of another queue waits for it.
    queues: std::collections::BTreeSet<String>,
}

impl Repeats {
    pub fn new(
        queues: Arc<Queues>,
        claims: Arc<dyn TickClaims>,
        scheduler: SchedulerHandle,
    ) -> Self {
        Self {
            current: Mutex::default(),
            wanted: Mutex::default(),
            queues,
            claims,
            scheduler,
        }
    }

    /// Adds the entry that reads the run-time repeat entries: at once, when woken (see
    /// `Queues::note_repeats_changed`), and every [`RESYNC`].
    pub fn schedule_refresh(self: &Arc<Self>) {
        let repeats = self.clone();
        let waker = self.scheduler.add(
            "repeat refresh",
            tokio::time::Instant::now(),
            Box::new(move |_due| {
                let repeats = repeats.clone();
                Box::pin(async move {
                    repeats.refresh().await;
                    Some(tokio::time::Instant::now() + RESYNC)
                })
            }),
        );
        self.queues.wake_repeats_with(waker);
    }

    async fn refresh(&self) {
        let records = match self.queues.backend().repeats().await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!("reading the run-time repeat entries failed: {e}");
                return;
            }
        };
        let mut runtime = BTreeMap::new();
        for record in records {
            let Ok(trigger) = self.queues.trigger(&record.queue) else {
                continue;
            };
            let config = crate::manifest::RepeatConfig {
                every: record.every,
                cron: record.cron.clone(),
                payload: serde_json::from_str(&record.payload).unwrap_or_default(),
            };
            match Repeat::from_config(&record.queue, config, trigger.max_payload.bytes()) {
                Ok(mut repeat) => {
                    repeat.key = record.key.clone();
                    runtime.insert(record.key, (record.queue, repeat));
                }
                Err(e) => {
                    tracing::warn!(key = %record.key, "skipping a run-time repeat entry: {e:#}")
                }
            }
        }
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .runtime = runtime;
        self.reconcile();
    }

    /// Makes the repeat entries of `triggers` the ones that tick: an entry kept by a deploy
    /// (same queue, schedule and payload) keeps its entry; the others leave or start.
    pub fn apply(&self, triggers: &[QueueTrigger]) {
        {
            let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            wanted.manifest = triggers
                .iter()
                .flat_map(|t| {
                    t.repeat
                        .iter()
                        .map(|r| (r.key.clone(), (t.queue.clone(), r.clone())))
                })
                .collect();
            wanted.queues = triggers.iter().map(|t| t.queue.clone()).collect();
        }
        self.reconcile();
    }

    /// Starts the wanted entries not ticking yet and retires the ones no longer wanted.
    fn reconcile(&self) {
        let wanted: Vec<(String, String, Repeat)> = {
            let wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            wanted
                .manifest
                .iter()
                .chain(
                    wanted
                        .runtime
                        .iter()
                        .filter(|(_, (q, _))| wanted.queues.contains(q)),
                )
                .map(|(key, (queue, repeat))| (key.clone(), queue.clone(), repeat.clone()))
                .collect()
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for (key, queue, repeat) in wanted {
            let entry = match current.remove(&key) {
                Some(kept) => kept,
                None => self.start(&queue, repeat),
            };
            next.insert(key, entry);
        }
        for (_, gone) in std::mem::take(&mut *current) {
            gone.retire();
        }
        *current = next;
    }

    fn start(&self, queue: &str, repeat: Repeat) -> Arc<Entry> {
        let first = repeat.when.next_after(now_ms()).unwrap_or(u64::MAX);
        tracing::info!(queue, key = %repeat.key, "enqueueing {} {}", repeat.payload, repeat.when);
        let entry = Arc::new(Entry {
            queue: queue.to_string(),
            repeat,
            next_tick_ms: AtomicU64::new(first),
            retired: AtomicBool::new(false),
            waker: OnceLock::new(),
        });
        let (ticking, queues, claims) = (entry.clone(), self.queues.clone(), self.claims.clone());
        let waker = self.scheduler.add(
            format!("repeat {}", entry.repeat.key),
            instant_of(first),
            Box::new(move |_due| Box::pin(tick(ticking.clone(), queues.clone(), claims.clone()))),
        );
        let _ = entry.waker.set(waker);
        entry
    }
}

/// A due tick: claim it and enqueue the job. Returns when the next tick is due.
async fn tick(
    entry: Arc<Entry>,
    queues: Arc<Queues>,
    claims: Arc<dyn TickClaims>,
) -> Option<tokio::time::Instant> {
    if entry.retired.load(Ordering::Acquire) {
        return None;
    }
    let tick_ms = entry.next_tick_ms.load(Ordering::Relaxed);
    let next_ms = entry.repeat.when.next_after(tick_ms.max(now_ms()))?;
    entry.next_tick_ms.store(next_ms, Ordering::Relaxed);
    let key = &entry.repeat.key;
    let keep = Duration::from_millis(next_ms.saturating_sub(tick_ms)) * 2;
    match claims.claim(key, tick_ms, LEASE, keep).await {
        Ok(Claim::Won) => {
            let request = EnqueueRequest {
                dedup_key: Some(format!("{key}:{tick_ms}")),
                ..EnqueueRequest::default()
            };
            let payload = entry.repeat.payload.clone();
            match queues.enqueue(&entry.queue, payload, request).await {
                Ok(job) => {
                    tracing::debug!(queue = %entry.queue, %key, job = job.id(), "repeat enqueued")
                }
                Err(e) => {
                    tracing::warn!(queue = %entry.queue, %key, "repeat tick not enqueued: {e}")
                }
            }
            if let Err(e) = claims.release(key, tick_ms).await {
                tracing::debug!(%key, "releasing a repeat claim failed: {e}");
            }
        }
        Ok(Claim::Taken | Claim::Busy) => {}
        Err(e) => {
            tracing::warn!(queue = %entry.queue, %key, "repeat tick skipped: claiming it failed ({e}), and enqueueing unclaimed could enqueue it twice")
        }
    }
    Some(instant_of(next_ms))
}
