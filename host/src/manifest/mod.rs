//! The application manifest, `llmchat.toml`: which components exist, their limits, and what
//! triggers them.
//!
//! Parsing is strict on purpose: an unknown field, a bad size or duration, a route that points
//! at no component are all errors that name the file and the field, because a manifest that
//! "mostly works" is how limits silently go missing in production.

mod deploy;
mod rules;
mod schedule;
mod units;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub use deploy::DeploySettings;
pub use rules::{
    PROBE_PATHS, check_method, check_name, check_outbound_host, check_route, host_path,
    is_simple_name,
};
pub use schedule::{DashboardSettings, ScheduleTrigger, When};
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
    pub http_triggers: Vec<HttpTrigger>,
    pub queue_triggers: Vec<QueueTrigger>,
    pub schedule_triggers: Vec<ScheduleTrigger>,
    pub dashboard: DashboardSettings,
    pub deploy: DeploySettings,
    pub quotas: crate::limits::llm::QuotaSettings,
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
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            instance_wait: defaults::instance_wait(),
            shutdown_grace: defaults::shutdown_grace(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
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

/// One `[component.NAME]` table.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    pub name: String,
    /// Absolute path of the `.wasm` file.
    pub source: PathBuf,
    /// Cap on all linear memories and tables of one instance together.
    pub memory_limit: ByteSize,
    /// Wall-clock limit of one invocation.
    pub timeout: Duration,
    /// How many instances of this component may run at once.
    pub max_instances: u32,
    /// Resource handles one instance may hold at once; each costs the host a table entry
    /// and what the resource owns, which also counts against `memory_limit`.
    pub max_resources: u32,
    /// Hosts the component may reach with outgoing `wasi:http` requests, as `scheme://host:port`.
    pub allowed_outbound_hosts: Vec<String>,
    /// Environment variables the component sees; none unless granted here.
    pub environment: BTreeMap<String, String>,
    /// The kv namespace the component reads and writes: its own name unless the manifest
    /// makes several components share one (e.g. `chat` and its `summarizer`).
    pub kv_namespace: String,
    /// The component's own settings, readable through the `config` interface. Non-string
    /// TOML values are handed over as JSON text.
    pub config: BTreeMap<String, String>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// `/exact/path`, or `/prefix/...` for the prefix and everything below it.
    pub route: String,
    pub component: String,
    /// Methods this trigger answers; empty means all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Requests per client beyond this get 429 before any instance is created, e.g.
    /// `"100/min"`; shared by every host on the same Redis.
    #[serde(default)]
    pub rate_limit: Option<crate::limits::Rate>,
    /// Requests a client may make at once before the rate applies (default: the rate's
    /// count).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Who a client is: `"ip"` (default) or `"header:NAME"` (e.g. `"header:x-api-key"`; a
    /// request without the header is keyed by its IP).
    #[serde(default)]
    pub rate_limit_key: Option<String>,
    /// Requests with a larger body get 413 before any instance is created.
    #[serde(default = "defaults::max_body_size")]
    pub max_body_size: ByteSize,
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
        }
    }
}

