//! The application manifest, `llmchat.toml`: which components exist, their limits, and what
//! triggers them.
//!
//! Parsing is strict on purpose: an unknown field, a bad size or duration, a route that points
//! at no component are all errors that name the file and the field, because a manifest that
//! "mostly works" is how limits silently go missing in production.

mod backoff;
mod component;
mod deploy;
mod env;
mod llm;
mod net;
mod quotas;
mod rate;
mod redis_settings;
mod rules;
mod schedule;
mod triggers;
mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub use backoff::Backoff;
pub use component::{
    ComponentConfig, ComponentSpec, ConfigValue, MAX_INSTANCES, MAX_MEMORY_LIMIT, MAX_RESOURCES,
    MIN_MEMORY_LIMIT, MIN_RESOURCES, Secret, SecretSource,
};
pub use deploy::{DeploySettings, DeploySpec};
pub use llm::{LlmConfig, LlmRetry, LlmTarget};
pub use net::{IpNet, canonical as canonical_ip};
pub use quotas::QuotaSettings;
pub use rate::Rate;
pub use redis_settings::{
    RedisMode, RedisSettings, check_redis_prefix, redact_redis_urls, redis_seeds,
};
pub use rules::{
    OBSERVABILITY_PATHS, check_method, check_name, check_outbound_host, check_route, host_path,
    is_simple_name,
};
pub use schedule::{DashboardSettings, ScheduleTrigger, ScheduleTriggerConfig, When, parse_cron};
pub use triggers::{
    Export, HttpTrigger, HttpTriggerConfig, KeepJobs, MAX_CONCURRENCY, MAX_KEEP, MAX_REPEATS,
    QueueTrigger, QueueTriggerConfig, Registered, Repeat, RepeatConfig, TriggerConfigs,
    TriggerKind, Triggers,
};
pub use units::{ByteSize, HumanDuration};

/// The whole manifest, validated, with component sources resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where the manifest was read from; relative sources are resolved against its folder.
    pub path: PathBuf,
    pub http: HttpSettings,
    pub llm: LlmConfig,
    pub kv: KvSettings,
    pub redis: RedisSettings,
    /// Components by name, sorted so that logs and pool sizing are deterministic.
    pub components: BTreeMap<String, ComponentSpec>,
    /// Every trigger, by kind.
    pub triggers: Triggers,
    pub dashboard: DashboardSettings,
    pub deploy: DeploySettings,
    pub quotas: QuotaSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// How long a request may wait for a free instance slot before it gets a 503.
    #[serde(default = "defaults::instance_wait")]
    pub instance_wait: HumanDuration,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// How long a client may take to send a whole request head, from the connection's
    /// accept (or the first byte of a later request) on; then the connection is closed.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// How long a keep-alive connection may sit between requests, with nothing sent.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Connections open at once; more are refused (a 503 and closed) until one ends. Clamped
    /// to what the process's open-file limit allows.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// One log line per request to a component route (target `llmchat::access`, level
    /// info): method, path, route, status, bytes, duration, component, client. Off by
    /// default: at tens of thousands of requests a second it is most of the log.
    #[serde(default)]
    pub access_log: bool,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers name the client: load balancers
    /// and reverse proxies. From any other peer those headers are ignored, so a client
    /// cannot forge its address. Empty (the default): the peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Serve HTTPS with this certificate and key (HTTP/2 and HTTP/1.1 through ALPN) instead
    /// of plain HTTP; `llmchat up --tls-cert/--tls-key` override it.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Plain HTTP/2 (prior knowledge, no upgrade) beside HTTP/1.1 on the plain listener: for
    /// a proxy in front that speaks h2 to its backends. Off by default, so that an HTTP/1.1
    /// listener does not first sniff every connection for the HTTP/2 preface.
    #[serde(default)]
    pub h2c: bool,
}

/// `[http] tls = { cert = "...", key = "..." }`: PEM files, relative to the manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub key: PathBuf,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            instance_wait: defaults::instance_wait(),
            shutdown_grace: defaults::shutdown_grace(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
            access_log: false,
            trusted_proxies: Vec::new(),
            tls: None,
            h2c: false,
        }
    }
}

impl HttpSettings {
    /// Checks the limits and anchors the TLS files at `base` (the manifest's folder); the
    /// files themselves are read, and any problem with them named, when the server starts.
    fn validate(&mut self, base: &Path) -> Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
        }
        if self.header_read_timeout.0.is_zero() {
            bail!("in [http]: field `header_read_timeout`: must be greater than zero");
        }
        if self.idle_timeout.0.is_zero() {
            bail!("in [http]: field `idle_timeout`: must be greater than zero");
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            bail!(
                "in [http]: field `max_connections`: {} is outside 1..={MAX_CONNECTIONS}",
                self.max_connections
            );
        }
        Ok(())
    }
}

