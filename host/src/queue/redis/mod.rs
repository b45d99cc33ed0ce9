//! The production queue backend on Redis.
//!
//! Per queue `q`, every key sits under the hash tag `{q}` so that a Redis Cluster keeps a
//! queue in one slot and its scripts stay atomic (`llmchat` is `[redis] prefix`):
//! - `llmchat:{q}:stream`: ready and in-flight jobs, a stream read through the consumer
//!   group `llmchat` (pending entries are the in-flight jobs);
//! - `llmchat:{q}:delayed` + `llmchat:{q}:job:<id>`: delayed jobs, a sorted set by due time
//!   and a hash per job, promoted to the stream by a script;
//! - `llmchat:{q}:dead`: dead letters, a capped stream with the last error;
//! - `llmchat:{q}:dedup:<key>`: `SET NX PX` dedup markers;
//! - `llmchat:{q}:stats`: processed / failed / retried counters;
//! - `llmchat:{q}:ids`: job id → stream entry, for the jobs in the stream whose entry is not
//!   their id (an immediate job's id is its entry's: see `lookup`), and
//!   `llmchat:{q}:dead:ids`, job id → dead letter entry: how one job is found by id;
//! - `llmchat:{q}:progress`: job id → the last progress JSON of a running job;
//! - `llmchat:{q}:done:<id>` + `llmchat:{q}:completed`: completed jobs kept under
//!   `keep_completed`, a record each and a sorted set by finish time (none by default);
//! - `llmchat:{q}:watched`: job id → until when some host watches it, so only watched jobs
//!   publish their changes (see `events`);
//! - `llmchat:{q}:idle` and the shard channel `llmchat:{q}:wake`: the doorbell of a Redis
//!   Cluster, where a reader cannot block on several queues (see `scripts`);
//! - with `priorities = true`: `llmchat:{q}:prioritized` + `llmchat:{q}:job:<id>`, the ready
//!   jobs by priority and arrival, a counter `llmchat:{q}:seq`, and on one node the set
//!   `llmchat:{q}:sleepers` of the readers waiting for a ring, each on its own stream
//!   `llmchat:{q}:bell:<consumer>` (see `priority`).
//!
//! Every state change that touches more than one key is one Lua script, so several hosts
//! can share the queues; finishing a job checks `XACK`'s answer, so a job reclaimed by
//! another host after its visibility timeout is never finished twice by the old one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::watch::JobWatch;
use super::{
    DeadJob, Delivery, Enqueued, Finished, Job, JobInfo, JobState, NewJob, QueueBackend,
    QueueError, QueueStats,
};
use crate::manifest::KeepJobs;
use crate::redis::{BLOCK_TIME, RedisError, RedisPool};
use crate::timers::now_ms;

mod doorbell;
mod entries;
mod events;
mod lookup;
mod priority;
mod scripts;

use doorbell::Doorbell;
use events::{Events, WATCH_TTL};
use scripts::{BURY, COMPLETE, ENQUEUE, PROMOTE, RECLAIM, RETRY, RETRY_DEAD};

const GROUP: &str = "llmchat";
/// Delayed jobs promoted per script call; more wait for the next, immediate, call.
const PROMOTE_BATCH: u64 = 500;

/// `PREFIX:{QUEUE}:PART`.
fn queue_key(prefix: &str, queue: &str, part: &str) -> String {
    format!("{prefix}:{{{queue}}}:{part}")
}