/// One `[[trigger.queue]]` entry: a queue and the component that processes its jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTrigger {
    pub queue: String,
    pub component: String,
    /// Jobs of this queue processed at once by this host.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: u32,
    /// Attempts before a job is dead-lettered (a job may ask for another number).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "defaults::backoff")]
    pub backoff: crate::queue::Backoff,
    /// Wall-clock limit of one attempt.
    #[serde(default = "defaults::job_timeout")]
    pub timeout: HumanDuration,
    /// How long a delivered job may go without a sign of life (its host died) before it is
    /// given to another host.
    #[serde(default = "defaults::visibility")]
    pub visibility: HumanDuration,
    /// Largest payload accepted at enqueue.
    #[serde(default = "defaults::max_payload")]
    pub max_payload: ByteSize,
    /// Most waiting plus delayed jobs the queue holds; enqueue beyond it fails `full`.
    #[serde(default = "defaults::max_waiting")]
    pub max_waiting: u64,
    /// How long a dedup key keeps a second job with the same key out.
    #[serde(default = "defaults::dedup_window")]
    pub dedup_window: HumanDuration,
    /// Jobs started per period across every host on the same Redis, e.g. `"50/s"`; a job
    /// over the rate waits in its slot (it is not failed).
    #[serde(default)]
    pub rate: Option<crate::limits::Rate>,
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
    pub fn memory_limit() -> ByteSize {
        ByteSize::mib(64)
    }
    pub fn timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn max_instances() -> u32 {
        32
    }
    pub fn max_resources() -> u32 {
        10_000
    }
    pub fn max_body_size() -> ByteSize {
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
    pub fn concurrency() -> u32 {
        5
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn backoff() -> crate::queue::Backoff {
        crate::queue::Backoff::Exponential {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
    pub fn job_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn visibility() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn max_payload() -> ByteSize {
        ByteSize(256 << 10)
    }
    pub fn max_waiting() -> u64 {
        100_000
    }
    pub fn dedup_window() -> HumanDuration {
        HumanDuration(Duration::from_secs(3600))
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
    component: BTreeMap<String, RawComponent>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    dashboard: DashboardSettings,
    #[serde(default)]
    deploy: DeploySettings,
    #[serde(default)]
    quotas: crate::limits::llm::QuotaSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: PathBuf,
    #[serde(default = "defaults::memory_limit")]
    memory_limit: ByteSize,
    #[serde(default = "defaults::timeout")]
    timeout: HumanDuration,
    #[serde(default = "defaults::max_instances")]
    max_instances: u32,
    #[serde(default = "defaults::max_resources")]
    max_resources: u32,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    kv_namespace: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
    #[serde(default)]
    queue: Vec<QueueTrigger>,
    #[serde(default)]
    schedule: Vec<schedule::RawScheduleTrigger>,
}

/// Largest memory cap a component may ask for; beyond it the pool reservation gets silly.
const MAX_MEMORY_LIMIT: ByteSize = ByteSize(4 << 30);
/// Smallest memory cap that can hold a Rust guest's stack and data segment.
const MIN_MEMORY_LIMIT: ByteSize = ByteSize(1 << 20);
const MAX_INSTANCES: u32 = 10_000;
/// wasmtime's own default table cap; past it a handle bomb only costs the host more.
const MAX_RESOURCES: u32 = 1_000_000;
/// Beyond a million connections the open-file limit, not this setting, is the bound.
const MAX_CONNECTIONS: u32 = 1_000_000;

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest `{}`", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` names the file in errors and anchors relative sources.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
            .with_context(|| format!("invalid manifest `{}`", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::validate(raw, path, &base)
            .with_context(|| format!("invalid manifest `{}`", path.display()))
    }

    fn validate(raw: RawManifest, path: &Path, base: &Path) -> Result<Manifest> {
        let mut components = BTreeMap::new();
        for (name, c) in raw.component {
            let spec = validate_component(&name, c, base)
                .with_context(|| format!("in [component.{name}]"))?;
            components.insert(name, spec);
        }
        let mut seen = HashSet::new();
        for (i, t) in raw.trigger.http.iter().enumerate() {
            validate_http_trigger(t, &components, &mut seen)
                .with_context(|| format!("in [[trigger.http]] #{} (route {:?})", i + 1, t.route))?;
        }
        let mut queues = HashSet::new();
        for (i, t) in raw.trigger.queue.iter().enumerate() {
            validate_queue_trigger(t, &components, &mut queues).with_context(|| {
                format!("in [[trigger.queue]] #{} (queue {:?})", i + 1, t.queue)
            })?;
        }
        let mut schedules = HashSet::new();
        let mut schedule_triggers = Vec::with_capacity(raw.trigger.schedule.len());
        for (i, t) in raw.trigger.schedule.into_iter().enumerate() {
            let label = format!("in [[trigger.schedule]] #{} ({:?})", i + 1, t.label());
            schedule_triggers.push(t.validate(&components, &mut schedules).context(label)?);
        }
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
            http_triggers: raw.trigger.http,
            queue_triggers: raw.trigger.queue,
            schedule_triggers,
            dashboard: raw.dashboard,
            deploy: raw.deploy,
            quotas: raw.quotas,
        })
    }
}

impl Manifest {
    /// Checks every trigger against the components and each other, as at load time: what a
    /// deploy runs on the application it is about to become.
    pub fn check_triggers(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for t in &self.http_triggers {
            validate_http_trigger(t, &self.components, &mut seen)
                .with_context(|| format!("route {:?}", t.route))?;
        }
        let mut queues = HashSet::new();
        for t in &self.queue_triggers {
            validate_queue_trigger(t, &self.components, &mut queues)
                .with_context(|| format!("queue {:?}", t.queue))?;
        }
        let mut names = HashSet::new();
        for t in &self.schedule_triggers {
            if !self.components.contains_key(&t.component) {
                bail!(
                    "schedule `{}`: no component named {:?}",
                    t.name,
                    t.component
                );
            }
            if !names.insert(t.name.clone()) {
                bail!("two schedules are named {:?}", t.name);
            }
        }
        Ok(())
    }
}

/// A component's settings from JSON (a deploy's spec, the same fields as a
/// `[component.NAME]` table), with `source` set to where its bytes are; validated as the
/// manifest's.
pub fn component_from_json(
    name: &str,
    source: &Path,
    mut settings: serde_json::Map<String, serde_json::Value>,
) -> Result<ComponentSpec> {
    settings.insert(
        "source".into(),
        serde_json::Value::String(source.display().to_string()),
    );
    let raw: RawComponent = serde_json::from_value(serde_json::Value::Object(settings))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    validate_component(name, raw, Path::new("/"))
}

/// A `[[trigger.schedule]]` from JSON, validated against `components`.
pub fn schedule_from_json(
    value: serde_json::Value,
    components: &BTreeMap<String, ComponentSpec>,
) -> Result<ScheduleTrigger> {
    let raw: schedule::RawScheduleTrigger =
        serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{e}"))?;
    raw.validate(components, &mut HashSet::new())
}

fn validate_component(name: &str, c: RawComponent, base: &Path) -> Result<ComponentSpec> {
    check_name(name).map_err(|e| anyhow::anyhow!("component name {e}"))?;
    let kv_namespace = c.kv_namespace.unwrap_or_else(|| name.to_string());
    check_name(&kv_namespace).map_err(|e| anyhow::anyhow!("field `kv_namespace`: {e}"))?;
    let source = if c.source.is_absolute() {
        c.source
    } else {
        base.join(c.source)
    };
    if !source.is_file() {
        bail!(
            "field `source`: component file `{}` does not exist",
            source.display()
        );
    }
    if c.memory_limit < MIN_MEMORY_LIMIT || c.memory_limit > MAX_MEMORY_LIMIT {
        bail!(
            "field `memory_limit`: {} is outside {MIN_MEMORY_LIMIT}..={MAX_MEMORY_LIMIT}",
            c.memory_limit
        );
    }
    if c.timeout.0.is_zero() {
        bail!("field `timeout`: must be greater than zero");
    }
    if c.max_resources < 16 || c.max_resources > MAX_RESOURCES {
        bail!(
            "field `max_resources`: {} is outside 16..={MAX_RESOURCES}",
            c.max_resources
        );
    }
    if c.max_instances == 0 || c.max_instances > MAX_INSTANCES {
        bail!(
            "field `max_instances`: {} is outside 1..={MAX_INSTANCES}",
            c.max_instances
        );
    }
    for host in &c.allowed_outbound_hosts {
        check_outbound_host(host)
            .map_err(|e| anyhow::anyhow!("field `allowed_outbound_hosts`: {e}"))?;
    }
    let config = c
        .config
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                other => serde_json::to_string(&other).with_context(|| {
                    format!("field `config.{k}`: cannot be represented as JSON")
                })?,
            };
            Ok((k, text))
        })
        .collect::<Result<_>>()?;
    Ok(ComponentSpec {
        name: name.to_string(),
        source,
        memory_limit: c.memory_limit,
        timeout: c.timeout.0,
        max_instances: c.max_instances,
        max_resources: c.max_resources,
        allowed_outbound_hosts: c.allowed_outbound_hosts,
        environment: c.environment,
        kv_namespace,
        config,
    })
}

