//! `[llm]`: the providers, the routes over them, and how calls retry and fall over.
//!
//! Two forms. The single-provider form (`provider = "openai"`, `base_url`, ...) names its
//! one provider after its kind, as before. The named form declares several:
//!
//! ```toml
//! [llm]
//! default = "chat"                        # a route, a provider, or "provider/model"
//! retries = 2                             # per target, on 429, 5xx, connect errors, timeouts
//! [llm.providers.primary]
//! kind = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//! model = "gpt-4o-mini"
//! [llm.providers.local]
//! kind = "openai"
//! base_url = "http://127.0.0.1:11434/v1"
//! model = "llama3.1"
//! [llm.routes]
//! chat = ["primary/gpt-4o-mini", "local/llama3.1"]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::{Backoff, HumanDuration, LlmSettings};

/// Most targets in one route.
pub const MAX_TARGETS: usize = 8;
/// Most retries of one target.
pub const MAX_RETRIES: u32 = 10;

/// `[llm]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// By name; the single-provider form's one provider is named after its kind.
    pub providers: BTreeMap<String, LlmSettings>,
    /// Ordered targets by route name: the first that answers wins.
    pub routes: BTreeMap<String, Vec<LlmTarget>>,
    /// Where a request that names no model goes.
    pub default: Vec<LlmTarget>,
    pub retry: LlmRetry,
}

/// One `provider/model` of a route; no model means the provider's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmTarget {
    pub provider: String,
    pub model: Option<String>,
}

impl std::fmt::Display for LlmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model {
            Some(model) => write!(f, "{}/{model}", self.provider),
            None => f.write_str(&self.provider),
        }
    }
}

/// How a call to one target is retried, and when a provider is left alone for a while.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlmRetry {
    /// Retries of one target after its first try, on a retryable failure.
    pub retries: u32,
    pub backoff: Backoff,
    /// A `Retry-After` longer than this is not waited for: the call falls over at once.
    pub max_retry_after: Duration,
    /// Consecutive failures that open a provider's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe is let through.
    pub breaker_cooldown: Duration,
}

impl Default for LlmRetry {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff: Backoff::Exponential {
                first: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            max_retry_after: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self::single(LlmSettings::default(), LlmRetry::default())
    }
}

/// The retry keys, in either form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryKeys {
    retries: Option<u32>,
    backoff: Option<Backoff>,
    max_retry_after: Option<HumanDuration>,
    breaker: Option<BreakerKeys>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerKeys {
    failures: u32,
    cooldown: HumanDuration,
}

const RETRY_KEYS: [&str; 4] = ["retries", "backoff", "max_retry_after", "breaker"];

impl LlmConfig {
    fn single(settings: LlmSettings, retry: LlmRetry) -> Self {
        let name = settings.kind().to_string();
        Self {
            default: vec![LlmTarget {
                provider: name.clone(),
                model: None,
            }],
            providers: BTreeMap::from([(name, settings)]),
            routes: BTreeMap::new(),
            retry,
        }
    }

    /// Reads `[llm]` as written (absent: the echo provider).
    pub fn from_table(table: Option<toml::Table>) -> Result<Self> {
        let Some(mut table) = table else {
            return Ok(Self::default());
        };
        let mut retry_table = toml::Table::new();
        for key in RETRY_KEYS {
            if let Some(value) = table.remove(key) {
                retry_table.insert(key.to_string(), value);
            }
        }
        let retry = retry_from(retry_table)?;
        if !table.contains_key("providers") {
            if table.contains_key("default") || table.contains_key("routes") {
                bail!(
                    "in [llm]: `default` and `routes` need named providers ([llm.providers.NAME])"
                );
            }
            let settings = LlmSettings::deserialize(toml::Value::Table(table))
                .map_err(|e| anyhow::anyhow!("in [llm]: {}", e.message()))?;
            settings.check().context("in [llm]")?;
            return Ok(Self::single(settings, retry));
        }
        let providers = providers_from(table.remove("providers"))?;
        let routes = routes_from(table.remove("routes"), &providers)?;
        let default = match table.remove("default") {
            Some(toml::Value::String(name)) => resolve(&name, &routes, &providers)
                .with_context(|| format!("in [llm]: field `default`: {name:?}"))?,
            Some(_) => bail!("in [llm]: field `default` must be a string"),
            None if providers.len() == 1 => vec![LlmTarget {
                provider: providers.keys().next().cloned().unwrap_or_default(),
                model: None,
            }],
            None => bail!(
                "in [llm]: field `default` is required with several providers: name a route or a provider"
            ),
        };
        if let Some(key) = table.keys().next() {
            bail!(
                "in [llm]: unknown field `{key}` (with named providers: default, providers, routes, {})",
                RETRY_KEYS.join(", ")
            );
        }
        Ok(Self {
            providers,
            routes,
            default,
            retry,
        })
    }
}

