//! The label sets of the LLM token counters, which the LLM gate increments.

use prometheus_client::encoding::EncodeLabelSet;

/// `llmchat_llm_tokens_total{component, direction}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TokenLabels {
    pub component: String,
    /// `in` (prompt) or `out` (completion).
    pub direction: &'static str,
}

/// `llmchat_llm_agent_tokens_total{agent, direction}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AgentTokenLabels {
    pub agent: String,
    pub direction: &'static str,
}