impl From<RedisError> for QueueError {
    fn from(e: RedisError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

/// The Redis [`QueueBackend`].
pub struct RedisQueue {
    pool: Arc<RedisPool>,
    /// This host's consumer name in every group.
    consumer: String,
    /// `CLIENT ID` of the blocking connection, for `CLIENT UNBLOCK`; -1 until known, and
    /// again after an error (a reconnect gives the connection a new id).
    reader_id: AtomicI64,
    /// Set by `interrupt_receive`: a read about to block returns at once instead (an
    /// `UNBLOCK` can only end a read already blocking).
    interrupted: std::sync::atomic::AtomicBool,
    /// On a cluster: the readers' doorbell and what it keeps.
    doorbell: Doorbell,
    /// The jobs watched on this host, and the listener that hears their changes.
    events: Events,
    /// The queues with priorities, and the bells read for them (see `priority`).
    priorities: priority::Priorities,
}

impl RedisQueue {
    /// `PREFIX:{QUEUE}:PART` of this application.
    fn key(&self, queue: &str, part: &str) -> String {
        queue_key(self.pool.prefix(), queue, part)
    }

    /// The keys `PREFIX:{QUEUE}:PART` of `parts`, in order: a script's KEYS.
    fn keys(&self, queue: &str, parts: &[&str]) -> Vec<String> {
        parts.iter().map(|part| self.key(queue, part)).collect()
    }

    /// The channel the scripts that add to `queue`'s stream ring its doorbell on: its shard
    /// channel on a cluster; on one node none (`""`), so they do not even look at the flag.
    fn ring_channel(&self, queue: &str) -> String {
        if self.pool.is_cluster() {
            self.key(queue, "wake")
        } else {
            String::new()
        }
    }

    /// The `sleepers` set whose readers the scripts that admit ready jobs ring: on one node,
    /// for a queue with priorities (see `priority`); else none (`""`).
    fn sleepers_arg(&self, queue: &str) -> String {
        if !self.pool.is_cluster() && self.priorities.has(queue) {
            self.key(queue, "sleepers")
        } else {
            String::new()
        }
    }

    /// This reader's bell stream for `queue` (one node, a queue with priorities).
    fn bell_key(&self, queue: &str) -> String {
        self.key(queue, &format!("bell:{}", self.consumer))
    }

    /// The job hash prefix the scripts that requeue a job admit it under, for a queue with
    /// priorities; else `""` (the job goes back to the stream).
    fn admit_prefix(&self, queue: &str) -> String {
        if self.priorities.has(queue) {
            self.key(queue, "job:")
        } else {
            String::new()
        }
    }

    /// Where the scripts publish a watched job's changes: on a cluster the queue's shard
    /// channel (a script may publish only in its own slot), on one node one channel.
    fn events_channel(&self, queue: &str) -> String {
        if self.pool.is_cluster() {
            self.key(queue, "events")
        } else {
            self.pool.key("jobs:events")
        }
    }

    /// `keep`'s count and its oldest allowed time in ms (0: no age bound), as script args.
    fn keep_args(keep: KeepJobs) -> [String; 2] {
        let oldest = keep
            .age_ms()
            .map_or(0, |age| now_ms().saturating_sub(age).max(1));
        [keep.count.to_string(), oldest.to_string()]
    }
}

impl RedisQueue {
    /// Creates the consumer groups of `queues` (idempotent) and returns the backend.
    pub async fn connect(pool: Arc<RedisPool>, queues: &[String]) -> Result<Self, QueueError> {
        let consumer = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            fastrand::u32(..)
        );
        let backend = Self {
            pool,
            consumer,
            reader_id: AtomicI64::new(-1),
            interrupted: std::sync::atomic::AtomicBool::new(false),
            doorbell: Doorbell::default(),
            events: Events::default(),
            priorities: priority::Priorities::default(),
        };
        for q in queues {
            // Redis may be down at start-up: groups are made again on first use then.
            if let Err(e) = backend.ensure_group(q).await {
                tracing::warn!(queue = %q, "cannot prepare the queue yet: {e}");
            }
        }
        Ok(backend)
    }

    async fn ensure_group(&self, queue: &str) -> Result<(), QueueError> {
        if !self.pool.is_cluster() && self.priorities.has(queue) {
            self.create_group(self.bell_key(queue)).await?;
        }
        self.create_group(self.key(queue, "stream")).await
    }

    /// `XGROUP CREATE stream GROUP 0 MKSTREAM`, idempotent.
    async fn create_group(&self, stream: String) -> Result<(), QueueError> {
        let result = self
            .pool
            .run(|mut c| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        match result {
            Err(RedisError::Command(e)) if e.contains("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Runs a script whose first key is the queue's stream, durably (`[redis]
    /// replica_acks`); a `NOGROUP` error (the stream was deleted, e.g. by FLUSHALL) makes the
    /// group again and retries once.
    async fn ack_script(
        &self,
        script: &'static Script,
        queue: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<i64, QueueError> {
        let stream_key = keys[0].clone();
        for first in [true, false] {
            let (keys, args) = (keys.clone(), args.clone());
            let result = self
                .pool
                .run_durable(&stream_key, |mut c| async move {
                    let mut inv = script.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    for a in &args {
                        inv.arg(a);
                    }
                    inv.invoke_async::<i64>(&mut c).await
                })
                .await;
            match result {
                Err(RedisError::Command(e)) if first && e.contains("NOGROUP") => {
                    self.ensure_group(queue).await?
                }
                other => return Ok(other?),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// One node's read: one `XREADGROUP` over the streams of `wants` (the most any wants at
    /// once from each) and the bell streams of `rung_by` (queues with priorities, see
    /// `priority`), blocking up to `wait` (not at all when zero), ended early by
    /// [`QueueBackend::interrupt_receive`]. The raw reply (nil when it timed out).
    async fn read_blocking(
        &self,
        wants: &[(String, usize)],
        rung_by: &[(String, usize)],
        wait: Duration,
    ) -> Result<redis::Value, QueueError> {
        let count = wants.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
        let mut streams: Vec<String> = wants.iter().map(|(q, _)| self.key(q, "stream")).collect();
        streams.extend(rung_by.iter().map(|(q, _)| self.bell_key(q)));
        let ids: Vec<&str> = vec![">"; streams.len()];
        let block_ms = wait.min(BLOCK_TIME).as_millis().max(1) as usize;
        if self.reader_id.load(Ordering::Relaxed) < 0 {
            let id: i64 = self
                .pool
                .run_blocking(|mut c| async move {
                    redis::cmd("CLIENT").arg("ID").query_async(&mut c).await
                })
                .await?;
            self.reader_id.store(id, Ordering::Relaxed);
        }
        if self.interrupted.swap(false, Ordering::AcqRel) {
            return Ok(redis::Value::Nil);
        }
        let reply: Result<redis::Value, RedisError> = self
            .pool
            .run_blocking(|mut c| async move {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP").arg(GROUP).arg(&self.consumer);
                cmd.arg("COUNT").arg(count);
                if !wait.is_zero() {
                    cmd.arg("BLOCK").arg(block_ms);
                }
                cmd.arg("STREAMS");
                cmd.arg(&streams).arg(&ids);
                cmd.query_async(&mut c).await
            })
            .await;
        // This read is over: an interrupt sent for it has done its work.
        self.interrupted.store(false, Ordering::Release);
        match reply {
            Err(RedisError::Command(m)) if m.contains("NOGROUP") => {
                // The stream or group is gone (first use, or Redis lost its data): make them.
                for (q, _) in wants.iter().chain(rung_by) {
                    self.ensure_group(q).await?;
                }
                Err(QueueError::Unavailable(format!(
                    "{m}; consumer groups recreated"
                )))
            }
            Err(e) => {
                self.reader_id.store(-1, Ordering::Relaxed);
                Err(e.into())
            }
            Ok(reply) => Ok(reply),
        }
    }

    /// One pipeline per queue of `deliveries`, built by `build(queue, entry ids, pipe)`, all
    /// sent at once: a queue is one slot, and a cluster refuses a pipeline across slots.
    async fn per_queue(
        &self,
        deliveries: &[Delivery],
        build: impl Fn(&str, &[&str], &mut redis::Pipeline),
    ) -> Result<(), QueueError> {
        let sends = receipts_by_queue(deliveries)
            .into_iter()
            .map(|(queue, ids)| {
                let mut pipe = redis::pipe();
                build(queue, &ids, &mut pipe);
                self.pool
                    .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }
}

fn job_args(job: &Job, attempt: u32) -> [String; 6] {
    [
        job.id.clone(),
        job.payload.clone(),
        attempt.to_string(),
        job.max_attempts.to_string(),
        job.backoff.to_string(),
        job.enqueued_at_ms.to_string(),
    ]
}

/// Whether `receipt` is the entry job `id` was enqueued as (`ENTRY.SUFFIX`): such a job has
/// no entry in the `ids` index.
fn is_first_entry(id: &str, receipt: &str) -> bool {
    id.strip_prefix(receipt)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The stream entry ids of `deliveries`, per queue, for one command per queue.
fn receipts_by_queue(deliveries: &[Delivery]) -> BTreeMap<&str, Vec<&str>> {
    let mut by_queue: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in deliveries {
        by_queue
            .entry(d.job.queue.as_str())
            .or_default()
            .push(d.receipt.as_str());
    }
    by_queue
}

/// The queue of a stream key of this application (`prefix`), if it is one.
fn queue_of_stream<'a>(prefix: &str, stream_key: &'a str) -> Option<&'a str> {
    stream_key
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix("}:stream")
}

#[async_trait]
impl QueueBackend for RedisQueue {
    async fn prepare(&self, queue: &str) -> Result<(), QueueError> {
        self.ensure_group(queue).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, new: NewJob) -> Result<Enqueued, QueueError> {
        let q = new.job.queue.clone();
        let due = if new.delay.is_zero() {
            0
        } else {
            now_ms() + new.delay.as_millis() as u64
        };
        let (dedup_key, window_ms) = match &new.dedup {
            Some((k, w)) => (
                self.key(&q, &format!("dedup:{k}")),
                w.as_millis().max(1) as u64,
            ),
            None => (self.key(&q, "dedup:"), 0),
        };
        let keys = [
            self.key(&q, "stream"),
            self.key(&q, "delayed"),
            dedup_key,
            self.key(&q, &format!("job:{}", new.job.id)),
            self.key(&q, "idle"),
            self.key(&q, "prioritized"),
            self.key(&q, "seq"),
        ];
        let [id, payload, attempt, max, backoff, t] = job_args(&new.job, new.job.attempt);
        // An immediate job's id is ENTRY.SUFFIX (see `scripts::ENQUEUE`): 64 random bits; a
        // job of a queue with priorities keeps its whole id, as a delayed one.
        let id = if due == 0 && !new.prioritized {
            id[..16.min(id.len())].to_string()
        } else {
            id
        };
        let args = [
            id,
            payload,
            attempt,
            max,
            backoff,
            t,
            due.to_string(),
            window_ms.to_string(),
            new.max_waiting.to_string(),
            self.ring_channel(&q),
            if new.prioritized {
                new.job.priority.to_string()
            } else {
                String::new()
            },
            self.sleepers_arg(&q),
            new.job.trace_context.clone().unwrap_or_default(),
        ];
        let stream = keys[0].clone();
        let (status, value): (String, String) = self
            .pool
            .run_durable(&stream, |mut c| async move {
                let mut inv = ENQUEUE.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                for a in &args {
                    inv.arg(a);
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        match status.as_str() {
            "ok" => Ok(Enqueued::New(value)),
            "dup" => Ok(Enqueued::Duplicate(value)),
            _ => Err(QueueError::Full(format!(
                "queue `{q}` holds {value} jobs, its limit"
            ))),
        }
    }

    async fn receive(
        &self,
        wants: &[(String, usize)],
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let count = wants.iter().map(|(_, n)| *n).max().unwrap_or(0);
        if count == 0 {
            return Ok(Vec::new());
        }
        if self.pool.is_cluster() {
            return self.receive_by_doorbell(wants, wait).await;
        }
        if wants.iter().any(|(q, _)| self.priorities.has(q)) {
            return self.receive_with_priorities(wants, wait).await;
        }
        self.read_blocking(wants, &[], wait)
            .await
            .map(|reply| entries::deliveries(&reply, self.pool.prefix()))
    }

    fn set_prioritized(&self, queues: std::collections::BTreeSet<String>) {
        self.priorities.set(queues);
    }

    async fn interrupt_receive(&self) -> Result<(), QueueError> {
        if self.pool.is_cluster() {
            self.doorbell.interrupt();
            return Ok(());
        }
        // A read not sent yet (its connection's id unknown, or on its way) sees the flag.
        self.interrupted.store(true, Ordering::Release);
        let id = self.reader_id.load(Ordering::Relaxed);
        if id >= 0 {
            // Ends the blocked XREADGROUP as if it had timed out; 0 when nothing was blocked.
            let unblocked = self
                .pool
                .run(|mut c| async move {
                    redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await?;
            tracing::trace!(reader = id, unblocked, "interrupted the queue read");
        }
        Ok(())
    }

    async fn complete(&self, done: &[Finished]) -> Result<(), QueueError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut by_queue: BTreeMap<&str, Vec<&Finished>> = BTreeMap::new();
        for f in done {
            by_queue.entry(&f.delivery.job.queue).or_default().push(f);
        }
        // One script per queue (a queue is one slot), all sent at once.
        let sends = by_queue.into_iter().map(|(queue, jobs)| {
            let keep = jobs[0].keep;
            let keys = [
                self.key(queue, "stream"),
                self.key(queue, "ids"),
                self.key(queue, "stats"),
                self.key(queue, "progress"),
                self.key(queue, "completed"),
                self.key(queue, "watched"),
            ];
            let [count, oldest] = Self::keep_args(keep);
            let count = if keep.keeps() { count } else { "0".into() };
            let mut args = vec![
                GROUP.to_string(),
                count,
                oldest,
                keep.age_ms().unwrap_or(0).to_string(),
                self.key(queue, "done:"),
            ];
            args.extend(self.events_args(queue));
            for f in &jobs {
                let moved = !is_first_entry(&f.delivery.job.id, &f.delivery.receipt);
                args.push(f.delivery.receipt.clone());
                args.push(f.delivery.job.id.clone());
                args.push(if moved { "1" } else { "0" }.to_string());
                args.push(if f.progressed { "1" } else { "0" }.to_string());
                args.push(if keep.keeps() {
                    super::jobs::bounded(&f.result, super::jobs::MAX_RESULT)
                } else {
                    String::new()
                });
                args.push(f.started_at_ms.to_string());
                args.push(f.finished_at_ms.to_string());
            }
            self.pool.run(move |mut c| async move {
                let mut inv = COMPLETE.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                for a in &args {
                    inv.arg(a);
                }
                inv.invoke_async::<i64>(&mut c).await
            })
        });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        retry_at_ms: u64,
        error: &str,
    ) -> Result<(), QueueError> {
        let job = &delivery.job;
        let q = &job.queue;
        let keys = vec![
            self.key(q, "stream"),
            self.key(q, "delayed"),
            self.key(q, &format!("job:{}", job.id)),
            self.key(q, "stats"),
            self.key(q, "ids"),
            self.key(q, "progress"),
            self.key(q, "watched"),
        ];
        let mut args = vec![
            delivery.receipt.clone(),
            GROUP.to_string(),
            retry_at_ms.to_string(),
        ];
        args.extend(job_args(job, job.attempt + 1));
        args.push(error.to_string());
        args.extend(self.events_args(q));
        args.push(job.priority.to_string());
        args.push(job.trace_context.clone().unwrap_or_default());
        self.ack_script(&RETRY, q, keys, args).await.map(|_| ())
    }

    async fn bury(
        &self,
        delivery: &Delivery,
        error: &str,
        keep: KeepJobs,
    ) -> Result<(), QueueError> {
        let job = &delivery.job;
        let q = &job.queue;
        let keys = self.keys(
            q,
            &[
                "stream", "dead", "stats", "ids", "progress", "dead:ids", "watched",
            ],
        );
        let mut args = vec![delivery.receipt.clone(), GROUP.to_string()];
        args.extend(Self::keep_args(keep));
        args.extend(job_args(job, job.attempt));
        args.push(error.to_string());
        args.push(now_ms().to_string());
        args.extend(self.events_args(q));
        args.push(job.priority.to_string());
        self.ack_script(&BURY, q, keys, args).await.map(|_| ())
    }

    async fn promote_due(&self, queues: &[String], now: u64) -> Result<Option<u64>, QueueError> {
        let mut next: Option<u64> = None;
        for q in queues {
            let keys = [
                self.key(q, "delayed"),
                self.key(q, "stream"),
                self.key(q, "idle"),
                self.key(q, "ids"),
                self.key(q, "watched"),
                self.key(q, "prioritized"),
                self.key(q, "seq"),
            ];
            let [channel, publish, queue, _] = self.events_args(q);
            let args = [
                now.to_string(),
                PROMOTE_BATCH.to_string(),
                self.key(q, "job:"),
                self.ring_channel(q),
                channel,
                publish,
                queue,
                if self.priorities.has(q) { "1" } else { "" }.to_string(),
                self.sleepers_arg(q),
            ];
            let head: String = self
                .pool
                .run(|mut c| async move {
                    let mut inv = PROMOTE.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    for a in &args {
                        inv.arg(a);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await?;
            if let Ok(due) = head.parse::<f64>()
                && due >= 0.0
            {
                let due = due as u64;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
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
        let keys = self.keys(
            queue,
            &[
                "stream",
                "dead",
                "stats",
                "idle",
                "ids",
                "progress",
                "dead:ids",
                "watched",
                "prioritized",
                "seq",
            ],
        );
        let [count, oldest] = Self::keep_args(keep);
        let mut args = vec![
            GROUP.to_string(),
            self.consumer.clone(),
            visibility.as_millis().to_string(),
            max.to_string(),
            format!("stalled: not finished within the visibility timeout of {visibility:?}"),
            count,
            now_ms().to_string(),
            self.ring_channel(queue),
            oldest,
        ];
        args.extend(self.events_args(queue));
        args.push(self.admit_prefix(queue));
        args.push(self.sleepers_arg(queue));
        Ok(self.ack_script(&RECLAIM, queue, keys, args).await?.max(0) as usize)
    }

    async fn heartbeat(&self, alive: &[Delivery]) -> Result<(), QueueError> {
        if alive.is_empty() {
            return Ok(());
        }
        self.per_queue(alive, |queue, ids, pipe| {
            pipe.cmd("XCLAIM")
                .arg(self.key(queue, "stream"))
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(0)
                .arg(ids)
                .arg("JUSTID")
                .ignore();
        })
        .await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let stream = self.key(queue, "stream");
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(&stream);
        pipe.cmd("XPENDING").arg(&stream).arg(GROUP);
        pipe.cmd("ZCARD").arg(self.key(queue, "delayed"));
        pipe.cmd("XLEN").arg(self.key(queue, "dead"));
        pipe.cmd("HGETALL").arg(self.key(queue, "stats"));
        pipe.cmd("ZCARD").arg(self.key(queue, "prioritized"));
        type Reply = (u64, redis::Value, u64, u64, HashMap<String, u64>, u64);
        let (len, pending, delayed, dead, counters, prioritized): Reply = self
            .pool
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .or_else(|e| match e {
                // No group yet: nothing was ever enqueued on this host's Redis.
                RedisError::Command(m) if m.contains("NOGROUP") => {
                    Ok((0, redis::Value::Nil, 0, 0, HashMap::new(), 0))
                }
                other => Err(other),
            })?;
        let in_flight = match pending {
            redis::Value::Array(v) => v
                .first()
                .and_then(|c| redis::from_redis_value_ref::<u64>(c).ok())
                .unwrap_or(0),
            _ => 0,
        };
        Ok(QueueStats {
            waiting: len.saturating_sub(in_flight) + prioritized,
            in_flight,
            delayed,
            dead,
            processed: counters.get("processed").copied().unwrap_or(0),
            failed: counters.get("failed").copied().unwrap_or(0),
            retried: counters.get("retried").copied().unwrap_or(0),
        })
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, QueueError> {
        let dead = self.key(queue, "dead");
        let reply: redis::Value = self
            .pool
            .run(|mut c| async move {
                redis::cmd("XRANGE")
                    .arg(&dead)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let redis::Value::Array(items) = &reply else {
            return Ok(Vec::new());
        };
        Ok(items
            .iter()
            .filter_map(entries::entry)
            .filter_map(|e| {
                Some(DeadJob {
                    job: e.job(queue)?,
                    error: e.fields.error.unwrap_or_default().to_string(),
                    failed_at_ms: e.fields.failed_at.and_then(|t| t.parse().ok()).unwrap_or(0),
                })
            })
            .collect())
    }

    async fn retry_dead(&self, queue: &str, id: Option<&str>) -> Result<usize, QueueError> {
        let keys = [
            self.key(queue, "dead"),
            self.key(queue, "stream"),
            self.key(queue, "idle"),
            self.key(queue, "ids"),
            self.key(queue, "dead:ids"),
            self.key(queue, "watched"),
            self.key(queue, "prioritized"),
            self.key(queue, "seq"),
        ];
        let mut args = vec![id.unwrap_or("").to_string(), self.ring_channel(queue)];
        args.extend(self.events_args(queue));
        args.push(self.admit_prefix(queue));
        args.push(self.sleepers_arg(queue));
        let stream = keys[1].clone();
        let n: i64 = self
            .pool
            .run_durable(&stream, |mut c| async move {
                let mut inv = RETRY_DEAD.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                for a in &args {
                    inv.arg(a);
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(n.max(0) as usize)
    }

    async fn purge_dead(&self, queue: &str) -> Result<usize, QueueError> {
        let (dead, ids) = (self.key(queue, "dead"), self.key(queue, "dead:ids"));
        let (n, _): (u64, u64) = self
            .pool
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("XLEN")
                    .arg(&dead)
                    .cmd("DEL")
                    .arg(&dead)
                    .arg(&ids)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(n as usize)
    }

    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>, QueueError> {
        self.find_job(queue, id).await
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobInfo>, QueueError> {
        self.list_jobs(queue, state, limit).await
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<Option<JobState>, QueueError> {
        self.remove_job(queue, id).await
    }

    async fn progress(&self, delivery: &Delivery, progress: &str) -> Result<(), QueueError> {
        let job = &delivery.job;
        self.record_progress(&job.queue, &job.id, &delivery.receipt, progress)
            .await
    }

    async fn watch(&self, queue: &str, id: &str) -> Result<JobWatch, QueueError> {
        let ticket = self.events.watchers.watch(queue, id)?;
        self.events
            .listen(&self.pool, queue, self.events_channel(queue))
            .await?;
        let (watched, id) = (self.key(queue, "watched"), id.to_string());
        let until = (now_ms() + WATCH_TTL.as_millis() as u64).to_string();
        self.pool
            .run(|mut c| async move {
                redis::cmd("HSET")
                    .arg(&watched)
                    .arg(&id)
                    .arg(&until)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        Ok(ticket)
    }

    /// The paused set lives in the application's control slot `{deploy}`, beside the deploy
    /// records, and a change is announced on their channel (`:paused`, never a component
    /// name): every host already listens there, so pausing needs no connection of its own.
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        let (key, channel) = (self.pool.key(PAUSED), self.pool.key(CONTROL_CHANNEL));
        let (queue, publish) = (queue.to_string(), self.pool.publish_command());
        self.pool
            .run_durable(&key.clone(), |mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd(if paused { "SADD" } else { "SREM" })
                    .arg(&key)
                    .arg(&queue)
                    .ignore()
                    .cmd(publish)
                    .arg(&channel)
                    .arg(PAUSED_MESSAGE)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        queue: &str,
        limit: u32,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>, QueueError> {
        let key = self.key(queue, "leases");
        let now = now_ms();
        let args = [
            limit.to_string(),
            token.to_string(),
            now.to_string(),
            (now + ttl.as_millis() as u64).to_string(),
        ];
        let wait: i64 = self
            .pool
            .run(|mut c| async move {
                ACQUIRE_LEASE
                    .key(&key)
                    .arg(&args[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait as u64)))
    }

    async fn release_lease(&self, queue: &str, token: &str) -> Result<(), QueueError> {
        let keys = [self.key(queue, "leases"), self.key(queue, "watched")];
        let mut args = vec![token.to_string(), super::LEASE_WATCH.to_string()];
        args.extend(self.events_args(queue));
        self.pool
            .run(|mut c| async move {
                RELEASE_LEASE
                    .key(&keys[..])
                    .arg(&args[..])
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn renew_leases(
        &self,
        leases: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let lapses = now_ms() + ttl.as_millis() as u64;
        let mut by_queue: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (queue, token) in leases {
            by_queue.entry(queue).or_default().push(token);
        }
        // One command per queue: a queue is one slot.
        let sends = by_queue.into_iter().map(|(queue, tokens)| {
            let key = self.key(queue, "leases");
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key).arg("XX");
            for token in tokens {
                cmd.arg(lapses).arg(token);
            }
            self.pool
                .run(move |mut c| async move { cmd.query_async::<i64>(&mut c).await })
        });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    async fn watch_leases(&self, queue: &str) -> Result<JobWatch, QueueError> {
        self.watch(queue, super::LEASE_WATCH).await
    }

    async fn repeats(&self) -> Result<Vec<super::RepeatRecord>, QueueError> {
        let key = self.pool.key(REPEATS);
        let records: HashMap<String, String> = self
            .pool
            .run(|mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(records
            .into_values()
            .filter_map(|json| match serde_json::from_str(&json) {
                Ok(record) => Some(record),
                Err(e) => {
                    tracing::warn!("skipping an unreadable repeat entry: {e}");
                    None
                }
            })
            .collect())
    }

    async fn save_repeat(&self, record: &super::RepeatRecord) -> Result<(), QueueError> {
        let json = serde_json::to_string(record)
            .map_err(|e| QueueError::Invalid(format!("repeat entry: {e}")))?;
        let (key, channel) = (self.pool.key(REPEATS), self.pool.key(CONTROL_CHANNEL));
        let (field, publish) = (record.key.clone(), self.pool.publish_command());
        let saved: i64 = self
            .pool
            .run_durable(&key.clone(), |mut c| async move {
                SAVE_REPEAT
                    .key(&key)
                    .arg(&field)
                    .arg(&json)
                    .arg(super::MAX_RUNTIME_REPEATS)
                    .arg(publish)
                    .arg(&channel)
                    .arg(REPEATS_MESSAGE)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if saved == 0 {
            return Err(QueueError::Full(format!(
                "{} repeat entries exist, the most",
                super::MAX_RUNTIME_REPEATS
            )));
        }
        Ok(())
    }

    async fn delete_repeat(&self, key: &str) -> Result<bool, QueueError> {
        let (hash, channel) = (self.pool.key(REPEATS), self.pool.key(CONTROL_CHANNEL));
        let (field, publish) = (key.to_string(), self.pool.publish_command());
        let deleted: i64 = self
            .pool
            .run_durable(&hash.clone(), |mut c| async move {
                DELETE_REPEAT
                    .key(&hash)
                    .arg(&field)
                    .arg(publish)
                    .arg(&channel)
                    .arg(REPEATS_MESSAGE)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn paused(&self) -> Result<std::collections::BTreeSet<String>, QueueError> {
        let key = self.pool.key(PAUSED);
        Ok(self
            .pool
            .run(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async::<std::collections::BTreeSet<String>>(&mut c)
                    .await
            })
            .await?)
    }
}

/// The set of paused queues (in the `{deploy}` control slot).
const PAUSED: &str = "{deploy}:paused-queues";
/// Deletes a repeat entry and, if there was one, tells every host.
static DELETE_REPEAT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: repeats; ARGV: key, publish command, channel, message
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n > 0 then redis.call(ARGV[2], ARGV[3], ARGV[4]) end
return n
",
    )
});

/// Takes a lease of a queue's global concurrency: 0 when granted, else the ms until the
/// earliest lease lapses.
static ACQUIRE_LEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: leases; ARGV: limit, token, now ms, lapses at ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - tonumber(ARGV[3]))
",
    )
});

/// Gives a lease back, telling the hosts that wait for one (they watch `*leases`).
static RELEASE_LEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(concat!(
        scripts::tell_function!(),
        r"
-- KEYS: leases, watched; ARGV: token, lease watch id, events channel, publish command, queue, now
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  tell(KEYS[2], ARGV[2], {ARGV[3], ARGV[4], ARGV[5], ARGV[6]}, false)
end
return 1
",
    ))
});

/// The run-time repeat entries, key → JSON record (in the `{deploy}` control slot).
const REPEATS: &str = "{deploy}:repeats";
/// What a change of the run-time repeat entries publishes on the control channel.
pub const REPEATS_MESSAGE: &str = ":repeats";

/// Adds a repeat entry unless there are too many (`HSETNX` keeps an existing one), and tells
/// every host.
static SAVE_REPEAT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: repeats; ARGV: key, record, most, publish command, channel, message
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[4], ARGV[5], ARGV[6])
return 1
",
    )
});
/// The deployer's channel, where every host listens for application-wide changes.
const CONTROL_CHANNEL: &str = "{deploy}:notify";
/// What a pause or resume publishes there: not a component name (names have no `:`).
pub const PAUSED_MESSAGE: &str = ":paused";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_per_queue() {
        assert_eq!(
            queue_key("llmchat", "summarize", "stream"),
            "llmchat:{summarize}:stream"
        );
        assert_eq!(
            queue_of_stream("llmchat", "llmchat:{summarize}:stream"),
            Some("summarize")
        );
        assert_eq!(
            queue_of_stream("staging", "staging:{summarize}:stream"),
            Some("summarize")
        );
        assert_eq!(
            queue_of_stream("llmchat", "staging:{summarize}:stream"),
            None
        );
        assert_eq!(queue_of_stream("llmchat", "other"), None);
    }
}
