//! The one place that talks to Redis: a few multiplexed connections for commands, one
//! dedicated connection for blocking reads, and a hard cap on commands in flight. On a
//! Redis Cluster (`[redis] mode`), each command connection is a cluster connection (one
//! multiplexed connection per master, routed by slot), there is no blocking connection
//! (a blocking read cannot span slots), and pub/sub uses shard channels ([`pushes`]) on a
//! cluster connection of its own.
//!
//! Every command takes a permit from a semaphore of `max_in_flight`, waits at most
//! `acquire_timeout` for one, and otherwise fails with a clear [`RedisError::Unavailable`]
//! (HTTP 503 upstream). Connections reconnect with backoff on their own; while Redis is gone
//! commands fail fast and nothing crashes. [`PoolStats`] reads can never show more in use
//! than the cap, because in-use *is* the semaphore.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::metrics::histogram::Histogram;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Semaphore;

mod client;
mod conn;
pub mod pushes;

pub use client::redact;
pub use conn::Conn;
pub use pushes::{Inbox, Message, Subscription};

use crate::manifest::{RedisMode, RedisSettings, redis_seeds};
use crate::metrics::{PoolCounts, PoolSource};

/// Why a Redis call failed, as callers need to branch on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Redis is unreachable, too slow, or the pool is saturated: retry later.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error about this command (wrong type, bad value, ...).
    #[error("redis error: {0}")]
    Command(String),
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_connection_refusal()
        {
            RedisError::Unavailable(e.to_string())
        } else {
            RedisError::Command(e.to_string())
        }
    }
}

/// A snapshot of the pool, for metrics and `llmchat queues`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Connections the host holds: command connections plus the blocking reader.
    pub connections: u64,
    pub max_in_flight: u64,
    pub in_flight: u64,
    pub waiters: u64,
    /// Commands that had to wait for a permit, and their total wait.
    pub waits: u64,
    pub wait_micros_total: u64,
    /// Commands refused because no permit came within `acquire_timeout`.
    pub timeouts: u64,
}

/// The connections, to one node or to a cluster.
#[expect(
    clippy::large_enum_variant,
    reason = "one per pool, built once: boxing would only add an indirection per command"
)]
enum Links {
    Single {
        /// For the one pub/sub connection of the deploy watcher (see [`RedisPool::subscribe`]).
        client: redis::Client,
        commands: Vec<ConnectionManager>,
        blocking: ConnectionManager,
    },
    Cluster {
        commands: Vec<redis::cluster_async::ClusterConnection>,
        /// The subscriptions' own connection (one per master it subscribes on), apart from
        /// the commands: its pushes never share a socket with command replies.
        subscriber: redis::cluster_async::ClusterConnection,
        /// Where the subscriber's shard-channel pushes go.
        router: Arc<pushes::Router>,
    },
}

/// The host's Redis access; built once in `main`.
pub struct RedisPool {
    links: Links,
    next: AtomicUsize,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    acquire_timeout: Duration,
    command_timeout: Duration,
    /// What every key and channel starts with: `[redis] prefix`.
    prefix: String,
    /// `[redis] replica_acks` and `replica_timeout`: see [`RedisPool::run_durable`].
    replica_acks: u32,
    replica_timeout: Duration,
    /// With `replica_acks` (and only then): the connection durable writes and their `WAIT`s
    /// go through. A connection in `WAIT` reads nothing else until it answers, so they get
    /// their own, and the commands of other work never queue behind a replica's round trip.
    durable: Option<Conn>,
    waiters: AtomicU64,
    waits: AtomicU64,
    wait_micros: AtomicU64,
    timeouts: AtomicU64,
    /// Where waits are observed for `/metrics`, once [`RedisPool::record_waits_in`] is called.
    wait_histogram: OnceLock<Histogram>,
}

/// How a connection to one node connects, times out and reconnects.
fn single_config(
    settings: &RedisSettings,
    response_timeout: Option<Duration>,
) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout.0))
        .set_response_timeout(response_timeout)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(3)
}

/// How long a blocking read may block; also how often an idle host sends it.
pub const BLOCK_TIME: Duration = Duration::from_secs(10);

/// What `/metrics` reads at scrape time, and where the pool's waits are observed.
impl PoolSource for RedisPool {
    fn pool_counts(&self) -> PoolCounts {
        let s = self.stats();
        PoolCounts {
            connections: s.connections,
            in_flight: s.in_flight,
            max_in_flight: s.max_in_flight,
            waiters: s.waiters,
            waits: s.waits,
            timeouts: s.timeouts,
        }
    }

    fn record_waits_in(&self, histogram: Histogram) {
        RedisPool::record_waits_in(self, histogram);
    }
}