fn retry_from(table: toml::Table) -> Result<LlmRetry> {
    let keys = RetryKeys::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("in [llm]: {}", e.message()))?;
    let mut retry = LlmRetry::default();
    if let Some(n) = keys.retries {
        if n > MAX_RETRIES {
            bail!("in [llm]: field `retries`: {n} is above the most, {MAX_RETRIES}");
        }
        retry.retries = n;
    }
    if let Some(backoff) = keys.backoff {
        retry.backoff = backoff;
    }
    if let Some(d) = keys.max_retry_after {
        retry.max_retry_after = d.0;
    }
    if let Some(b) = keys.breaker {
        if b.failures == 0 || b.cooldown.0.is_zero() {
            bail!("in [llm]: field `breaker`: `failures` and `cooldown` must be above zero");
        }
        retry.breaker_failures = b.failures;
        retry.breaker_cooldown = b.cooldown.0;
    }
    Ok(retry)
}

fn providers_from(value: Option<toml::Value>) -> Result<BTreeMap<String, LlmSettings>> {
    let Some(toml::Value::Table(table)) = value else {
        bail!("in [llm]: `providers` must be a table of [llm.providers.NAME]");
    };
    if table.is_empty() {
        bail!("in [llm]: `providers` names none");
    }
    let mut providers = BTreeMap::new();
    for (name, value) in table {
        let at = || format!("in [llm.providers.{name}]");
        super::check_name(&name).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        let toml::Value::Table(mut t) = value else {
            bail!("{}: must be a table", at());
        };
        // `kind` here is the single form's `provider` tag.
        match t.remove("kind") {
            Some(kind) => t.insert("provider".into(), kind),
            None => bail!("{}: field `kind` is missing (\"openai\" or \"echo\")", at()),
        };
        if t.contains_key("provider") && t.get("provider").and_then(|v| v.as_str()).is_none() {
            bail!("{}: field `kind` must be a string", at());
        }
        let settings = LlmSettings::deserialize(toml::Value::Table(t)).map_err(|e| {
            anyhow::anyhow!("{}: {}", at(), e.message().replace("`provider`", "`kind`"))
        })?;
        settings.check().with_context(at)?;
        providers.insert(name, settings);
    }
    Ok(providers)
}

fn routes_from(
    value: Option<toml::Value>,
    providers: &BTreeMap<String, LlmSettings>,
) -> Result<BTreeMap<String, Vec<LlmTarget>>> {
    let table = match value {
        None => return Ok(BTreeMap::new()),
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("in [llm]: `routes` must be a table of NAME = [\"provider/model\", ...]"),
    };
    let mut routes = BTreeMap::new();
    for (name, value) in table {
        let at = || format!("in [llm.routes]: route `{name}`");
        super::check_name(&name).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        if providers.contains_key(&name) {
            bail!("{}: a provider has that name too; rename one", at());
        }
        let Some(items) = value.as_array() else {
            bail!("{}: must be a list of \"provider/model\" strings", at());
        };
        if items.is_empty() || items.len() > MAX_TARGETS {
            bail!("{}: 1 to {MAX_TARGETS} targets, not {}", at(), items.len());
        }
        let mut targets = Vec::new();
        for item in items {
            let Some(text) = item.as_str() else {
                bail!("{}: {item} is not a \"provider/model\" string", at());
            };
            targets.push(target(text, providers).with_context(at)?);
        }
        routes.insert(name, targets);
    }
    Ok(routes)
}

