//! What a deploy asks for, as JSON: the component's limits and config and, optionally, its
//! triggers. The same field names and units as the manifest's `[component.NAME]` and
//! `[[trigger.*]]` tables, parsed by the manifest's own code so both accept the same things.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of a deploy's `spec` (multipart) or what its query parameters say; also what a
/// deployment record keeps, with every limit filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_outbound_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, Value>>,
    /// `None`: keep the component's current triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<TriggerSpec>,
}

/// A component's triggers; each entry is a manifest trigger table without `component`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    #[serde(default)]
    pub http: Vec<Map<String, Value>>,
    #[serde(default)]
    pub queue: Vec<Map<String, Value>>,
    #[serde(default)]
    pub schedule: Vec<Map<String, Value>>,
}

impl DeploySpec {
    /// `self` with every field `newer` sets replaced: a redeploy keeps what it does not
    /// mention.
    pub fn merged_with(&self, newer: &DeploySpec) -> DeploySpec {
        DeploySpec {
            memory_limit: newer.memory_limit.clone().or(self.memory_limit.clone()),
            timeout: newer.timeout.clone().or(self.timeout.clone()),
            max_instances: newer.max_instances.or(self.max_instances),
            max_resources: newer.max_resources.or(self.max_resources),
            kv_namespace: newer.kv_namespace.clone().or(self.kv_namespace.clone()),
            allowed_outbound_hosts: newer
                .allowed_outbound_hosts
                .clone()
                .or(self.allowed_outbound_hosts.clone()),
            config: newer.config.clone().or(self.config.clone()),
            triggers: newer.triggers.clone().or(self.triggers.clone()),
        }
    }

    /// Checks the fields whose parse errors would not name them.
    pub fn check(&self) -> Result<(), String> {
        if let Some(m) = &self.memory_limit {
            m.parse::<crate::manifest::ByteSize>()
                .map_err(|e| format!("field `memory_limit` (query `memory`): {e}"))?;
        }
        if let Some(t) = &self.timeout {
            t.parse::<crate::manifest::HumanDuration>()
                .map_err(|e| format!("field `timeout`: {e}"))?;
        }
        Ok(())
    }

    /// The component fields, as a `[component.NAME]` table in JSON.
    pub fn component_fields(&self) -> Map<String, Value> {
        let mut fields = match serde_json::to_value(DeploySpec {
            triggers: None,
            ..self.clone()
        }) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        fields.remove("triggers");
        fields
    }

    /// Parses the query-parameter form of a deploy (see the README).
    pub fn from_query(query: &str) -> Result<DeploySpec, String> {
        let mut spec = DeploySpec::default();
        let mut triggers = TriggerSpec::default();
        let (mut routes, mut queues) = (Vec::new(), Vec::new());
        let (mut methods, mut concurrency, mut every, mut cron, mut schedule_timeout) =
            (None, None, None, None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (key, value) = (key.into_owned(), value.into_owned());
            match key.as_str() {
                "route" => routes.push(value),
                "methods" => methods = Some(value),
                "queue" => queues.push(value),
                "concurrency" => {
                    concurrency = Some(value.parse::<u32>().map_err(|_| {
                        format!("query parameter `concurrency`: {value:?} is not a whole number")
                    })?)
                }
                "every" => every = Some(value),
                "cron" => cron = Some(value),
                "schedule_timeout" => schedule_timeout = Some(value),
                "memory" | "memory_limit" => spec.memory_limit = Some(value),
                "timeout" => spec.timeout = Some(value),
                "max_instances" => {
                    spec.max_instances = Some(value.parse().map_err(|_| {
                        format!("query parameter `max_instances`: {value:?} is not a whole number")
                    })?)
                }
                "max_resources" => {
                    spec.max_resources = Some(value.parse().map_err(|_| {
                        format!("query parameter `max_resources`: {value:?} is not a whole number")
                    })?)
                }
                "kv_namespace" => spec.kv_namespace = Some(value),
                "allowed_outbound_hosts" => spec
                    .allowed_outbound_hosts
                    .get_or_insert_with(Vec::new)
                    .push(value),
                other => match other.strip_prefix("config.") {
                    Some(k) if !k.is_empty() => {
                        spec.config
                            .get_or_insert_with(BTreeMap::new)
                            .insert(k.to_string(), Value::String(value));
                    }
                    _ => return Err(format!("unknown query parameter `{other}`")),
                },
            }
        }
        for route in routes {
            let mut t = Map::new();
            t.insert("route".into(), Value::String(route));
            if let Some(m) = &methods {
                let list = m.split(',').map(|s| Value::String(s.trim().to_string()));
                t.insert("methods".into(), Value::Array(list.collect()));
            }
            triggers.http.push(t);
        }
        for queue in queues {
            let mut t = Map::new();
            t.insert("queue".into(), Value::String(queue));
            if let Some(c) = concurrency {
                t.insert("concurrency".into(), Value::from(c));
            }
            triggers.queue.push(t);
        }
        if every.is_some() || cron.is_some() {
            let mut t = Map::new();
            if let Some(e) = every {
                t.insert("every".into(), Value::String(e));
            }
            if let Some(c) = cron {
                t.insert("cron".into(), Value::String(c));
            }
            if let Some(timeout) = schedule_timeout {
                t.insert("timeout".into(), Value::String(timeout));
            }
            triggers.schedule.push(t);
        }
        if !(triggers.http.is_empty() && triggers.queue.is_empty() && triggers.schedule.is_empty())
        {
            spec.triggers = Some(triggers);
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_form_builds_limits_config_and_triggers() {
        let spec = DeploySpec::from_query(
            "route=/x&route=/y&methods=GET,POST&queue=q&concurrency=3&every=30s&memory=64MiB&config.greeting=hi",
        )
        .unwrap();
        assert_eq!(spec.memory_limit.as_deref(), Some("64MiB"));
        assert_eq!(spec.config.unwrap()["greeting"], "hi");
        let t = spec.triggers.unwrap();
        assert_eq!(t.http.len(), 2);
        assert_eq!(t.http[1]["methods"], serde_json::json!(["GET", "POST"]));
        assert_eq!(t.queue[0]["concurrency"], 3);
        assert_eq!(t.schedule[0]["every"], "30s");
    }

    #[test]
    fn no_trigger_parameter_keeps_the_current_triggers_and_unknown_ones_are_named() {
        assert_eq!(DeploySpec::from_query("timeout=5s").unwrap().triggers, None);
        let err = DeploySpec::from_query("rout=/x").unwrap_err();
        assert!(err.contains("`rout`"), "{err}");
    }

    #[test]
    fn a_redeploy_keeps_what_it_does_not_mention() {
        let v1 = DeploySpec {
            memory_limit: Some("64MiB".into()),
            timeout: Some("5s".into()),
            triggers: Some(TriggerSpec::default()),
            ..Default::default()
        };
        let v2 = v1.merged_with(&DeploySpec {
            timeout: Some("9s".into()),
            ..Default::default()
        });
        assert_eq!(v2.memory_limit.as_deref(), Some("64MiB"));
        assert_eq!(v2.timeout.as_deref(), Some("9s"));
        assert!(v2.triggers.is_some());
    }
}