impl RedisPool {
    /// Creates the pool for the mode `settings` name, or, for `auto`, the mode the URL
    /// implies: several seeds are a cluster, and one node is asked (`INFO cluster`) once. A
    /// node that cannot be asked yet is taken as a single Redis, with a warning.
    pub async fn open(settings: &RedisSettings, url: &str) -> Result<Self> {
        let cluster = match settings.mode {
            RedisMode::Single => false,
            RedisMode::Cluster => true,
            RedisMode::Auto if redis_seeds(url).len() > 1 => true,
            RedisMode::Auto => match client::cluster_enabled(settings, url).await {
                Ok(enabled) => enabled,
                Err(e) => {
                    tracing::warn!(
                        url = %redact(url),
                        "cannot ask Redis whether it is a cluster ({e:#}); taking it as one node: \
                         set [redis] mode to say which"
                    );
                    false
                }
            },
        };
        Self::with_mode(settings, url, cluster)
    }

    /// Creates the pool for one node, or for a cluster when `url` names several seeds
    /// (without asking Redis: see [`RedisPool::open`]).
    pub fn new(settings: &RedisSettings, url: &str) -> Result<Self> {
        let cluster = settings.mode == RedisMode::Cluster || redis_seeds(url).len() > 1;
        Self::with_mode(settings, url, cluster)
    }

    /// Connections are made lazily and re-made with backoff, so a host can start while
    /// Redis is down and recover when it returns.
    fn with_mode(settings: &RedisSettings, url: &str, cluster: bool) -> Result<Self> {
        let (links, durable) = if cluster {
            Self::cluster(settings, url)?
        } else {
            Self::single(settings, url)?
        };
        let max_in_flight = settings.max_in_flight as usize;
        Ok(Self {
            links,
            next: AtomicUsize::new(0),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            acquire_timeout: settings.acquire_timeout.0,
            command_timeout: settings.command_timeout.0,
            prefix: settings.prefix.clone(),
            replica_acks: settings.replica_acks,
            replica_timeout: settings.replica_timeout.0,
            durable,
            waiters: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            wait_histogram: OnceLock::new(),
        })
    }

    /// One node's connections, and the one for durable writes if `replica_acks` asks.
    fn single(settings: &RedisSettings, url: &str) -> Result<(Links, Option<Conn>)> {
        let client = client::client(settings, url)?;
        let command_timeout = settings.command_timeout.0;
        let connect = |response_timeout: Duration| {
            ConnectionManager::new_lazy_with_config(
                client.clone(),
                single_config(settings, Some(response_timeout)),
            )
        };
        let commands = (0..settings.connections.max(1))
            .map(|_| connect(command_timeout))
            .collect::<redis::RedisResult<Vec<_>>>()
            .context("creating Redis connections")?;
        let blocking = connect(BLOCK_TIME + command_timeout)
            .context("creating the blocking Redis connection")?;
        let durable = (settings.replica_acks > 0)
            .then(|| connect(command_timeout).map(Conn::Single))
            .transpose()
            .context("creating the Redis connection for durable writes")?;
        let links = Links::Single {
            client,
            commands,
            blocking,
        };
        Ok((links, durable))
    }

    /// A cluster's connections: commands (RESP2), durable writes if `replica_acks` asks,
    /// and the subscriber (RESP3, its pushes handed to the router).
    fn cluster(settings: &RedisSettings, url: &str) -> Result<(Links, Option<Conn>)> {
        let router = Arc::new(pushes::Router::default());
        let client = client::cluster_client(settings, url, None)?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(settings.connect_timeout.0)
            .set_response_timeout(settings.command_timeout.0);
        let connect = || client.get_pending_async_connection_with_config(config.clone());
        let commands = (0..settings.connections.max(1))
            .map(|_| connect())
            .collect();
        let durable = (settings.replica_acks > 0).then(|| Conn::Cluster(connect()));
        let subscriber = client::cluster_client(settings, url, Some(router.clone()))?
            .get_pending_async_connection_with_config(config.clone());
        let links = Links::Cluster {
            commands,
            subscriber,
            router,
        };
        Ok((links, durable))
    }

    /// Whether this is a Redis Cluster: no command may touch two slots, blocking reads
    /// cannot span queues, and pub/sub is sharded.
    pub fn is_cluster(&self) -> bool {
        matches!(self.links, Links::Cluster { .. })
    }

    /// What every key and channel of this application starts with (`[redis] prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `PREFIX:rest`: the name of a key or channel of this application. `rest` is any
    /// `Display` (e.g. `format_args!`), so a key costs one allocation, on the kv and rate
    /// limit paths too.
    pub fn key(&self, rest: impl std::fmt::Display) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// Observes, from now on, how long each command that found every slot busy waited
    /// (those that gave up included). Commands that get a slot at once cost nothing more.
    /// Only the first histogram given is used.
    pub fn record_waits_in(&self, histogram: Histogram) {
        let _ = self.wait_histogram.set(histogram);
    }

