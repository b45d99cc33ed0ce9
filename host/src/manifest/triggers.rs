//! What runs a component: HTTP routes and queues. [`HttpTriggerConfig`] and
//! [`QueueTriggerConfig`] are the tables as written (a manifest's `[[trigger.*]]`, a deploy's
//! `triggers`, what `llmchat deploy` sends); [`HttpTrigger`] and [`QueueTrigger`] are the
//! same, checked, with every default filled in, as the host runs them.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize, Serializer};

use super::schedule::ScheduleTriggerConfig;
use super::{
    Backoff, ByteSize, ComponentSpec, HumanDuration, Rate, ScheduleTrigger, check_method,
    check_name, check_route, host_path,
};

/// Most jobs of one queue a host processes at once.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// Triggers as written: the manifest's `[trigger]` tables, or a component's triggers in a
/// deploy, where each entry leaves out `component`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfigs {
    #[serde(default)]
    pub http: Vec<HttpTriggerConfig>,
    #[serde(default)]
    pub queue: Vec<QueueTriggerConfig>,
    #[serde(default)]
    pub schedule: Vec<ScheduleTriggerConfig>,
}

/// The triggers of an application or of one component, checked.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    pub http: Vec<HttpTrigger>,
    pub queue: Vec<QueueTrigger>,
    pub schedule: Vec<ScheduleTrigger>,
}

impl TriggerConfigs {
    /// The triggers of deployed component `name`, checked as the manifest's are, each against
    /// the others of the set and `components` (which holds `name`).
    pub fn validate_deployed(
        self,
        name: &str,
        components: &BTreeMap<String, ComponentSpec>,
    ) -> Result<Triggers> {
        let mut triggers = Triggers::default();
        let mut seen = HashSet::new();
        for t in self.http {
            let t = t.validate(Some(name), components, &mut seen);
            triggers
                .http
                .push(t.map_err(|e| e.context("http trigger"))?);
        }
        let mut seen = HashSet::new();
        for t in self.queue {
            let t = t.validate(Some(name), components, &mut seen);
            triggers
                .queue
                .push(t.map_err(|e| e.context("queue trigger"))?);
        }
        let mut seen = HashSet::new();
        for t in self.schedule {
            let t = t.validate(Some(name), components, &mut seen);
            triggers
                .schedule
                .push(t.map_err(|e| e.context("schedule trigger"))?);
        }
        Ok(triggers)
    }
}

/// The component a trigger runs: in a manifest, the table's own `component`; in a deploy, the
/// component deployed (`deployed`), which the table may repeat but not contradict.
pub(super) fn component_of(written: Option<String>, deployed: Option<&str>) -> Result<String> {
    match (written, deployed) {
        (Some(c), Some(d)) if c != d => bail!(
            "field `component`: the triggers of a deploy run the component deployed (`{d}`), not {c:?}"
        ),
        (_, Some(d)) => Ok(d.to_string()),
        (Some(c), None) => Ok(c),
        (None, None) => bail!("missing field `component`"),
    }
}

/// Writes a value with its `Display`, which its `FromStr` (and so its `Deserialize`) reads
/// back: rates (`100/min`) and backoffs (`fixed:1s`).
fn as_text<T: Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// One `[[trigger.http]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTriggerConfig {
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_text"
    )]
    pub rate_limit: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
}

/// One HTTP route of a component, checked.
#[derive(Debug, Clone)]
#[expect(
    clippy::manual_non_exhaustive,
    reason = "`#[non_exhaustive]` would not stop the rest of the crate from making one unchecked"
)]
pub struct HttpTrigger {
    /// `/exact/path`, or `/prefix/...` for the prefix and everything below it.
    pub route: String,
    pub component: String,
    /// Methods this trigger answers; empty means all.
    pub methods: Vec<String>,
    /// Requests per client beyond this get 429 before any instance is created, e.g.
    /// `"100/min"`; shared by every host on the same Redis.
    pub rate_limit: Option<Rate>,
    /// Requests a client may make at once before the rate applies (default: the rate's
    /// count).
    pub burst: Option<u32>,
    /// Who a client is: `"ip"` (default) or `"header:NAME"` (e.g. `"header:x-api-key"`; a
    /// request without the header is keyed by its IP).
    pub rate_limit_key: Option<String>,
    /// Requests with a larger body get 413 before any instance is created.
    pub max_body_size: ByteSize,
    /// Private, so that only [`HttpTriggerConfig::validate`] makes one: every route the
    /// host serves has passed [`HttpTrigger::check`], so none is on a host path.
    _checked: (),
}

impl HttpTriggerConfig {
    /// The route `/route` on every method, nothing else set.
    pub fn route(route: impl Into<String>) -> Self {
        Self {
            route: route.into(),
            ..Default::default()
        }
    }

    /// The trigger checked against `components` and the routes `seen` so far; `deployed` is
    /// the component of a deploy's triggers (see [`component_of`]).
    pub(super) fn validate(
        self,
        deployed: Option<&str>,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut HashSet<(String, String)>,
    ) -> Result<HttpTrigger> {
        let trigger = HttpTrigger {
            component: component_of(self.component, deployed)?,
            route: self.route,
            methods: self.methods,
            rate_limit: self.rate_limit,
            burst: self.burst,
            rate_limit_key: self.rate_limit_key,
            max_body_size: self.max_body_size.unwrap_or(ByteSize::mib(1)),
            _checked: (),
        };
        trigger.check(components, seen)?;
        Ok(trigger)
    }
}