/// Which LLM provider answers `llm` calls.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum LlmSettings {
    /// Deterministic, offline: streams the prompt back word by word.
    Echo {
        /// Delay between streamed words, to make streaming visible in a demo.
        #[serde(default)]
        word_delay: Option<HumanDuration>,
    },
    /// Any OpenAI-compatible `/v1/chat/completions` endpoint.
    Openai {
        /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
        base_url: String,
        /// The name of the environment variable that holds the API key (never the key).
        #[serde(default)]
        api_key_env: Option<String>,
        /// Model used when a component does not ask for one.
        model: String,
        #[serde(default = "defaults::llm_timeout")]
        timeout: HumanDuration,
        #[serde(default = "defaults::llm_connect_timeout")]
        connect_timeout: HumanDuration,
        /// Model `llm.embed` uses when a component names none.
        #[serde(default)]
        embedding_model: Option<String>,
    },
    /// Anthropic's native Messages API (`POST {base_url}/messages`).
    Anthropic {
        #[serde(default = "defaults::anthropic_base_url")]
        base_url: String,
        /// The name of the environment variable that holds the API key (never the key).
        #[serde(default)]
        api_key_env: Option<String>,
        model: String,
        /// The API requires a bound on each answer; used when a request sets none.
        #[serde(default = "defaults::anthropic_max_tokens")]
        max_tokens: u32,
        #[serde(default = "defaults::llm_timeout")]
        timeout: HumanDuration,
        #[serde(default = "defaults::llm_connect_timeout")]
        connect_timeout: HumanDuration,
    },
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings::Echo { word_delay: None }
    }
}

impl LlmSettings {
    /// `echo` or `openai`: the provider's name in the single-provider form.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmSettings::Echo { .. } => "echo",
            LlmSettings::Openai { .. } => "openai",
            LlmSettings::Anthropic { .. } => "anthropic",
        }
    }

    /// What serde cannot check.
    fn check(&self) -> Result<()> {
        if let LlmSettings::Openai { base_url, .. } | LlmSettings::Anthropic { base_url, .. } = self
            && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        {
            bail!("field `base_url`: {base_url:?} must start with http:// or https://");
        }
        Ok(())
    }
}

/// Bounds of the embedded kv store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSettings {
    #[serde(default = "defaults::kv_max_keys")]
    pub max_keys: usize,
    #[serde(default = "defaults::kv_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "defaults::kv_max_value")]
    pub max_value_size: ByteSize,
}

impl Default for KvSettings {
    fn default() -> Self {
        Self {
            max_keys: defaults::kv_max_keys(),
            max_bytes: defaults::kv_max_bytes(),
            max_value_size: defaults::kv_max_value(),
        }
    }
}

mod defaults {
    use super::{ByteSize, HumanDuration};
    use std::time::Duration;

    pub fn instance_wait() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub fn shutdown_grace() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub fn header_read_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub fn idle_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn max_connections() -> u32 {
        10_000
    }
    pub fn llm_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn llm_connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn anthropic_base_url() -> String {
        "https://api.anthropic.com/v1".to_string()
    }
    pub fn anthropic_max_tokens() -> u32 {
        1024
    }
    pub fn kv_max_keys() -> usize {
        100_000
    }
    pub fn kv_max_bytes() -> ByteSize {
        ByteSize::mib(64)
    }
    pub fn kv_max_value() -> ByteSize {
        ByteSize::mib(1)
    }
}

/// The manifest exactly as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    http: HttpSettings,
    #[serde(default)]
    llm: Option<toml::Table>,
    #[serde(default)]
    kv: KvSettings,
    #[serde(default)]
    redis: RedisSettings,
    #[serde(default)]
    component: BTreeMap<String, ComponentConfig>,
    #[serde(default)]
    trigger: TriggerConfigs,
    #[serde(default)]
    dashboard: DashboardSettings,
    #[serde(default)]
    deploy: DeploySettings,
    #[serde(default)]
    quotas: QuotaSettings,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest `{}`", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` names the file in errors and anchors relative sources.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let text = env::expand(text, |name| std::env::var(name).ok())
            .with_context(|| format!("invalid manifest `{}`", path.display()))?;
        let raw: RawManifest = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
            .with_context(|| format!("invalid manifest `{}`", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::validate(raw, path, &base)
            .with_context(|| format!("invalid manifest `{}`", path.display()))
    }

    fn validate(mut raw: RawManifest, path: &Path, base: &Path) -> Result<Manifest> {
        let mut components = BTreeMap::new();
        for (name, c) in raw.component {
            let spec = c
                .validate(&name, base)
                .with_context(|| format!("in [component.{name}]"))?;
            components.insert(name, spec);
        }
        let triggers = raw.trigger.validate_manifest(&components)?;
        raw.http.validate(base)?;
        raw.dashboard.validate()?;
        raw.deploy.validate()?;
        if raw.quotas.llm_concurrency == 0 || raw.quotas.llm_concurrency_per_component == 0 {
            bail!(
                "in [quotas]: `llm_concurrency` and `llm_concurrency_per_component` must be greater than zero"
            );
        }
        raw.redis.validate(base)?;
        let llm = LlmConfig::from_table(raw.llm)?;
        if raw.kv.max_keys == 0 || raw.kv.max_bytes.bytes() == 0 {
            bail!("in [kv]: `max_keys` and `max_bytes` must be greater than zero");
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            http: raw.http,
            llm,
            kv: raw.kv,
            redis: raw.redis,
            components,
            triggers,
            dashboard: raw.dashboard,
            deploy: raw.deploy,
            quotas: raw.quotas,
        })
    }
}

/// Beyond a million connections the open-file limit, not this setting, is the bound.
const MAX_CONNECTIONS: u32 = 1_000_000;

#[cfg(test)]
mod tests;
