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
mod net;
mod quotas;
mod rate;
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
pub use net::{IpNet, canonical as canonical_ip};
pub use quotas::QuotaSettings;
pub use rate::Rate;
pub use rules::{
    OBSERVABILITY_PATHS, check_method, check_name, check_outbound_host, check_route, host_path,
    is_simple_name,
};
pub use schedule::{DashboardSettings, ScheduleTrigger, ScheduleTriggerConfig, When, parse_cron};
pub use triggers::{
    Export, HttpTrigger, HttpTriggerConfig, MAX_CONCURRENCY, QueueTrigger, QueueTriggerConfig,
    Registered, TriggerConfigs, TriggerKind, Triggers,
};
pub use units::{ByteSize, HumanDuration};

/// The whole manifest, validated, with component sources resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where the manifest was read from; relative sources are resolved against its folder.
    pub path: PathBuf,
    pub http: HttpSettings,
    pub llm: LlmSettings,
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
        }
    }
}

impl HttpSettings {
    fn validate(&self) -> Result<()> {
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
    },
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings::Echo { word_delay: None }
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

/// The Redis connection. Redis is used (for queues and kv) when `url` is set here or in the
/// `REDIS_URL` environment variable; otherwise both are embedded and in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    #[serde(default)]
    pub url: Option<String>,
    /// Multiplexed connections for commands; the host adds one for blocking reads.
    #[serde(default = "defaults::redis_connections")]
    pub connections: u32,
    /// Hard cap on Redis commands in flight from this host.
    #[serde(default = "defaults::redis_max_in_flight")]
    pub max_in_flight: u32,
    /// How long a command may wait for one of those slots before failing `unavailable`.
    #[serde(default = "defaults::redis_acquire_timeout")]
    pub acquire_timeout: HumanDuration,
    #[serde(default = "defaults::redis_command_timeout")]
    pub command_timeout: HumanDuration,
    #[serde(default = "defaults::redis_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// What every key and channel of this application starts with (`PREFIX:kv:...`), so
    /// that several applications (staging and production) can share one Redis.
    #[serde(default = "defaults::redis_prefix")]
    pub prefix: String,
    /// PEM file of the CA that signed the server's certificate (`rediss://` to a private
    /// CA); relative to the manifest's folder. Without it, the system's roots are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for a server that asks for one (mutual TLS).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The ACL user, when not in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// The name of the environment variable holding the password (never the password).
    #[serde(default)]
    pub password_env: Option<String>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            connections: defaults::redis_connections(),
            max_in_flight: defaults::redis_max_in_flight(),
            acquire_timeout: defaults::redis_acquire_timeout(),
            command_timeout: defaults::redis_command_timeout(),
            connect_timeout: defaults::redis_connect_timeout(),
            prefix: defaults::redis_prefix(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password_env: None,
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
    pub fn kv_max_keys() -> usize {
        100_000
    }
    pub fn kv_max_bytes() -> ByteSize {
        ByteSize::mib(64)
    }
    pub fn kv_max_value() -> ByteSize {
        ByteSize::mib(1)
    }
    pub fn redis_connections() -> u32 {
        2
    }
    pub fn redis_max_in_flight() -> u32 {
        512
    }
    pub fn redis_acquire_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub fn redis_command_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn redis_connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(2))
    }
    pub fn redis_prefix() -> String {
        "llmchat".to_string()
    }
}

/// The manifest exactly as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    http: HttpSettings,
    #[serde(default)]
    llm: LlmSettings,
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
        raw.http.validate()?;
        raw.dashboard.validate()?;
        raw.deploy.validate()?;
        if raw.quotas.llm_concurrency == 0 || raw.quotas.llm_concurrency_per_component == 0 {
            bail!(
                "in [quotas]: `llm_concurrency` and `llm_concurrency_per_component` must be greater than zero"
            );
        }
        if let Some(url) = &raw.redis.url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
                || url.starts_with("redis+unix://"))
        {
            bail!(
                "in [redis]: field `url`: {url:?} must start with redis://, rediss:// or unix://"
            );
        }
        if raw.redis.connections == 0 || raw.redis.max_in_flight == 0 {
            bail!("in [redis]: `connections` and `max_in_flight` must be greater than zero");
        }
        check_redis_prefix(&raw.redis.prefix)
            .map_err(|e| anyhow::anyhow!("in [redis]: field `prefix`: {e}"))?;
        raw.redis.resolve_files(base)?;
        if let LlmSettings::Openai { base_url, .. } = &raw.llm
            && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        {
            bail!("in [llm]: field `base_url`: {base_url:?} must start with http:// or https://");
        }
        if raw.kv.max_keys == 0 || raw.kv.max_bytes.bytes() == 0 {
            bail!("in [kv]: `max_keys` and `max_bytes` must be greater than zero");
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            http: raw.http,
            llm: raw.llm,
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

impl RedisSettings {
    /// Anchors the TLS files at `base` (the manifest's folder) and checks that each exists,
    /// and that a client certificate comes with its key.
    fn resolve_files(&mut self, base: &Path) -> Result<()> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            bail!(
                "in [redis]: fields `client_cert_file` and `client_key_file` go together: give both or neither"
            );
        }
        for (field, file) in [
            ("ca_file", &mut self.ca_file),
            ("client_cert_file", &mut self.client_cert_file),
            ("client_key_file", &mut self.client_key_file),
        ] {
            if let Some(path) = file {
                let resolved = base.join(&*path);
                if !resolved.is_file() {
                    bail!(
                        "in [redis]: field `{field}`: file `{}` does not exist",
                        resolved.display()
                    );
                }
                *path = resolved;
            }
        }
        Ok(())
    }

    /// Whether the connection is set up with files of its own (a CA or a client
    /// certificate) rather than the system's trust roots alone.
    pub fn has_tls_files(&self) -> bool {
        self.ca_file.is_some() || self.client_cert_file.is_some()
    }
}

/// A key prefix is 1 to 64 of `A-Z a-z 0-9 - _ . :`: no braces, which would change the hash
/// slot of every key, and nothing a `KEYS`/`SCAN` pattern would read as a wildcard.
pub fn check_redis_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?} must be 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.' and ':'"
        ))
    }
}

/// Beyond a million connections the open-file limit, not this setting, is the bound.
const MAX_CONNECTIONS: u32 = 1_000_000;

#[cfg(test)]
mod tests;