impl HttpTrigger {
    /// Every rule of a route: its component is declared, its path is well formed and not the
    /// host's own, its rate limit and methods make sense, and no route of `seen` has its path
    /// and a method of it.
    pub(super) fn check(
        &self,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut HashSet<(String, String)>,
    ) -> Result<()> {
        let t = self;
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
}

/// One `[[trigger.queue]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTriggerConfig {
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_text"
    )]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window: Option<HumanDuration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_text"
    )]
    pub rate: Option<Rate>,
}

/// A queue and the component that processes its jobs, checked. It also reads from TOML with
/// the manifest's defaults, for tests that need one without a manifest.
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
    pub backoff: Backoff,
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
    pub rate: Option<Rate>,
}

impl QueueTriggerConfig {
    /// The queue `queue`, nothing else set.
    pub fn queue(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            ..Default::default()
        }
    }

    /// The trigger checked against `components` and the queues `seen` so far; `deployed` is
    /// the component of a deploy's triggers (see [`component_of`]).
    pub(super) fn validate(
        self,
        deployed: Option<&str>,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut HashSet<String>,
    ) -> Result<QueueTrigger> {
        let trigger = QueueTrigger {
            component: component_of(self.component, deployed)?,
            queue: self.queue,
            concurrency: self.concurrency.unwrap_or_else(defaults::concurrency),
            max_attempts: self.max_attempts.unwrap_or_else(defaults::max_attempts),
            backoff: self.backoff.unwrap_or_else(defaults::backoff),
            timeout: self.timeout.unwrap_or_else(defaults::job_timeout),
            visibility: self.visibility.unwrap_or_else(defaults::visibility),
            max_payload: self.max_payload.unwrap_or_else(defaults::max_payload),
            max_waiting: self.max_waiting.unwrap_or_else(defaults::max_waiting),
            dedup_window: self.dedup_window.unwrap_or_else(defaults::dedup_window),
            rate: self.rate,
        };
        trigger.check(components, seen)?;
        Ok(trigger)
    }
}

impl QueueTrigger {
    /// Every rule of a queue trigger: a simple name no other trigger of `seen` has, a
    /// declared component, and limits in range.
    pub(super) fn check(
        &self,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut HashSet<String>,
    ) -> Result<()> {
        let t = self;
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
        if !(1..=MAX_CONCURRENCY).contains(&t.concurrency) {
            bail!(
                "field `concurrency`: {} is outside 1..={MAX_CONCURRENCY}",
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
}

mod defaults {
    use super::{Backoff, ByteSize, HumanDuration};
    use std::time::Duration;

    pub fn concurrency() -> u32 {
        5
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn backoff() -> Backoff {
        Backoff::Exponential {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn components() -> BTreeMap<String, ComponentSpec> {
        let spec = ComponentSpec {
            name: "app".into(),
            source: "/app.wasm".into(),
            memory_limit: ByteSize::mib(64),
            timeout: Duration::from_secs(1),
            max_instances: 1,
            max_resources: 16,
            allowed_outbound_hosts: Vec::new(),
            environment: BTreeMap::new(),
            kv_namespace: "app".into(),
            config: BTreeMap::new(),
        };
        BTreeMap::from([("app".to_string(), spec)])
    }

    #[test]
    fn a_deploys_triggers_run_the_component_deployed() {
        let configs: TriggerConfigs = serde_json::from_value(serde_json::json!({
            "http": [{ "route": "/x", "methods": ["GET"] }],
            "queue": [{ "queue": "q", "concurrency": 2, "backoff": "fixed:10ms" }],
            "schedule": [{ "every": "1h" }]
        }))
        .unwrap();
        let t = configs.validate_deployed("app", &components()).unwrap();
        assert_eq!(t.http[0].component, "app");
        assert_eq!(t.http[0].max_body_size, ByteSize::mib(1));
        assert_eq!((t.queue[0].concurrency, t.queue[0].max_attempts), (2, 3));
        assert_eq!(t.schedule[0].name, "app");

        let other = TriggerConfigs {
            http: vec![HttpTriggerConfig {
                component: Some("other".into()),
                ..HttpTriggerConfig::route("/x")
            }],
            ..Default::default()
        };
        let e = format!(
            "{:#}",
            other.validate_deployed("app", &components()).unwrap_err()
        );
        assert!(e.starts_with("http trigger: field `component`"), "{e}");
    }

    #[test]
    fn a_deploy_route_on_a_host_path_is_refused_as_in_a_manifest() {
        for route in ["/admin/...", "/metrics"] {
            let configs = TriggerConfigs {
                http: vec![HttpTriggerConfig::route(route)],
                ..Default::default()
            };
            let e = format!(
                "{:#}",
                configs.validate_deployed("app", &components()).unwrap_err()
            );
            assert!(
                e.contains(&format!("route {route:?} of component `app` is reserved")),
                "{e}"
            );
        }
    }

    #[test]
    fn unset_fields_are_left_out_and_the_rest_reads_back() {
        let config = QueueTriggerConfig {
            concurrency: Some(3),
            backoff: Some("exponential:100ms..30s".parse().unwrap()),
            rate: Some("50/s".parse().unwrap()),
            ..QueueTriggerConfig::queue("q")
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "queue": "q", "concurrency": 3, "backoff": "exponential:100ms..30s", "rate": "50/s"
            })
        );
        assert_eq!(
            serde_json::from_value::<QueueTriggerConfig>(json).unwrap(),
            config
        );
        let http = HttpTriggerConfig {
            rate_limit: Some("100/min".parse().unwrap()),
            ..HttpTriggerConfig::route("/x")
        };
        let json = serde_json::to_value(&http).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "route": "/x", "rate_limit": "100/min" })
        );
    }
}