fn validate_http_trigger(
    t: &HttpTrigger,
    components: &BTreeMap<String, ComponentSpec>,
    seen: &mut HashSet<(String, String)>,
) -> Result<()> {
    if !components.contains_key(&t.component) {
        bail!(
            "field `component`: no component named {:?} is declared",
            t.component
        );
    }
    check_route(&t.route).map_err(|e| anyhow::anyhow!("field `route`: {e}"))?;
    if let Some(path) = host_path(&t.route) {
        bail!(
            "route {:?} of component `{}` is reserved for the host's own endpoint {path}",
            t.route,
            t.component
        );
    }
    if t.rate_limit.is_none() && (t.burst.is_some() || t.rate_limit_key.is_some()) {
        bail!("fields `burst` and `rate_limit_key` need a `rate_limit`");
    }
    if t.burst == Some(0) {
        bail!("field `burst`: must be at least 1");
    }
    if let Some(key) = &t.rate_limit_key
        && key != "ip"
        && key
            .strip_prefix("header:")
            .is_none_or(|h| h.parse::<http::HeaderName>().is_err())
    {
        bail!("field `rate_limit_key`: {key:?} must be \"ip\" or \"header:NAME\"");
    }
    for m in &t.methods {
        check_method(m).map_err(|e| anyhow::anyhow!("field `methods`: {e}"))?;
    }
    let methods = if t.methods.is_empty() {
        vec!["*".to_string()]
    } else {
        t.methods.clone()
    };
    for m in methods {
        if !seen.insert((t.route.clone(), m.clone())) {
            bail!(
                "field `route`: {:?} is declared twice for method {m}",
                t.route
            );
        }
    }
    Ok(())
}

