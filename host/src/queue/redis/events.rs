//! How a host learns that a watched job changed when another host runs it.
//!
//! The scripts that change a job publish `queue id` on the events channel when the job's
//! entry in the queue's `watched` hash is live (see `scripts::tell_function`): a job nobody
//! watches costs one `HGET` and publishes nothing. This host listens only once something is
//! watched: on one node, one pub/sub connection on `PREFIX:jobs:events`; on a cluster, the
//! shard channel `PREFIX:{q}:events` of each watched queue, on the pool's subscriber
//! connection. A message wakes the job's [`Watchers`]; a lost connection wakes them all
//! (they read the job again), and the listener subscribes again.
//!
//! The listener task belongs to the [`Events`] and ends when it is dropped (with the queue
//! backend).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::queue::QueueError;
use crate::queue::watch::Watchers;
use crate::redis::{Inbox, Message, RedisPool};

/// How long a host's watch of a job lasts in Redis unless it is renewed; the SSE stream
/// renews it well before.
pub(super) const WATCH_TTL: Duration = Duration::from_secs(600);
/// Wait before subscribing again after the connection dropped.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

/// The watched jobs of this host and the listener that wakes them.
pub(super) struct Events {
    pub watchers: Arc<Watchers>,
    /// One node: whether the listener runs. Cluster: the queues whose channel is subscribed.
    listening: Mutex<Listening>,
    inbox: Arc<Inbox>,
    /// Cluster: a subscription was dropped by the server (its slot moved); subscribe again.
    dropped: Arc<AtomicBool>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

#[derive(Default)]
struct Listening {
    started: bool,
    queues: HashSet<String>,
}

impl Default for Events {
    fn default() -> Self {
        let stop = CancellationToken::new();
        Self {
            watchers: Arc::default(),
            listening: Mutex::default(),
            inbox: Arc::default(),
            dropped: Arc::default(),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }
    }
}

/// Wakes the watchers a message concerns: its job's, or all of them after a resync.
fn wake(watchers: &Watchers, message: Message) {
    match message {
        Message::Payload(p) => {
            if let Some((queue, id)) = parse(&p) {
                watchers.notify(queue, id);
            }
        }
        Message::Resync => watchers.notify_all(),
    }
}

/// `queue id` as published, split.
fn parse(payload: &[u8]) -> Option<(&str, &str)> {
    std::str::from_utf8(payload).ok()?.split_once(' ')
}

impl Events {
    /// Makes sure this host hears the events of `queue` (on `channel`), starting the
    /// listener on first use; returns once the subscription is live.
    pub(super) async fn listen(
        &self,
        pool: &Arc<RedisPool>,
        queue: &str,
        channel: String,
    ) -> Result<(), QueueError> {
        let mut listening = self.listening.lock().await;
        if pool.is_cluster() {
            if self.dropped.swap(false, Ordering::Relaxed) {
                listening.queues.clear();
            }
            if !listening.queues.contains(queue) {
                pool.shard_subscribe(std::slice::from_ref(&channel), &self.inbox)
                    .await?;
                listening.queues.insert(queue.to_string());
            }
            if !listening.started {
                listening.started = true;
                self.spawn_shard_reader();
            }
            return Ok(());
        }
        if !listening.started {
            let (ready_tx, ready_rx) = oneshot::channel();
            self.spawn_listener(pool.clone(), channel, ready_tx);
            match ready_rx.await {
                Ok(Ok(())) => listening.started = true,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(QueueError::Unavailable(
                        "the job events listener stopped".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One node: one pub/sub connection for every queue, made again when it drops.
    fn spawn_listener(
        &self,
        pool: Arc<RedisPool>,
        channel: String,
        ready: oneshot::Sender<Result<(), QueueError>>,
    ) {
        let (watchers, inbox, stop) =
            (self.watchers.clone(), self.inbox.clone(), self.stop.clone());
        tokio::spawn(async move {
            let mut ready = Some(ready);
            while !stop.is_cancelled() {
                let mut subscription = match pool.subscribe(&channel, &inbox).await {
                    Ok(s) => s,
                    Err(e) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(e.into()));
                            return;
                        }
                        tokio::select! {
                            () = crate::timers::sleep(RESUBSCRIBE_PAUSE) => continue,
                            () = stop.cancelled() => return,
                        }
                    }
                };
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                } else {
                    // Messages may have been missed while the connection was down.
                    watchers.notify_all();
                }
                loop {
                    tokio::select! {
                        message = subscription.next() => match message {
                            Some(message) => wake(&watchers, message),
                            None => break,
                        },
                        () = stop.cancelled() => return,
                    }
                }
                watchers.notify_all();
                tokio::select! {
                    () = crate::timers::sleep(RESUBSCRIBE_PAUSE) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Cluster: reads the shard channels' inbox. A dropped subscription is made again by the
    /// next `listen` (a new watch, or one renewed); the watchers, woken, read their jobs and
    /// fall back on their periodic re-read meanwhile.
    fn spawn_shard_reader(&self) {
        let (watchers, inbox, stop) =
            (self.watchers.clone(), self.inbox.clone(), self.stop.clone());
        let dropped = self.dropped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = inbox.next() => match message {
                        Some(message) => wake(&watchers, message),
                        None => {
                            dropped.store(true, Ordering::Relaxed);
                            watchers.notify_all();
                        }
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_queue_and_the_job() {
        assert_eq!(parse(b"summaries 0af3"), Some(("summaries", "0af3")));
        assert_eq!(parse(b"nospace"), None);
    }
}
