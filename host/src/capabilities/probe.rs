//! `llmchat:runtime/probe`: measurements for monitors. A monitor learns how fast Redis and
//! the llm provider answer and how long the queues are, without being granted either.

use std::time::Instant;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::probe::{self, ProbeError, QueueBacklog};

/// Longest a probe waits; a monitor's tick has its own timeout on top.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl probe::Host for &mut CapabilityCtx {
    async fn redis_latency(&mut self) -> wasmtime::Result<Result<u64, ProbeError>> {
        let Some(pool) = &self.services.redis else {
            return Ok(Err(ProbeError::NotConfigured(
                "no Redis is configured: kv and queues are in memory".into(),
            )));
        };
        let started = Instant::now();
        Ok(
            match crate::timers::timeout(PROBE_TIMEOUT, pool.ping()).await {
                Ok(Ok(())) => Ok(started.elapsed().as_micros() as u64),
                Ok(Err(e)) => Err(ProbeError::Unavailable(format!("Redis: {e}"))),
                Err(_) => Err(ProbeError::Unavailable(format!(
                    "Redis: no answer within {PROBE_TIMEOUT:?}"
                ))),
            },
        )
    }

    async fn queues(&mut self) -> wasmtime::Result<Result<Vec<QueueBacklog>, ProbeError>> {
        let queues = &self.services.queues;
        let mut backlog = Vec::new();
        for name in queues.names() {
            let stats =
                match crate::timers::timeout(PROBE_TIMEOUT, queues.backend().stats(&name)).await {
                    Ok(Ok(stats)) => stats,
                    Ok(Err(e)) => {
                        return Ok(Err(ProbeError::Unavailable(format!("queue `{name}`: {e}"))));
                    }
                    Err(_) => {
                        return Ok(Err(ProbeError::Unavailable(format!(
                            "queue `{name}`: no answer within {PROBE_TIMEOUT:?}"
                        ))));
                    }
                };
            backlog.push(QueueBacklog {
                queue: name,
                waiting: stats.waiting,
                in_flight: stats.in_flight,
                delayed: stats.delayed,
                dead: stats.dead,
            });
        }
        Ok(Ok(backlog))
    }

    async fn llm_latency(&mut self) -> wasmtime::Result<Result<u64, ProbeError>> {
        let started = Instant::now();
        Ok(
            match crate::timers::timeout(PROBE_TIMEOUT, self.services.llm.probe()).await {
                Ok(Ok(())) => Ok(started.elapsed().as_micros() as u64),
                Ok(Err(e)) => Err(ProbeError::Unavailable(format!(
                    "llm provider `{}`: {e}",
                    self.services.llm.name()
                ))),
                Err(_) => Err(ProbeError::Unavailable(format!(
                    "llm provider `{}`: no answer within {PROBE_TIMEOUT:?}",
                    self.services.llm.name()
                ))),
            },
        )
    }
}
