//! `[[trigger.http]]`: a route of a component.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{Export, TriggerKind, as_text, check_declared, component_of};
use crate::manifest::{ByteSize, ComponentSpec, Rate, check_method, check_route, host_path};

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
    /// Private, so that only [`TriggerKind::validate`] makes one: every route the
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
}

impl TriggerKind for HttpTrigger {
    type Config = HttpTriggerConfig;
    /// Each route with each of its methods (`*` for all).
    type Seen = HashSet<(String, String)>;
    const EXPORT: Export = Export::Http;

    fn label(config: &HttpTriggerConfig) -> String {
        format!("route {:?}", config.route)
    }

    fn validate(
        config: HttpTriggerConfig,
        deployed: Option<&str>,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<HttpTrigger> {
        let trigger = HttpTrigger {
            component: component_of(config.component, deployed)?,
            route: config.route,
            methods: config.methods,
            rate_limit: config.rate_limit,
            burst: config.burst,
            rate_limit_key: config.rate_limit_key,
            max_body_size: config.max_body_size.unwrap_or(ByteSize::mib(1)),
            _checked: (),
        };
        trigger.check(components, seen)?;
        Ok(trigger)
    }

    /// Every rule of a route: its component is declared, its path is well formed and not the
    /// host's own, its rate limit and methods make sense, and no route of `seen` has its path
    /// and a method of it.
    fn check(
        &self,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<()> {
        let t = self;
        check_declared(&t.component, components)?;
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

    fn component(&self) -> &str {
        &self.component
    }

    fn describe(&self) -> String {
        format!("route {:?}", self.route)
    }

    fn clash(&self, theirs: &HttpTrigger) -> Option<String> {
        let overlap = |a: &[String], b: &[String]| {
            a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
        };
        (theirs.route == self.route && overlap(&theirs.methods, &self.methods)).then(|| {
            format!(
                "route {:?} belongs to component `{}`",
                self.route, theirs.component
            )
        })
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "route": self.route, "methods": self.methods })
    }
}