/// `provider` or `provider/model`, the provider declared.
fn target(text: &str, providers: &BTreeMap<String, LlmSettings>) -> Result<LlmTarget> {
    let (provider, model) = match text.split_once('/') {
        Some((p, m)) if !m.is_empty() => (p, Some(m.to_string())),
        Some(_) => bail!("{text:?}: the model after `/` is empty"),
        None => (text, None),
    };
    if !providers.contains_key(provider) {
        bail!(
            "{text:?}: no provider `{provider}` (declared: {})",
            providers.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(LlmTarget {
        provider: provider.to_string(),
        model,
    })
}

/// A route's targets, or the one target a provider or `provider/model` names.
fn resolve(
    name: &str,
    routes: &BTreeMap<String, Vec<LlmTarget>>,
    providers: &BTreeMap<String, LlmSettings>,
) -> Result<Vec<LlmTarget>> {
    match routes.get(name) {
        Some(targets) => Ok(targets.clone()),
        None => Ok(vec![target(name, providers)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LlmConfig> {
        let table: toml::Table = toml::from_str(text).expect("TOML");
        LlmConfig::from_table(Some(table))
    }

    const TWO: &str = r#"
        default = "chat"
        retries = 3
        breaker = { failures = 2, cooldown = "10s" }
        [providers.primary]
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        model = "big"
        [providers.backup]
        kind = "echo"
        [routes]
        chat = ["primary/big", "backup"]
    "#;

    #[test]
    fn the_single_form_names_its_provider_after_its_kind_and_retries_by_default() {
        let c = parse("provider = \"openai\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"").unwrap();
        assert_eq!(c.providers.keys().collect::<Vec<_>>(), ["openai"]);
        assert_eq!(c.default[0].to_string(), "openai");
        assert_eq!(c.retry.retries, 2);
        assert_eq!(
            LlmConfig::from_table(None).unwrap().default[0].provider,
            "echo"
        );
    }

    #[test]
    fn named_providers_routes_and_retry_settings_are_read() {
        let c = parse(TWO).unwrap();
        assert_eq!(c.providers.len(), 2);
        let chat: Vec<String> = c.routes["chat"].iter().map(ToString::to_string).collect();
        assert_eq!(chat, ["primary/big", "backup"]);
        assert_eq!(c.default, c.routes["chat"]);
        assert_eq!((c.retry.retries, c.retry.breaker_failures), (3, 2));
        assert_eq!(c.retry.breaker_cooldown, Duration::from_secs(10));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        let e = err(&TWO.replace("\"backup\"]", "\"nope/m\"]"));
        assert!(
            e.contains("no provider `nope`") && e.contains("route `chat`"),
            "{e}"
        );
        let e = err(&TWO.replace("default = \"chat\"\n", ""));
        assert!(e.contains("`default` is required"), "{e}");
        let e = err(&TWO.replace("kind = \"echo\"", "kind = \"smoke\""));
        assert!(
            e.contains("[llm.providers.backup]") && e.contains("smoke"),
            "{e}"
        );
        let e = err(&TWO.replace("kind = \"echo\"", ""));
        assert!(e.contains("field `kind` is missing"), "{e}");
        let e = err(&TWO.replace("retries = 3", "retries = 99"));
        assert!(e.contains("`retries`"), "{e}");
        let e = err(&format!("{TWO}\ncolour = 1"));
        assert!(e.contains("colour"), "{e}");
        let e = err("default = \"x\"\nprovider = \"echo\"");
        assert!(e.contains("need named providers"), "{e}");
    }
}
