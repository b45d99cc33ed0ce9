//! `repeat = [...]` of a `[[trigger.queue]]`: jobs enqueued on a schedule (`every` or
//! `cron`, UTC), each tick once across every host sharing the Redis.
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
    queues: Arc<Queues>,
    claims: Arc<dyn TickClaims>,
    scheduler: SchedulerHandle,
}

impl Repeats {
    pub fn new(
        queues: Arc<Queues>,
        claims: Arc<dyn TickClaims>,
        scheduler: SchedulerHandle,
    ) -> Self {
        Self {
            current: Mutex::default(),
            queues,
            claims,
            scheduler,
        }
    }

    /// Makes the repeat entries of `triggers` the ones that tick: an entry kept by a deploy
    /// (same queue, schedule and payload) keeps its entry; the others leave or start.
    pub fn apply(&self, triggers: &[QueueTrigger]) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for trigger in triggers {
            for repeat in &trigger.repeat {
                let entry = match current.remove(&repeat.key) {
                    Some(kept) => kept,
                    None => self.start(&trigger.queue, repeat.clone()),
                };
                next.insert(repeat.key.clone(), entry);
            }
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
