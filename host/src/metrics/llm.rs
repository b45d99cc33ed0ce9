//! The label sets of the LLM token counters, which the LLM gate increments, and the LLM
//! calls' counts and latencies by provider and model ([`LlmMetrics`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::HistogramFamily;

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

/// `llmchat_llm_requests_total{provider, model, outcome}` and the two histograms'
/// `{provider, model}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LlmCallLabels {
    pub provider: String,
    /// The model asked for (the provider's configured one when the request names none);
    /// at most [`MAX_MODEL_SERIES`] distinct values, the rest as `other`.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct LlmOutcomeLabels {
    pub provider: String,
    pub model: String,
    pub outcome: &'static str,
}

/// `llmchat_llm_retries_total{provider}` and `llmchat_llm_breaker_state{provider}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ProviderLabels {
    pub provider: String,
}

/// `llmchat_llm_fallbacks_total{from, to}`: a call left target `from` for `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct FallbackLabels {
    pub from: String,
    pub to: String,
}

/// Distinct models with their own series: a component names the model, so the set is not
/// bounded by the manifest.
pub const MAX_MODEL_SERIES: usize = 64;

/// Upper bounds of the LLM latency buckets, in seconds: 10 ms to 2 min.
const LLM_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// The LLM calls' metrics: recorded by the provider wrapper `llm::Measured`.
#[derive(Clone)]
pub struct LlmMetrics {
    pub(super) requests: Family<LlmOutcomeLabels, Counter>,
    pub(super) duration: HistogramFamily<LlmCallLabels>,
    pub(super) first_token: HistogramFamily<LlmCallLabels>,
    pub(super) retries: Family<ProviderLabels, Counter>,
    pub(super) fallbacks: Family<FallbackLabels, Counter>,
    pub(super) breaker: Family<ProviderLabels, Gauge>,
    /// The breaker states again, by provider, for the dashboard (a gauge family cannot be
    /// listed); one entry per provider of the manifest.
    breakers: Arc<Mutex<std::collections::BTreeMap<String, i64>>>,
    models_seen: Arc<Mutex<HashSet<String>>>,
}

impl LlmMetrics {
    pub(super) fn new() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LLM_BUCKETS)),
            first_token: Family::new_with_constructor(|| Histogram::new(LLM_BUCKETS)),
            retries: Family::default(),
            fallbacks: Family::default(),
            breaker: Family::default(),
            breakers: Arc::default(),
            models_seen: Arc::default(),
        }
    }

    /// Metrics registered nowhere: for code (tests) that needs them but not `/metrics`.
    pub fn detached() -> Self {
        Self::new()
    }

    /// The labels of a call to `provider` for `model`, `other` past [`MAX_MODEL_SERIES`].
    pub fn labels(&self, provider: &str, model: &str) -> LlmCallLabels {
        let mut seen = self.models_seen.lock().unwrap_or_else(|p| p.into_inner());
        let model = if seen.contains(model) || seen.len() < MAX_MODEL_SERIES {
            seen.insert(model.to_string());
            model.to_string()
        } else {
            "other".to_string()
        };
        LlmCallLabels {
            provider: provider.to_string(),
            model,
        }
    }

    /// One call ended with `outcome` (`ok`, `invalid_request`, `provider_error`,
    /// `unavailable`, `timeout`, `cancelled`) after `took`.
    pub fn ended(&self, labels: &LlmCallLabels, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&LlmOutcomeLabels {
                provider: labels.provider.clone(),
                model: labels.model.clone(),
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(labels)
            .observe(took.as_secs_f64());
    }

    /// A call to `provider` is tried again after a retryable failure.
    pub fn retried(&self, provider: &str) {
        let labels = ProviderLabels {
            provider: provider.to_string(),
        };
        self.retries.get_or_create(&labels).inc();
    }

    /// A call gave up on target `from` (a `provider/model`) and went on to `to`.
    pub fn fell_over(&self, from: &str, to: &str) {
        let labels = FallbackLabels {
            from: from.to_string(),
            to: to.to_string(),
        };
        self.fallbacks.get_or_create(&labels).inc();
    }

    /// `provider`'s circuit is now closed (0), open (1) or half-open (2).
    pub fn breaker_state(&self, provider: &str, state: i64) {
        let labels = ProviderLabels {
            provider: provider.to_string(),
        };
        self.breaker.get_or_create(&labels).set(state);
        self.breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels.provider, state);
    }

    /// Every provider's breaker state (0 closed, 1 open, 2 half-open) as of its last call.
    pub fn breaker_states(&self) -> Vec<(String, i64)> {
        let states = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        states.iter().map(|(p, s)| (p.clone(), *s)).collect()
    }

    /// The first token of a call arrived `after` it started.
    pub fn first_token(&self, labels: &LlmCallLabels, after: Duration) {
        self.first_token
            .get_or_create(labels)
            .observe(after.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_past_the_bound_share_one_series() {
        let metrics = LlmMetrics::new();
        for i in 0..MAX_MODEL_SERIES {
            assert_eq!(
                metrics.labels("openai", &format!("m{i}")).model,
                format!("m{i}")
            );
        }
        assert_eq!(metrics.labels("openai", "one-too-many").model, "other");
        assert_eq!(
            metrics.labels("openai", "m0").model,
            "m0",
            "a known model keeps its series"
        );
    }
}
