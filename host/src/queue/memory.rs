//! The embedded queue backend: bounded, in-process, and not durable (the start-up log says
//! so). It follows the same rules as Redis, so a dev run behaves like production: a bounded
//! number of waiting jobs per queue, delays, retries, dead letters, stalled-job requeue.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::watch::{JobWatch, Watchers};
use super::{
    DeadJob, Delivery, Enqueued, Finished, Job, JobInfo, JobState, NewJob, QueueBackend,
    QueueError, QueueStats, RepeatRecord,
};
use crate::manifest::KeepJobs;
use crate::timers::now_ms;

/// Dedup keys remembered across all queues.
const MAX_DEDUP_KEYS: usize = 100_000;

/// A job being processed.
struct Running {
    job: Job,
    /// Its last sign of life (delivery or heartbeat).
    seen: Instant,
    started_at_ms: u64,
    progress: Option<String>,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Job>,
    /// Keyed by (due ms, sequence) so equal due times keep their order.
    delayed: BTreeMap<(u64, u64), Job>,
    /// Receipt → the running job.
    in_flight: HashMap<String, Running>,
    dead: VecDeque<DeadJob>,
    /// Completed jobs kept under `keep_completed`, by id, and their ids oldest first.
    completed: HashMap<String, JobInfo>,
    completed_order: VecDeque<(u64, String)>,
    stats: QueueStats,
}

impl QueueState {
    /// Adds a ready job behind every job of its priority or a higher one: `ready` stays
    /// ordered by priority, FIFO within one (all 0 on a queue without priorities: a FIFO).
    fn admit(&mut self, job: Job) {
        let at = self.ready.partition_point(|j| j.priority >= job.priority);
        self.ready.insert(at, job);
    }

    /// Drops completed jobs beyond `keep` (the oldest first).
    fn trim_completed(&mut self, keep: KeepJobs, now: u64) {
        let oldest = keep.age_ms().map_or(0, |age| now.saturating_sub(age));
        while let Some((finished, id)) = self.completed_order.front() {
            if self.completed_order.len() as u64 <= keep.count && *finished >= oldest {
                break;
            }
            self.completed.remove(id);
            self.completed_order.pop_front();
        }
    }

    /// Drops dead letters beyond `keep` (the oldest first).
    fn trim_dead(&mut self, keep: KeepJobs, now: u64) {
        let oldest = keep.age_ms().map_or(0, |age| now.saturating_sub(age));
        while let Some(dead) = self.dead.front() {
            if self.dead.len() as u64 <= keep.count && dead.failed_at_ms >= oldest {
                break;
            }
            self.dead.pop_front();
        }
    }

    fn push_dead(&mut self, dead: DeadJob, keep: KeepJobs) {
        self.dead.push_back(dead);
        self.stats.failed += 1;
        self.trim_dead(keep, now_ms());
    }

    fn find(&self, id: &str) -> Option<JobInfo> {
        if let Some(job) = self.ready.iter().find(|j| j.id == id) {
            return Some(JobInfo::new(job.clone(), JobState::Waiting));
        }
        if let Some(r) = self.in_flight.values().find(|r| r.job.id == id) {
            return Some(active(r));
        }
        if let Some(((due, _), job)) = self.delayed.iter().find(|(_, j)| j.id == id) {
            return Some(delayed(job, *due));
        }
        if let Some(info) = self.completed.get(id) {
            return Some(info.clone());
        }
        self.dead.iter().rev().find(|d| d.job.id == id).map(dead)
    }
}

fn active(r: &Running) -> JobInfo {
    JobInfo {
        started_at_ms: Some(r.started_at_ms),
        progress: r.progress.clone(),
        ..JobInfo::new(r.job.clone(), JobState::Active)
    }
}

/// A job in the delayed set: a retry waiting for its backoff is `failed`.
fn delayed(job: &Job, due: u64) -> JobInfo {
    let state = if job.last_error.is_some() {
        JobState::Failed
    } else {
        JobState::Delayed
    };
    JobInfo {
        due_at_ms: Some(due),
        ..JobInfo::new(job.clone(), state)
    }
}

