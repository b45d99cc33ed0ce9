//! The one place that talks to Redis: a few multiplexed connections for commands, one
//! dedicated connection for blocking reads, and a hard cap on commands in flight.
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

pub use client::redact;

use crate::manifest::RedisSettings;
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

/// The host's Redis access; built once in `main`.
pub struct RedisPool {
    /// For the one pub/sub connection of the deploy watcher (see [`RedisPool::subscribe`]).
    client: redis::Client,
    commands: Vec<ConnectionManager>,
    blocking: ConnectionManager,
    next: AtomicUsize,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    acquire_timeout: Duration,
    command_timeout: Duration,
    /// What every key and channel starts with: `[redis] prefix`.
    prefix: String,
    waiters: AtomicU64,
    waits: AtomicU64,
    wait_micros: AtomicU64,
    timeouts: AtomicU64,
    /// Where waits are observed for `/metrics`, once [`RedisPool::record_waits_in`] is called.
    wait_histogram: OnceLock<Histogram>,
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
    /// Creates the pool. Connections are made lazily and re-made with backoff, so a host
    /// can start while Redis is down and recover when it returns.
    pub fn new(settings: &RedisSettings, url: &str) -> Result<Self> {
        let client = client::client(settings, url)?;
        let config = |response_timeout: Option<Duration>| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout.0))
                .set_response_timeout(response_timeout)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(3)
        };
        let command_timeout = settings.command_timeout.0;
        let commands = (0..settings.connections.max(1))
            .map(|_| {
                ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    config(Some(command_timeout)),
                )
            })
            .collect::<redis::RedisResult<Vec<_>>>()
            .context("creating Redis connections")?;
        let blocking = ConnectionManager::new_lazy_with_config(
            client.clone(),
            config(Some(BLOCK_TIME + command_timeout)),
        )
        .context("creating the blocking Redis connection")?;
        let max_in_flight = settings.max_in_flight as usize;
        Ok(Self {
            client,
            commands,
            blocking,
            next: AtomicUsize::new(0),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            acquire_timeout: settings.acquire_timeout.0,
            command_timeout,
            prefix: settings.prefix.clone(),
            waiters: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            wait_histogram: OnceLock::new(),
        })
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
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let _permit = self.acquire().await?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.commands.len();
        let conn = self.commands[i].clone();
        match crate::timers::timeout(self.command_timeout, f(conn)).await {
            Ok(result) => result.map_err(RedisError::from),
            Err(_) => Err(RedisError::Unavailable(format!(
                "no answer within {:?}",
                self.command_timeout
            ))),
        }
    }

    /// Runs `f` on the dedicated blocking connection (one per host, for reading queues).
    /// It takes no permit: it never competes with commands.
    pub async fn run_blocking<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        f(self.blocking.clone()).await.map_err(RedisError::from)
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
            connections: self.commands.len() as u64 + 1,
            max_in_flight: self.max_in_flight as u64,
            in_flight: (self.max_in_flight - self.permits.available_permits()) as u64,
            waiters: self.waiters.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            wait_micros_total: self.wait_micros.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    /// One PING, for start-up checks and readiness.
    /// A pub/sub connection subscribed to `channel`: the host's fourth and last Redis
    /// connection, held by the deploy watcher only.
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, RedisError> {
        let mut pubsub =
            crate::timers::timeout(self.command_timeout, self.client.get_async_pubsub())
                .await
                .map_err(|_| {
                    RedisError::Unavailable("connecting for pub/sub timed out".into())
                })??;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }

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
