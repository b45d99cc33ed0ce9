//! How a cluster's readers wait: a queue is read without blocking (a cluster refuses a
//! blocking read over several slots), and a reader that found its queues empty waits for
//! their doorbell (see `scripts`): a message on a queue's shard channel, published by the
//! next add after an empty read. A queue read empty is not read again before a ring, a
//! resubscription, or [`DOORBELL_POLL`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::scripts::READ;
use super::{Delivery, GROUP, QueueError, RedisQueue, entries};
use crate::redis::{BLOCK_TIME, Inbox, RedisError};

/// How often a cluster reader polls while a queue's doorbell cannot be subscribed.
const DOORBELL_DOWN_POLL: Duration = Duration::from_millis(500);
/// How often a cluster reader reads an idle queue whose doorbell is subscribed: a safety net
/// only, as every add rings, and a resubscription makes every queue be read again.
const DOORBELL_POLL: Duration = Duration::from_secs(60);

/// A cluster reader's doorbell: where every queue's ring arrives, and what the reader keeps
/// between its reads.
#[derive(Default)]
pub(super) struct Doorbell {
    inbox: Arc<Inbox>,
    /// The queues whose channel is subscribed.
    subscribed: Mutex<HashSet<String>>,
    /// Set by [`Doorbell::interrupt`], to end the wait.
    interrupted: AtomicBool,
    /// When each queue was last read empty (its idle flag set then).
    quiet: Mutex<HashMap<String, Instant>>,
}

impl Doorbell {
    /// Ends the reader's wait at once, as `QueueBackend::interrupt_receive` asks.
    pub(super) fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.inbox.wake();
    }

    fn quiet(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.quiet.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribed(&self) -> MutexGuard<'_, HashSet<String>> {
        self.subscribed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RedisQueue {
    /// A cluster's receive: no command may block on several slots, so each wanted queue is
    /// read without blocking ([`READ`], which sets the queue's idle flag when it finds
    /// nothing); when all are empty the reader waits for a doorbell and reads again, until
    /// `wait` ends or it is interrupted. A queue read empty is not read again before a ring
    /// or [`DOORBELL_POLL`]: idle, one read per queue a minute.
    pub(super) async fn receive_by_doorbell(
        &self,
        wants: &[(String, usize)],
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait.min(BLOCK_TIME);
        self.doorbell.interrupted.store(false, Ordering::Relaxed);
        loop {
            // The doorbells only save polling: while one cannot be subscribed (its master is
            // failing over), the queues are read anyway, and polled every DOORBELL_DOWN_POLL.
            let ringing = match self.subscribe_doorbells(wants).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("queue doorbells not subscribed yet, polling: {e}");
                    false
                }
            };
            // Rings from before these reads are answered by them: every queue is read again.
            if self.doorbell.inbox.drain() || !ringing {
                self.doorbell.quiet().clear();
            }
            let now = Instant::now();
            let due: Vec<(String, usize)> = {
                let quiet = self.doorbell.quiet();
                wants
                    .iter()
                    .filter(|(q, n)| {
                        *n > 0 && quiet.get(q).is_none_or(|t| now - *t >= DOORBELL_POLL)
                    })
                    .cloned()
                    .collect()
            };
            let deliveries = if due.is_empty() {
                Vec::new()
            } else {
                self.read_each(&due).await?
            };
            {
                let mut quiet = self.doorbell.quiet();
                for (q, _) in &due {
                    if deliveries.iter().any(|d| &d.job.queue == q) {
                        quiet.remove(q);
                    } else {
                        quiet.insert(q.clone(), now);
                    }
                }
            }
            if !deliveries.is_empty() || self.doorbell.interrupted.swap(false, Ordering::Relaxed) {
                return Ok(deliveries);
            }
            let mut left = deadline.saturating_duration_since(Instant::now());
            if !ringing {
                left = left.min(DOORBELL_DOWN_POLL);
            }
            // A quiet queue is read again once its poll is due, doorbell or not.
            if let Some(first) = self.doorbell.quiet().values().min() {
                left = left.min((*first + DOORBELL_POLL).saturating_duration_since(Instant::now()));
            }
            if left.is_zero()
                || crate::timers::timeout(left, self.doorbell.inbox.changed())
                    .await
                    .is_err()
                || self.doorbell.interrupted.swap(false, Ordering::Relaxed)
            {
                return Ok(Vec::new());
            }
        }
    }

    /// One non-blocking [`READ`] (or `READ_PRIORITIZED`, for a queue with priorities) per
    /// wanted queue (each wanting at least one job), all at once. What was read is returned even if another queue's read failed; an error only
    /// when nothing was read.
    pub(super) async fn read_each(
        &self,
        wants: &[(String, usize)],
    ) -> Result<Vec<Delivery>, QueueError> {
        // Long enough that the flag outlives a reader's wait (a cluster's poll, one node's
        // blocking read) and short enough that a reader gone for good leaves none for long.
        let flag_ttl = (DOORBELL_POLL * 2).as_millis().to_string();
        let reads = wants.iter().map(|(q, n)| {
            let (script, keys, args) = if self.priorities.has(q) {
                self.prioritized_read(q, *n, &flag_ttl)
            } else {
                let keys = vec![self.key(q, "stream"), self.key(q, "idle")];
                let args = vec![
                    GROUP.to_string(),
                    self.consumer.clone(),
                    n.to_string(),
                    flag_ttl.clone(),
                ];
                (&*READ, keys, args)
            };
            async move {
                let read = self
                    .pool
                    .run(|mut c| async move {
                        let mut inv = script.prepare_invoke();
                        for k in &keys {
                            inv.key(k);
                        }
                        for a in &args {
                            inv.arg(a);
                        }
                        inv.invoke_async::<redis::Value>(&mut c).await
                    })
                    .await;
                match read {
                    Err(RedisError::Command(m)) if m.contains("NOGROUP") => {
                        self.ensure_group(q).await?;
                        Ok(redis::Value::Nil)
                    }
                    other => other.map_err(QueueError::from),
                }
            }
        });
        let mut deliveries = Vec::new();
        let mut failure = None;
        for reply in futures::future::join_all(reads).await {
            match reply {
                Ok(reply) => deliveries.extend(entries::deliveries(&reply, self.pool.prefix())),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if deliveries.is_empty() => Err(e),
            _ => Ok(deliveries),
        }
    }

    /// Subscribes to the doorbell of each wanted queue not subscribed yet (again after the
    /// server dropped a subscription because its slot moved).
    async fn subscribe_doorbells(&self, wants: &[(String, usize)]) -> Result<(), QueueError> {
        if self.doorbell.inbox.take_dropped() {
            self.doorbell.subscribed().clear();
        }
        let missing: Vec<(String, String)> = {
            let subscribed = self.doorbell.subscribed();
            wants
                .iter()
                .filter(|(q, _)| !subscribed.contains(q))
                .map(|(q, _)| (q.clone(), self.key(q, "wake")))
                .collect()
        };
        for (queue, channel) in missing {
            self.pool
                .shard_subscribe(std::slice::from_ref(&channel), &self.doorbell.inbox)
                .await?;
            self.doorbell.subscribed().insert(queue);
        }
        Ok(())
    }
}
