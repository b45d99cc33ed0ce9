//! Pub/sub for the pool, on one node or a cluster, behind one [`Subscription`].
//!
//! On one node a subscription is its own pub/sub connection (`SUBSCRIBE`). On a cluster,
//! channels are *shard* channels (`SSUBSCRIBE`, Redis 7): each lives on the master of its
//! slot, and the pool's subscriber connection delivers their messages as RESP3 pushes to
//! the [`Router`], which hands each to the [`Inbox`] of its channel. When a node's
//! connection closes (it may have failed over) every inbox is marked dropped and resynced:
//! its subscriber subscribes again and reads the truth from Redis, as messages may have
//! been missed meanwhile.
//!
//! Every inbox is bounded ([`CAPACITY`] messages): a subscriber that falls further behind
//! gets one `Resync` instead of the backlog, and reads the truth from Redis again.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

/// Messages an inbox holds before it gives up on them and asks for a resync.
pub const CAPACITY: usize = 64;

/// What a subscriber reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A message published on the channel.
    Payload(Vec<u8>),
    /// Messages may have been missed (a reconnect, a failover, or a full inbox): read the
    /// state again from Redis.
    Resync,
}

/// Where a cluster's pushes for some channels are kept until their subscriber reads them.
/// One subscriber per inbox; several channels may share one (the queue doorbells do).
#[derive(Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    changed: Notify,
}

#[derive(Default)]
struct InboxState {
    messages: VecDeque<Vec<u8>>,
    resync: bool,
    /// The server dropped a subscription (its slot moved): subscribe again.
    dropped: bool,
}

