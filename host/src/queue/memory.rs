//! The embedded queue backend: bounded, in-process, and not durable (the start-up log says
//! so). It follows the same rules as Redis, so a dev run behaves like production: a bounded
//! number of waiting jobs per queue, delays, retries, dead letters, stalled-job requeue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{DeadJob, Delivery, Enqueued, Job, NewJob, QueueBackend, QueueError, QueueStats};
use crate::timers::now_ms;

/// Dead letters kept per queue; beyond it the oldest are dropped with a warning.
const MAX_DEAD: usize = 10_000;
/// Dedup keys remembered across all queues.
const MAX_DEDUP_KEYS: usize = 100_000;

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Job>,
    /// Keyed by (due ms, sequence) so equal due times keep their order.
    delayed: BTreeMap<(u64, u64), Job>,
    /// Receipt → (job, last sign of life).
    in_flight: HashMap<String, (Job, Instant)>,
    dead: VecDeque<DeadJob>,
    stats: QueueStats,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, QueueState>,
    /// (queue, key) → (job id, expiry).
    dedup: HashMap<(String, String), (String, Instant)>,
    sequence: u64,
}

impl State {
    fn queue(&mut self, name: &str) -> &mut QueueState {
        self.queues.entry(name.to_string()).or_default()
    }

    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }
}

/// The bounded in-memory [`QueueBackend`].
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    ready: Notify,
    interrupt: Notify,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_in_flight(&self, state: &mut State, delivery: &Delivery) -> Option<Job> {
        state
            .queue(&delivery.job.queue)
            .in_flight
            .remove(&delivery.receipt)
            .map(|(job, _)| job)
    }
}

fn push_dead(queue: &mut QueueState, dead: DeadJob) {
    if queue.dead.len() >= MAX_DEAD {
        queue.dead.pop_front();
        tracing::warn!(queue = %dead.job.queue, "dead letters full ({MAX_DEAD}); dropped the oldest");
    }
    queue.dead.push_back(dead);
    queue.stats.failed += 1;
}

#[async_trait]
impl QueueBackend for MemoryQueue {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn enqueue(&self, new: NewJob) -> Result<Enqueued, QueueError> {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some((key, window)) = &new.dedup {
            let slot = (new.job.queue.clone(), key.clone());
            if let Some((id, expires)) = state.dedup.get(&slot)
                && *expires > now
            {
                return Ok(Enqueued::Duplicate(id.clone()));
            }
            if state.dedup.len() >= MAX_DEDUP_KEYS {
                state.dedup.retain(|_, (_, expires)| *expires > now);
            }
            if state.dedup.len() >= MAX_DEDUP_KEYS {
                return Err(QueueError::Full(format!(
                    "{MAX_DEDUP_KEYS} dedup keys are live"
                )));
            }
            state
                .dedup
                .insert(slot, (new.job.id.clone(), now + *window));
        }
        let sequence = state.next();
        let queue = state.queue(&new.job.queue);
        let waiting = (queue.ready.len() + queue.delayed.len()) as u64;
        if waiting >= new.max_waiting {
            let name = new.job.queue.clone();
            if let Some((key, _)) = &new.dedup {
                state.dedup.remove(&(name.clone(), key.clone()));
            }
            return Err(QueueError::Full(format!(
                "queue `{name}` holds {waiting} jobs, its limit"
            )));
        }
        let id = new.job.id.clone();
        if new.delay.is_zero() {
            queue.ready.push_back(new.job);
            drop(state);
            self.ready.notify_waiters();
        } else {
            let due = now_ms() + new.delay.as_millis() as u64;
            queue.delayed.insert((due, sequence), new.job);
        }
        Ok(Enqueued::New(id))
    }

