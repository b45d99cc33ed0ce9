//! Queues with priorities (`priorities = true`) on Redis.
//!
//! A stream hands out entries oldest first, so it cannot put a later job ahead of an earlier
//! one. Such a queue's ready jobs wait instead in a sorted set, by priority then arrival
//! (`scripts::admit`), and a read releases exactly as many as the reader has free slots for,
//! highest first, into the stream and reads them in the same script
//! ([`READ_PRIORITIZED`]): the order is strict across every host, and the stream holds only
//! jobs being delivered, so completing, retrying, reclaiming and finding a job by id work as
//! for any queue.
//!
//! Waking a reader: on a cluster the queue's doorbell rings as for any queue. On one node the
//! reader blocks in one `XREADGROUP` over its queues' streams, where no new entry appears for
//! a job admitted to the sorted set; so a read that finds the set empty puts the reader's own
//! `bell:<consumer>` stream in the queue's `sleepers` set, the next admit adds an entry to the
//! bell of every sleeper (read in the same `XREADGROUP`) and empties the set, and each reader,
//! woken, reads the queue at once and acknowledges its bell in that read. Every waiting host
//! wakes, as every subscriber of a channel would: one bell shared through a consumer group
//! would wake only one, and another host could sleep through a burst. A bell stream expires
//! two minutes after its reader's last read, so a host that died leaves nothing behind.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::{Script, Value};

use super::scripts::READ_PRIORITIZED;
use super::{Delivery, GROUP, QueueError, RedisQueue, entries};
use crate::redis::BLOCK_TIME;

/// Bells kept between a read that woke on them and the read that acknowledges them; beyond
/// it the oldest are left to the stalled-job sweep.
const MAX_BELLS: usize = 1024;

/// Which queues have priorities, and the bells read for them but not yet acknowledged.
#[derive(Default)]
pub(super) struct Priorities {
    queues: RwLock<BTreeSet<String>>,
    /// (queue, bell entry id).
    bells: Mutex<Vec<(String, String)>>,
}

impl Priorities {
    pub fn has(&self, queue: &str) -> bool {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(queue)
    }

    pub fn set(&self, queues: BTreeSet<String>) {
        *self.queues.write().unwrap_or_else(|p| p.into_inner()) = queues;
    }

    fn keep_bells(&self, read: Vec<(String, String)>) {
        if read.is_empty() {
            return;
        }
        let mut bells = self.bells.lock().unwrap_or_else(|p| p.into_inner());
        bells.extend(read);
        let over = bells.len().saturating_sub(MAX_BELLS);
        bells.drain(..over);
    }

    /// The bells kept for `queue`, taken out to be acknowledged.
    fn take_bells(&self, queue: &str) -> Vec<String> {
        let mut bells = self.bells.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        bells.retain(|(q, id)| {
            let ours = q == queue;
            if ours {
                taken.push(id.clone());
            }
            !ours
        });
        taken
    }
}

impl RedisQueue {
    /// The [`READ_PRIORITIZED`] of up to `n` jobs of `queue`: script, keys and arguments.
    pub(super) fn prioritized_read(
        &self,
        queue: &str,
        n: usize,
        flag_ttl: &str,
    ) -> (&'static Script, Vec<String>, Vec<String>) {
        let keys = vec![
            self.key(queue, "stream"),
            self.key(queue, "idle"),
            self.key(queue, "prioritized"),
            self.key(queue, "ids"),
            self.bell_key(queue),
            self.key(queue, "sleepers"),
        ];
        let one_node = !self.pool.is_cluster();
        let mut args = vec![
            GROUP.to_string(),
            self.consumer.clone(),
            n.to_string(),
            flag_ttl.to_string(),
            self.key(queue, "job:"),
            if one_node { "1" } else { "" }.to_string(),
        ];
        if one_node {
            args.extend(self.priorities.take_bells(queue));
        }
        (&READ_PRIORITIZED, keys, args)
    }