fn dead(d: &DeadJob) -> JobInfo {
    JobInfo {
        finished_at_ms: Some(d.failed_at_ms),
        error: Some(d.error.clone()),
        ..JobInfo::new(d.job.clone(), JobState::Dead)
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, QueueState>,
    paused: BTreeSet<String>,
    repeats: Vec<RepeatRecord>,
    /// queue → lease token → when it lapses.
    leases: HashMap<String, HashMap<String, Instant>>,
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
    watchers: Arc<Watchers>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_in_flight(&self, state: &mut State, delivery: &Delivery) -> Option<Running> {
        let running = state
            .queue(&delivery.job.queue)
            .in_flight
            .remove(&delivery.receipt);
        if running.is_some() {
            self.watchers.notify(&delivery.job.queue, &delivery.job.id);
        }
        running
    }
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
            queue.admit(new.job);
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
                        self.watchers.notify(name, &job.id);
                        let running = Running {
                            job: job.clone(),
                            seen: Instant::now(),
                            started_at_ms: now_ms(),
                            progress: None,
                        };
                        state.queue(name).in_flight.insert(receipt.clone(), running);
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

    async fn complete(&self, done: &[Finished]) -> Result<(), QueueError> {
        let mut state = self.lock();
        for f in done {
            let Some(running) = self.take_in_flight(&mut state, &f.delivery) else {
                continue;
            };
            let queue = state.queue(&f.delivery.job.queue);
            queue.stats.processed += 1;
            if !f.keep.keeps() {
                continue;
            }
            let id = running.job.id.clone();
            let info = JobInfo {
                started_at_ms: Some(f.started_at_ms),
                finished_at_ms: Some(f.finished_at_ms),
                result: Some(super::jobs::bounded(&f.result, super::jobs::MAX_RESULT)),
                progress: running.progress,
                ..JobInfo::new(running.job, JobState::Completed)
            };
            if queue.completed.insert(id.clone(), info).is_none() {
                queue.completed_order.push_back((f.finished_at_ms, id));
            }
            queue.trim_completed(f.keep, now_ms());
        }
        Ok(())
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        retry_at_ms: u64,
        error: &str,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let Some(Running { mut job, .. }) = self.take_in_flight(&mut state, delivery) else {
            return Ok(());
        };
        job.attempt += 1;
        job.last_error = Some(error.to_string());
        let sequence = state.next();
        let queue = state.queue(&delivery.job.queue);
        queue.delayed.insert((retry_at_ms, sequence), job);
        queue.stats.retried += 1;
        Ok(())
    }

    async fn bury(
        &self,
        delivery: &Delivery,
        error: &str,
        keep: KeepJobs,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let Some(Running { job, .. }) = self.take_in_flight(&mut state, delivery) else {
            return Ok(());
        };
        let dead = DeadJob {
            job,
            error: error.to_string(),
            failed_at_ms: now_ms(),
        };
        state.queue(&delivery.job.queue).push_dead(dead, keep);
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
                let job = entry.remove();
                self.watchers.notify(name, &job.id);
                queue.admit(job);
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
        keep: KeepJobs,
    ) -> Result<usize, QueueError> {
        let now = Instant::now();
        let mut state = self.lock();
        let q = state.queue(queue);
        let stalled: Vec<String> = q
            .in_flight
            .iter()
            .filter(|(_, r)| now.duration_since(r.seen) > visibility)
            .map(|(receipt, _)| receipt.clone())
            .take(max)
            .collect();
        for receipt in &stalled {
            let Some(Running { mut job, .. }) = q.in_flight.remove(receipt) else {
                continue;
            };
            self.watchers.notify(queue, &job.id);
            let error =
                format!("stalled: not finished within the visibility timeout of {visibility:?}");
            if job.attempt >= job.max_attempts {
                let dead = DeadJob {
                    job,
                    error,
                    failed_at_ms: now_ms(),
                };
                q.push_dead(dead, keep);
            } else {
                job.attempt += 1;
                job.last_error = Some(error);
                q.admit(job);
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
            if let Some(running) = state.queue(&d.job.queue).in_flight.get_mut(&d.receipt) {
                running.seen = now;
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
            job.last_error = Some(dead.error);
            self.watchers.notify(queue, &job.id);
            q.admit(job);
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

    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>, QueueError> {
        Ok(self.lock().queue(queue).find(id))
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobInfo>, QueueError> {
        let mut all = self.lock();
        let q = all.queue(queue);
        Ok(match state {
            JobState::Waiting => q
                .ready
                .iter()
                .take(limit)
                .map(|j| JobInfo::new(j.clone(), JobState::Waiting))
                .collect(),
            JobState::Delayed | JobState::Failed => q
                .delayed
                .iter()
                .map(|((due, _), job)| delayed(job, *due))
                .filter(|info| info.state == state)
                .take(limit)
                .collect(),
            JobState::Active => {
                let mut running: Vec<JobInfo> = q.in_flight.values().map(active).collect();
                running.sort_by_key(|info| std::cmp::Reverse(info.started_at_ms));
                running.truncate(limit);
                running
            }
            JobState::Completed => q
                .completed_order
                .iter()
                .rev()
                .filter_map(|(_, id)| q.completed.get(id).cloned())
                .take(limit)
                .collect(),
            JobState::Dead => q.dead.iter().rev().take(limit).map(dead).collect(),
        })
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<Option<JobState>, QueueError> {
        let mut all = self.lock();
        let q = all.queue(queue);
        let removed = if let Some(i) = q.ready.iter().position(|j| j.id == id) {
            q.ready.remove(i);
            Some(JobState::Waiting)
        } else if let Some((key, job)) = q.delayed.iter().find(|(_, j)| j.id == id) {
            let (key, state) = (*key, delayed(job, key.0).state);
            q.delayed.remove(&key);
            Some(state)
        } else {
            match q.find(id) {
                Some(info) => return Err(info.refuse_removal()),
                None => None,
            }
        };
        drop(all);
        if removed.is_some() {
            self.watchers.notify(queue, id);
        }
        Ok(removed)
    }

    async fn progress(&self, delivery: &Delivery, progress: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        let queue = state.queue(&delivery.job.queue);
        if let Some(running) = queue.in_flight.get_mut(&delivery.receipt) {
            running.progress = Some(progress.to_string());
            self.watchers.notify(&delivery.job.queue, &delivery.job.id);
        }
        Ok(())
    }

    async fn watch(&self, queue: &str, id: &str) -> Result<JobWatch, QueueError> {
        self.watchers.watch(queue, id)
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        let mut state = self.lock();
        if paused {
            state.paused.insert(queue.to_string());
        } else {
            state.paused.remove(queue);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<BTreeSet<String>, QueueError> {
        Ok(self.lock().paused.clone())
    }

    async fn acquire_lease(
        &self,
        queue: &str,
        limit: u32,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>, QueueError> {
        let now = Instant::now();
        let mut state = self.lock();
        let leases = state.leases.entry(queue.to_string()).or_default();
        leases.retain(|_, lapses| *lapses > now);
        if leases.contains_key(token) || leases.len() < limit as usize {
            leases.insert(token.to_string(), now + ttl);
            return Ok(None);
        }
        let earliest = leases.values().min().copied().unwrap_or(now + ttl);
        Ok(Some(
            earliest
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        ))
    }

    async fn release_lease(&self, queue: &str, token: &str) -> Result<(), QueueError> {
        let released = self
            .lock()
            .leases
            .get_mut(queue)
            .is_some_and(|leases| leases.remove(token).is_some());
        if released {
            self.watchers.notify(queue, super::LEASE_WATCH);
        }
        Ok(())
    }

    async fn renew_leases(
        &self,
        leases: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let lapses = Instant::now() + ttl;
        let mut state = self.lock();
        for (queue, token) in leases {
            if let Some(lease) = state.leases.get_mut(queue).and_then(|l| l.get_mut(token)) {
                *lease = lapses;
            }
        }
        Ok(())
    }

    async fn watch_leases(&self, queue: &str) -> Result<JobWatch, QueueError> {
        self.watch(queue, super::LEASE_WATCH).await
    }

    async fn repeats(&self) -> Result<Vec<RepeatRecord>, QueueError> {
        Ok(self.lock().repeats.clone())
    }

    async fn save_repeat(&self, record: &RepeatRecord) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.repeats.iter().any(|r| r.key == record.key) {
            return Ok(());
        }
        if state.repeats.len() >= super::MAX_RUNTIME_REPEATS {
            return Err(QueueError::Full(format!(
                "{} repeat entries exist, the most",
                super::MAX_RUNTIME_REPEATS
            )));
        }
        state.repeats.push(record.clone());
        Ok(())
    }

    async fn delete_repeat(&self, key: &str) -> Result<bool, QueueError> {
        let mut state = self.lock();
        let before = state.repeats.len();
        state.repeats.retain(|r| r.key != key);
        Ok(state.repeats.len() < before)
    }
}