    async fn receive(
        &self,
        wants: &[(String, usize)],
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let mut out = Vec::new();
                for (name, max) in wants {
                    for _ in 0..*max {
                        let Some(job) = state.queue(name).ready.pop_front() else {
                            break;
                        };
                        let receipt = format!("m{}", state.next());
                        state
                            .queue(name)
                            .in_flight
                            .insert(receipt.clone(), (job.clone(), Instant::now()));
                        out.push(Delivery { job, receipt });
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            tokio::select! {
                woken = crate::timers::timeout_at(deadline, notified) => {
                    if woken.is_err() {
                        return Ok(Vec::new());
                    }
                }
                () = self.interrupt.notified() => return Ok(Vec::new()),
            }
        }
    }

    async fn interrupt_receive(&self) -> Result<(), QueueError> {
        self.interrupt.notify_waiters();
        Ok(())
    }

    async fn complete(&self, done: &[Delivery]) -> Result<(), QueueError> {
        let mut state = self.lock();
        for d in done {
            if self.take_in_flight(&mut state, d).is_some() {
                state.queue(&d.job.queue).stats.processed += 1;
            }
        }
        Ok(())
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        retry_at_ms: u64,
        _error: &str,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let Some(mut job) = self.take_in_flight(&mut state, delivery) else {
            return Ok(());
        };
        job.attempt += 1;
        let sequence = state.next();
        let queue = state.queue(&delivery.job.queue);
        queue.delayed.insert((retry_at_ms, sequence), job);
        queue.stats.retried += 1;
        Ok(())
    }

    async fn bury(&self, delivery: &Delivery, error: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        let Some(job) = self.take_in_flight(&mut state, delivery) else {
            return Ok(());
        };
        let queue = state.queue(&delivery.job.queue);
        push_dead(
            queue,
            DeadJob {
                job,
                error: error.to_string(),
                failed_at_ms: now_ms(),
            },
        );
        Ok(())
    }

    async fn promote_due(&self, queues: &[String], now_ms: u64) -> Result<Option<u64>, QueueError> {
        let mut state = self.lock();
        let mut next: Option<u64> = None;
        let mut promoted = false;
        for name in queues {
            let queue = state.queue(name);
            while let Some(entry) = queue.delayed.first_entry() {
                let due = entry.key().0;
                if due > now_ms {
                    next = Some(next.map_or(due, |n| n.min(due)));
                    break;
                }
                queue.ready.push_back(entry.remove());
                promoted = true;
            }
        }
        drop(state);
        if promoted {
            self.ready.notify_waiters();
        }
        Ok(next)
    }

    async fn reclaim_stalled(
        &self,
        queue: &str,
        visibility: Duration,
        max: usize,
    ) -> Result<usize, QueueError> {
        let now = Instant::now();
        let mut state = self.lock();
        let q = state.queue(queue);
        let stalled: Vec<String> = q
            .in_flight
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) > visibility)
            .map(|(receipt, _)| receipt.clone())
            .take(max)
            .collect();
        for receipt in &stalled {
            let Some((mut job, _)) = q.in_flight.remove(receipt) else {
                continue;
            };
            if job.attempt >= job.max_attempts {
                let error = format!(
                    "stalled: not finished within the visibility timeout of {visibility:?}"
                );
                push_dead(
                    q,
                    DeadJob {
                        job,
                        error,
                        failed_at_ms: now_ms(),
                    },
                );
            } else {
                job.attempt += 1;
                q.ready.push_back(job);
            }
        }
        drop(state);
        if !stalled.is_empty() {
            self.ready.notify_waiters();
        }
        Ok(stalled.len())
    }

    async fn heartbeat(&self, alive: &[Delivery]) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut state = self.lock();
        for d in alive {
            if let Some((_, seen)) = state.queue(&d.job.queue).in_flight.get_mut(&d.receipt) {
                *seen = now;
            }
        }
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let mut state = self.lock();
        let q = state.queue(queue);
        Ok(QueueStats {
            waiting: q.ready.len() as u64,
            in_flight: q.in_flight.len() as u64,
            delayed: q.delayed.len() as u64,
            dead: q.dead.len() as u64,
            ..q.stats
        })
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, QueueError> {
        Ok(self
            .lock()
            .queue(queue)
            .dead
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn retry_dead(&self, queue: &str, id: Option<&str>) -> Result<usize, QueueError> {
        let mut state = self.lock();
        let q = state.queue(queue);
        let (revive, keep): (Vec<DeadJob>, Vec<DeadJob>) = q
            .dead
            .drain(..)
            .partition(|d| id.is_none_or(|id| d.job.id == id));
        q.dead = keep.into();
        let n = revive.len();
        for dead in revive {
            let mut job = dead.job;
            job.attempt = 1;
            q.ready.push_back(job);
        }
        drop(state);
        self.ready.notify_waiters();
        Ok(n)
    }

    async fn purge_dead(&self, queue: &str) -> Result<usize, QueueError> {
        let mut state = self.lock();
        let q = state.queue(queue);
        let n = q.dead.len();
        q.dead.clear();
        Ok(n)
    }
}