    /// One node's receive when some wanted queue has priorities: those are read first (each
    /// by its script); the others are read without waiting when that found jobs, so a busy
    /// queue with priorities does not keep them waiting. With nothing found, one blocking
    /// read waits on the other queues' streams and this reader's bells, and a bell makes the
    /// queues be read again at once.
    pub(super) async fn receive_with_priorities(
        &self,
        wants: &[(String, usize)],
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let (ordered, plain): (Vec<_>, Vec<_>) = wants
            .iter()
            .filter(|(_, n)| *n > 0)
            .cloned()
            .partition(|(q, _)| self.priorities.has(q));
        let deadline = Instant::now() + wait.min(BLOCK_TIME);
        loop {
            let mut got = self.read_each(&ordered).await?;
            if !got.is_empty() {
                if !plain.is_empty() {
                    let reply = self.read_blocking(&plain, &[], Duration::ZERO).await?;
                    got.extend(entries::deliveries(&reply, self.pool.prefix()));
                }
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(got);
            }
            let reply = self.read_blocking(&plain, &ordered, left).await?;
            let got = entries::deliveries(&reply, self.pool.prefix());
            let bells = bells(&reply, self.pool.prefix());
            // Timed out, interrupted, or jobs of the other queues: done. Rung (another
            // host may have taken the job first): read the queues again, until `wait`.
            let rung = !bells.is_empty();
            self.priorities.keep_bells(bells);
            if !got.is_empty() || !rung {
                return Ok(got);
            }
        }
    }
}

/// The bells in an `XREADGROUP` reply: (queue, entry id) of each entry of a `bell:*` stream.
fn bells(reply: &Value, prefix: &str) -> Vec<(String, String)> {
    let streams = entries::streams(reply);
    let mut out = Vec::new();
    for (key, items) in streams {
        let queue = entries::text(key).and_then(|k| {
            let (queue, part) = k
                .strip_prefix(prefix)?
                .strip_prefix(":{")?
                .split_once("}:")?;
            part.starts_with("bell:").then_some(queue)
        });
        let (Some(queue), Value::Array(items)) = (queue, items) else {
            continue;
        };
        out.extend(
            items
                .iter()
                .filter_map(entries::entry)
                .map(|e| (queue.to_string(), e.id.to_string())),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn bells_are_read_from_bell_streams_only() {
        let entry =
            |id: &str| Value::Array(vec![bulk(id), Value::Array(vec![bulk("b"), bulk("")])]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("llmchat:{jobs}:bell:h-1-a"),
                Value::Array(vec![entry("7-0")]),
            ]),
            Value::Array(vec![
                bulk("llmchat:{jobs}:stream"),
                Value::Array(vec![entry("8-0")]),
            ]),
            Value::Array(vec![
                bulk("other:{jobs}:bell:h-1-a"),
                Value::Array(vec![entry("9-0")]),
            ]),
        ]);
        assert_eq!(
            bells(&reply, "llmchat"),
            vec![("jobs".to_string(), "7-0".to_string())]
        );
        assert!(bells(&Value::Nil, "llmchat").is_empty());
    }

    #[test]
    fn bells_are_kept_per_queue_and_bounded() {
        let p = Priorities::default();
        p.keep_bells(vec![("a".into(), "1-0".into()), ("b".into(), "2-0".into())]);
        assert_eq!(p.take_bells("a"), vec!["1-0".to_string()]);
        assert!(p.take_bells("a").is_empty());
        p.keep_bells(
            (0..MAX_BELLS + 5)
                .map(|i| ("c".to_string(), format!("{i}-0")))
                .collect(),
        );
        let kept = p.take_bells("c");
        assert_eq!(kept.len(), MAX_BELLS);
        assert_eq!(kept[0], "5-0", "the oldest were dropped first");
        assert!(p.take_bells("b").is_empty(), "the oldest of all was b's");
    }
}