impl Inbox {
    fn state(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<R>(&self, f: impl FnOnce(&mut InboxState) -> R) -> R {
        let r = f(&mut self.state());
        self.changed.notify_one();
        r
    }

    fn deliver(&self, payload: Vec<u8>) {
        self.with(|s| {
            if s.messages.len() >= CAPACITY {
                s.messages.clear();
                s.resync = true;
            } else {
                s.messages.push_back(payload);
            }
        });
    }

    /// Marks that messages may have been missed.
    pub fn resync(&self) {
        self.with(|s| s.resync = true);
    }

    fn drop_subscription(&self) {
        self.with(|s| s.dropped = true);
    }

    /// Wakes the subscriber without a message (for example to end a wait early).
    pub fn wake(&self) {
        self.changed.notify_one();
    }

    /// The next message, or `None` when the subscription was dropped by the server and must
    /// be made again. Waits for one.
    pub async fn next(&self) -> Option<Message> {
        loop {
            let notified = self.changed.notified();
            if let Some(taken) = self.try_next() {
                return taken;
            }
            notified.await;
        }
    }

    /// `Some(next)` if something is there now, without waiting.
    fn try_next(&self) -> Option<Option<Message>> {
        let mut s = self.state();
        if s.dropped {
            s.dropped = false;
            return Some(None);
        }
        if s.resync {
            s.resync = false;
            s.messages.clear();
            return Some(Some(Message::Resync));
        }
        s.messages.pop_front().map(|m| Some(Message::Payload(m)))
    }

    /// Whether the server dropped a subscription since the last call (it must be made
    /// again); clears that mark.
    pub fn take_dropped(&self) -> bool {
        std::mem::take(&mut self.state().dropped)
    }

    /// Empties the inbox of messages and resyncs (not of a drop: see
    /// [`Inbox::take_dropped`]); true if anything was there.
    pub fn drain(&self) -> bool {
        let mut s = self.state();
        let any = s.resync || !s.messages.is_empty();
        s.messages.clear();
        s.resync = false;
        drop(s);
        // A wake-up stored for what was just drained would end the next wait for nothing.
        let _ = futures::FutureExt::now_or_never(self.changed.notified());
        any
    }

    /// Waits until something arrives or [`Inbox::wake`] is called (at once if that happened
    /// since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// The cluster connection's push sender: hands each shard message to its channel's inbox.
/// It never blocks the connection: delivering is a short lock and a bounded push.
#[derive(Default)]
pub struct Router {
    inboxes: Mutex<HashMap<Vec<u8>, Arc<Inbox>>>,
}

impl Router {
    pub fn register(&self, channel: &str, inbox: Arc<Inbox>) {
        self.lock().insert(channel.as_bytes().to_vec(), inbox);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Inbox>>> {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inbox_of(&self, channel: Option<&Value>) -> Option<Arc<Inbox>> {
        let Some(Value::BulkString(name)) = channel else {
            return None;
        };
        self.lock().get(name).cloned()
    }

    /// Handles one push; never fails (unknown pushes are ignored).
    pub fn route(&self, push: PushInfo) {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                if let (Some(inbox), Some(Value::BulkString(payload))) =
                    (self.inbox_of(push.data.first()), push.data.get(1))
                {
                    inbox.deliver(payload.clone());
                }
            }
            // A (re)subscription: after a reconnect or failover messages may be missing.
            PushKind::SSubscribe | PushKind::Subscribe => {
                if let Some(inbox) = self.inbox_of(push.data.first()) {
                    inbox.resync();
                }
            }
            // Sent by the server when the channel's slot moved to another master.
            PushKind::SUnsubscribe => {
                if let Some(inbox) = self.inbox_of(push.data.first()) {
                    inbox.drop_subscription();
                }
            }
            // A node's connection closed: it may be gone for good (failed over), and whether
            // the cluster connection re-subscribes on its successor is not ours to assume, so
            // every subscriber subscribes again (harmless where it still is) and resyncs.
            PushKind::Disconnection => {
                let inboxes: Vec<Arc<Inbox>> = self.lock().values().cloned().collect();
                for inbox in inboxes {
                    inbox.with(|s| {
                        s.resync = true;
                        s.dropped = true;
                    });
                }
            }
            _ => {}
        }
    }
}

/// One channel's messages, on one node or a cluster.
pub enum Subscription {
    /// A pub/sub connection of its own (one node).
    Connection(Pin<Box<dyn Stream<Item = redis::Msg> + Send>>),
    /// A shard channel's inbox (cluster).
    Shard(Arc<Inbox>),
}

impl Subscription {
    /// The next message; `None` when the subscription ended (its connection closed, or the
    /// server dropped it) and must be made again.
    pub async fn next(&mut self) -> Option<Message> {
        match self {
            Subscription::Connection(messages) => messages
                .next()
                .await
                .map(|m| Message::Payload(m.get_payload_bytes().to_vec())),
            Subscription::Shard(inbox) => inbox.next().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, channel: &str, payload: Option<&str>) -> PushInfo {
        let mut data = vec![Value::BulkString(channel.as_bytes().to_vec())];
        if let Some(p) = payload {
            data.push(Value::BulkString(p.as_bytes().to_vec()));
        }
        PushInfo { kind, data }
    }

    #[tokio::test]
    async fn messages_reach_their_channels_inbox_in_order() {
        let router = Router::default();
        let inbox = Arc::new(Inbox::default());
        router.register("deploy", inbox.clone());
        router.route(push(PushKind::SMessage, "other", Some("x")));
        router.route(push(PushKind::SMessage, "deploy", Some("a")));
        router.route(push(PushKind::SMessage, "deploy", Some("b")));
        assert_eq!(inbox.next().await, Some(Message::Payload(b"a".to_vec())));
        assert_eq!(inbox.next().await, Some(Message::Payload(b"b".to_vec())));
        assert!(!inbox.drain(), "the other channel's message went nowhere");
    }

    #[tokio::test]
    async fn a_full_inbox_or_a_resubscription_asks_for_a_resync_not_a_backlog() {
        let router = Router::default();
        let inbox = Arc::new(Inbox::default());
        router.register("c", inbox.clone());
        for i in 0..=CAPACITY {
            router.route(push(PushKind::SMessage, "c", Some(&i.to_string())));
        }
        assert_eq!(inbox.next().await, Some(Message::Resync));
        assert!(!inbox.drain(), "the backlog was dropped with the resync");
        router.route(push(PushKind::SSubscribe, "c", None));
        assert_eq!(inbox.next().await, Some(Message::Resync));
        router.route(push(PushKind::SUnsubscribe, "c", None));
        assert_eq!(inbox.next().await, None, "a dropped subscription ends it");
        router.route(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert_eq!(inbox.next().await, None, "a lost node ends it too");
        assert_eq!(
            inbox.next().await,
            Some(Message::Resync),
            "then asks for a resync"
        );
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let inbox = Inbox::default();
        inbox.wake();
        crate::timers::timeout(std::time::Duration::from_secs(5), inbox.changed())
            .await
            .expect("the stored wake-up ends the wait at once");
    }

    #[tokio::test]
    async fn a_drain_takes_the_wake_up_of_what_it_drained() {
        let router = Router::default();
        let inbox = Arc::new(Inbox::default());
        router.register("c", inbox.clone());
        router.route(push(PushKind::SMessage, "c", Some("x")));
        assert!(inbox.drain());
        let waited =
            crate::timers::timeout(std::time::Duration::from_millis(50), inbox.changed()).await;
        assert!(
            waited.is_err(),
            "nothing new arrived, so the wait runs its course"
        );
    }
}
