//! (l) What a rate-limit check costs a request (issue 7): the in-memory GCRA (one lock, one
//! map look-up) and the Redis script (one round trip), next to a plain PING on the same
//! pool so the script's own cost shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use llmchat_host::limits::local::LocalRateLimiter;
use llmchat_host::limits::redis::RedisLimiter;
use llmchat_host::limits::{Limit, RateLimiter};
use llmchat_host::manifest::RedisSettings;
use llmchat_host::redis::RedisPool;

use crate::process::RedisServer;

pub struct Results {
    /// ns per check, in memory, over 10,000 client keys.
    pub memory_ns: f64,
    /// µs per check through Redis, and per PING on the same pool, sequential.
    pub redis_us: f64,
    pub ping_us: f64,
}

pub fn measure() -> Result<Results> {
    let limit = Limit {
        rate: "100/min".parse().map_err(anyhow::Error::msg)?,
        burst: 100,
    };
    let memory = LocalRateLimiter::new(100_000);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("route|ip:10.0.{}.{}", i / 256, i % 256))
        .collect();
    let rounds = 2_000_000usize;
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(memory.check_at(
            &keys[i % keys.len()],
            &limit,
            1_000_000_000 + i as u64,
        ));
    }
    let memory_ns = started.elapsed().as_nanos() as f64 / rounds as f64;

    let server = RedisServer::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    // The pool's connections are made on the runtime that uses them.
    let _entered = rt.enter();
    let pool = Arc::new(RedisPool::new(
        &RedisSettings::default(),
        &server.unix_url(),
    )?);
    let redis = RedisLimiter::new(pool.clone());
    let (redis_us, ping_us) = rt.block_on(async {
        let n = 10_000u32;
        for _ in 0..500 {
            redis.check("warm", &limit).await;
            pool.ping().await?;
        }
        let started = Instant::now();
        for i in 0..n {
            std::hint::black_box(redis.check(&keys[i as usize % keys.len()], &limit).await);
        }
        let check = started.elapsed() / n;
        let started = Instant::now();
        for _ in 0..n {
            pool.ping().await?;
        }
        let ping = started.elapsed() / n;
        anyhow::Ok((micros(check), micros(ping)))
    })?;
    Ok(Results {
        memory_ns,
        redis_us,
        ping_us,
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