    /// Runs `f` on a command connection under a permit and the command timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = match &self.links {
            Links::Single { commands, .. } => Conn::Single(commands[i % commands.len()].clone()),
            Links::Cluster { commands, .. } => Conn::Cluster(commands[i % commands.len()].clone()),
        };
        self.run_on(conn, f).await
    }

    /// Runs `f` on `conn` under a permit and the command timeout.
    async fn run_on<T, F, Fut>(&self, conn: Conn, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let _permit = self.acquire().await?;
        match crate::timers::timeout(self.command_timeout, f(conn)).await {
            Ok(result) => result.map_err(RedisError::from),
            Err(_) => Err(RedisError::Unavailable(format!(
                "no answer within {:?}",
                self.command_timeout
            ))),
        }
    }

    /// Runs the write `f` like [`RedisPool::run`]; with `[redis] replica_acks`, answers only
    /// once that many replicas of `key`'s master hold it (`WAIT` on the same connection).
    /// If they do not within `replica_timeout`, the write stands but the call fails
    /// `unavailable`: the caller may retry (at-least-once), and nothing acknowledged is lost
    /// with a master that dies before replicating.
    pub async fn run_durable<T, F, Fut>(&self, key: &str, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(durable) = self.durable.clone() else {
            return self.run(f).await;
        };
        let (wanted, timeout) = (self.replica_acks, self.replica_timeout);
        let (value, acked) = self
            .run_on(durable, |mut c| async move {
                let value = f(c.clone()).await?;
                let acked = c.wait_for_replicas(key, wanted, timeout).await?;
                Ok((value, acked))
            })
            .await?;
        if acked < wanted {
            return Err(RedisError::Unavailable(format!(
                "written, but {acked} of the {wanted} replicas required ([redis] replica_acks) \
                 had it within {timeout:?}"
            )));
        }
        Ok(value)
    }

    /// Runs `f` on the dedicated blocking connection (one per host, for reading queues).
    /// It takes no permit: it never competes with commands. A cluster has none (a blocking
    /// read cannot span slots): the queues wait on shard-channel doorbells there.
    pub async fn run_blocking<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match &self.links {
            Links::Single { blocking, .. } => f(Conn::Single(blocking.clone()))
                .await
                .map_err(RedisError::from),
            Links::Cluster { .. } => Err(RedisError::Command(
                "a Redis Cluster has no blocking connection".into(),
            )),
        }
    }

    async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RedisError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let started = Instant::now();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let result =
            crate::timers::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await;
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        let waited = started.elapsed();
        self.wait_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        if let Some(histogram) = self.wait_histogram.get() {
            histogram.observe(waited.as_secs_f64());
        }
        match result {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(RedisError::Unavailable(format!(
                    "all {} Redis command slots stayed busy for {:?}",
                    self.max_in_flight, self.acquire_timeout
                )))
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            connections: match &self.links {
                Links::Single { commands, .. } => commands.len() as u64 + 1,
                // Per master: the command connections, and the subscriber's.
                Links::Cluster { commands, .. } => commands.len() as u64 + 1,
            } + u64::from(self.durable.is_some()),
            max_in_flight: self.max_in_flight as u64,
            in_flight: (self.max_in_flight - self.permits.available_permits()) as u64,
            waiters: self.waiters.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            wait_micros_total: self.wait_micros.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    /// Messages published on `channel` (see [`RedisPool::publish_command`]): on one node a
    /// pub/sub connection of its own (the deploy watcher's, the host's last connection); on
    /// a cluster a shard channel on the subscriber connection, read through `inbox`.
    pub async fn subscribe(
        &self,
        channel: &str,
        inbox: &Arc<Inbox>,
    ) -> Result<Subscription, RedisError> {
        match &self.links {
            Links::Single { client, .. } => {
                let mut pubsub =
                    crate::timers::timeout(self.command_timeout, client.get_async_pubsub())
                        .await
                        .map_err(|_| {
                            RedisError::Unavailable("connecting for pub/sub timed out".into())
                        })??;
                pubsub.subscribe(channel).await?;
                Ok(Subscription::Connection(Box::pin(pubsub.into_on_message())))
            }
            Links::Cluster { .. } => {
                self.shard_subscribe(&[channel.to_string()], inbox).await?;
                Ok(Subscription::Shard(inbox.clone()))
            }
        }
    }

    /// Subscribes the cluster connection to shard `channels`, delivering into `inbox`.
    /// Each channel is its own `SSUBSCRIBE`: one command may not span slots.
    pub async fn shard_subscribe(
        &self,
        channels: &[String],
        inbox: &Arc<Inbox>,
    ) -> Result<(), RedisError> {
        let Links::Cluster {
            subscriber, router, ..
        } = &self.links
        else {
            return Err(RedisError::Command(
                "shard channels are for a Redis Cluster".into(),
            ));
        };
        let mut conn = subscriber.clone();
        for channel in channels {
            router.register(channel, inbox.clone());
            crate::timers::timeout(self.command_timeout, conn.ssubscribe(channel))
                .await
                .map_err(|_| {
                    RedisError::Unavailable(format!("subscribing to {channel} timed out"))
                })??;
        }
        Ok(())
    }

    /// The command that publishes on a channel [`RedisPool::subscribe`] reads:
    /// `SPUBLISH` on a cluster, `PUBLISH` on one node.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// One PING, for start-up checks and readiness.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run(|mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }
}
