//! `[quotas]`: how many LLM calls run at once, how long a call waits for a turn, and each
//! agent's token budgets, as the LLM gate (`limits::llm`) enforces them.

use std::time::Duration;

use serde::Deserialize;

use super::{HumanDuration, Rate};

/// `[quotas]` in the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// LLM calls at once, host-wide.
    #[serde(default = "default_concurrency")]
    pub llm_concurrency: u32,
    /// LLM calls at once, per component.
    #[serde(default = "default_per_component")]
    pub llm_concurrency_per_component: u32,
    /// How long a call waits for a turn before failing `unavailable`.
    #[serde(default = "default_wait")]
    pub llm_wait: HumanDuration,
    /// Token budgets of each agent (the `agent` of an llm request), e.g.
    /// `["10000/min", "200000/day"]`; over one, calls fail `quota-exceeded` until it refills.
    #[serde(default)]
    pub agent_tokens: Vec<Rate>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            llm_concurrency: default_concurrency(),
            llm_concurrency_per_component: default_per_component(),
            llm_wait: default_wait(),
            agent_tokens: Vec::new(),
        }
    }
}

fn default_concurrency() -> u32 {
    64
}

fn default_per_component() -> u32 {
    16
}

fn default_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
