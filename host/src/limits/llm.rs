//! The host's LLM quotas: how many LLM calls run at once, host-wide and per component, with
//! a bounded wait; and the tokens each component used, in /metrics.
//!
//! A call over the limit waits at most `[quotas] llm_wait` for a turn, then fails with the
//! WIT `unavailable` error naming the limit, which a component turns into a clear answer.
//! A streamed completion holds its turn until the stream is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::manifest::QuotaSettings;
use crate::metrics::{AgentTokenLabels, TokenLabels};

/// Distinct agents with their own token series; beyond it, they count as `other`.
const MAX_AGENT_SERIES: usize = 256;

/// The turns of LLM calls, and the token counters.
pub struct LlmGate {
    host: Arc<Semaphore>,
    host_limit: u32,
    per_component: u32,
    components: Mutex<HashMap<String, Arc<Semaphore>>>,
    wait: Duration,
    tokens: Family<TokenLabels, Counter>,
    agent_tokens: Family<AgentTokenLabels, Counter>,
    agents_seen: Mutex<std::collections::HashSet<String>>,
    budgets: Vec<super::Limit>,
    limiter: Arc<dyn super::RateLimiter>,
}

/// A turn: held while the call (or its stream) lasts.
pub struct LlmTurn {
    _host: OwnedSemaphorePermit,
    _component: OwnedSemaphorePermit,
}

impl LlmGate {
    pub fn new(
        settings: &QuotaSettings,
        tokens: Family<TokenLabels, Counter>,
        agent_tokens: Family<AgentTokenLabels, Counter>,
        limiter: Arc<dyn super::RateLimiter>,
    ) -> Self {
        Self {
            agent_tokens,
            agents_seen: Mutex::default(),
            budgets: settings
                .agent_tokens
                .iter()
                .map(|&rate| super::Limit {
                    rate,
                    burst: rate.count,
                })
                .collect(),
            limiter,
            host: Arc::new(Semaphore::new(settings.llm_concurrency as usize)),
            host_limit: settings.llm_concurrency,
            per_component: settings.llm_concurrency_per_component,
            components: Mutex::default(),
            wait: settings.llm_wait.0,
            tokens,
        }
    }

    /// Waits (at most `llm_wait`) for a turn of `component`; the error names the limit.
    pub async fn turn(&self, component: &str) -> Result<LlmTurn, String> {
        let mine = {
            let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
            components
                .entry(component.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_component as usize)))
                .clone()
        };
        let wait = self.wait;
        let component_turn = crate::timers::timeout(wait, mine.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                format!(
                    "component `{component}` has {} LLM calls running, its limit ([quotas] llm_concurrency_per_component); waited {wait:?}",
                    self.per_component
                )
            })?;
        let host_turn = crate::timers::timeout(wait, self.host.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                format!(
                    "the host has {} LLM calls running, its limit ([quotas] llm_concurrency); waited {wait:?}",
                    self.host_limit
                )
            })?;
        Ok(LlmTurn {
            _host: host_turn,
            _component: component_turn,
        })
    }

    /// Whether `agent` has tokens left in every budget; the error says which budget is used
    /// up and when it has room again.
    pub async fn check_budget(&self, agent: &str) -> Result<(), String> {
        for limit in &self.budgets {
            let decision = self.limiter.peek(&budget_key(agent, limit), limit).await;
            if !decision.allowed {
                return Err(format!(
                    "agent `{agent}` used its token budget of {}; it has room again in {} s",
                    limit.rate,
                    decision.retry_after.as_secs() + 1
                ));
            }
        }
        Ok(())
    }

    /// Counts a completion's tokens for `agent`: its budgets and its metrics.
    pub async fn spend(&self, agent: &str, prompt_tokens: u32, completion_tokens: u32) {
        let total = u64::from(prompt_tokens) + u64::from(completion_tokens);
        for limit in &self.budgets {
            self.limiter
                .spend(&budget_key(agent, limit), limit, total)
                .await;
        }
        let label = {
            let mut seen = self.agents_seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(agent) || seen.len() < MAX_AGENT_SERIES {
                seen.insert(agent.to_string());
                agent.to_string()
            } else {
                "other".to_string()
            }
        };
        for (direction, n) in [("in", prompt_tokens), ("out", completion_tokens)] {
            self.agent_tokens
                .get_or_create(&AgentTokenLabels {
                    agent: label.clone(),
                    direction,
                })
                .inc_by(u64::from(n));
        }
    }

    /// Counts a completion's tokens for `component`.
    pub fn record(&self, component: &str, prompt_tokens: u32, completion_tokens: u32) {
        for (direction, n) in [("in", prompt_tokens), ("out", completion_tokens)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    component: component.to_string(),
                    direction,
                })
                .inc_by(u64::from(n));
        }
    }
}

fn budget_key(agent: &str, limit: &super::Limit) -> String {
    format!("budget:{agent}:{}", limit.rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HumanDuration;

    #[tokio::test]
    async fn turns_are_bounded_per_component_and_host_wide_and_waiting_ends() {
        let settings = QuotaSettings {
            llm_concurrency: 3,
            llm_concurrency_per_component: 2,
            llm_wait: HumanDuration(Duration::from_millis(20)),
            agent_tokens: Vec::new(),
        };
        let gate = LlmGate::new(
            &settings,
            Family::default(),
            Family::default(),
            Arc::new(crate::limits::local::LocalRateLimiter::new(100)),
        );
        let a1 = gate.turn("a").await.unwrap();
        let _a2 = gate.turn("a").await.unwrap();
        let e = gate.turn("a").await.err().unwrap();
        assert!(e.contains("llm_concurrency_per_component"), "{e}");
        let _b1 = gate.turn("b").await.unwrap();
        let e = gate.turn("b").await.err().unwrap();
        assert!(e.contains("[quotas] llm_concurrency)"), "{e}");
        drop(a1);
        assert!(gate.turn("b").await.is_ok());
    }
}