fn validate_queue_trigger(
    t: &QueueTrigger,
    components: &BTreeMap<String, ComponentSpec>,
    seen: &mut HashSet<String>,
) -> Result<()> {
    check_name(&t.queue).map_err(|e| anyhow::anyhow!("field `queue`: {e}"))?;
    if !seen.insert(t.queue.clone()) {
        bail!(
            "field `queue`: {:?} has two triggers; one component processes a queue",
            t.queue
        );
    }
    if !components.contains_key(&t.component) {
        bail!(
            "field `component`: no component named {:?} is declared",
            t.component
        );
    }
    if !(1..=10_000).contains(&t.concurrency) {
        bail!(
            "field `concurrency`: {} is outside 1..=10000",
            t.concurrency
        );
    }
    if !(1..=1_000).contains(&t.max_attempts) {
        bail!(
            "field `max_attempts`: {} is outside 1..=1000",
            t.max_attempts
        );
    }
    if t.timeout.0.is_zero() {
        bail!("field `timeout`: must be greater than zero");
    }
    if t.visibility.0 < Duration::from_secs(1) {
        bail!(
            "field `visibility`: {} is below the minimum of 1s",
            t.visibility
        );
    }
    if t.max_payload.bytes() == 0 || t.max_waiting == 0 {
        bail!("fields `max_payload` and `max_waiting` must be greater than zero");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
