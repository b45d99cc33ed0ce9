//! The query-parameter form of a deploy (see the README), read into the same
//! [`DeploySpec`] as the multipart form's JSON `spec` and the manifest's tables, so all three
//! are checked by the same code.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::manifest::{
    ConfigValue, DeploySpec, HttpTriggerConfig, QueueTriggerConfig, ScheduleTriggerConfig,
    TriggerConfigs,
};

/// `value` read as a size, a duration...; an error names `what`.
fn parsed<T: FromStr<Err = String>>(value: &str, what: &str) -> Result<T, String> {
    value.parse().map_err(|e| format!("{what}: {e}"))
}

/// Parses the query-parameter form of a deploy.
pub fn parse_query(query: &str) -> Result<DeploySpec, String> {
    let mut spec = DeploySpec::default();
    let c = &mut spec.component;
    let mut triggers = TriggerConfigs::default();
    let mut schedule = ScheduleTriggerConfig::default();
    let (mut methods, mut concurrency) = (Vec::new(), None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let (key, value) = (key.into_owned(), value.into_owned());
        let number = |what: &str| {
            value
                .parse::<u32>()
                .map_err(|_| format!("query parameter `{what}`: {value:?} is not a whole number"))
        };
        match key.as_str() {
            "route" => triggers.http.push(HttpTriggerConfig::route(value)),
            "methods" => methods = value.split(',').map(|m| m.trim().to_string()).collect(),
            "queue" => triggers.queue.push(QueueTriggerConfig::queue(value)),
            "concurrency" => concurrency = Some(number("concurrency")?),
            "every" => schedule.every = Some(parsed(&value, "query parameter `every`")?),
            "cron" => schedule.cron = Some(value),
            "schedule_timeout" => {
                schedule.timeout = Some(parsed(&value, "query parameter `schedule_timeout`")?)
            }
            "memory" | "memory_limit" => {
                c.memory_limit = Some(parsed(&value, "field `memory_limit` (query `memory`)")?)
            }
            "timeout" => c.timeout = Some(parsed(&value, "field `timeout`")?),
            "max_instances" => c.max_instances = Some(number("max_instances")?),
            "max_resources" => c.max_resources = Some(number("max_resources")?),
            "kv_namespace" => c.kv_namespace = Some(value),
            "allowed_outbound_hosts" => c
                .allowed_outbound_hosts
                .get_or_insert_with(Vec::new)
                .push(value),
            other => match other.strip_prefix("config.") {
                Some(k) if !k.is_empty() => {
                    c.config
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k.to_string(), ConfigValue(value));
                }
                _ => return Err(format!("unknown query parameter `{other}`")),
            },
        }
    }
    for t in &mut triggers.http {
        t.methods.clone_from(&methods);
    }
    for t in &mut triggers.queue {
        t.concurrency = concurrency;
    }
    if schedule.every.is_some() || schedule.cron.is_some() {
        triggers.schedule.push(schedule);
    }
    if !(triggers.http.is_empty() && triggers.queue.is_empty() && triggers.schedule.is_empty()) {
        spec.triggers = Some(triggers);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ByteSize, HumanDuration};

    #[test]
    fn the_query_form_builds_limits_config_and_triggers() {
        let spec = parse_query(
            "route=/x&route=/y&methods=GET,POST&queue=q&concurrency=3&every=30s&memory=64MiB&config.greeting=hi",
        )
        .unwrap();
        assert_eq!(spec.component.memory_limit, Some(ByteSize::mib(64)));
        assert_eq!(
            spec.component.config.unwrap()["greeting"],
            ConfigValue("hi".into())
        );
        let t = spec.triggers.unwrap();
        assert_eq!(t.http.len(), 2);
        assert_eq!(t.http[1].methods, ["GET", "POST"]);
        assert_eq!(t.queue[0].concurrency, Some(3));
        assert_eq!(
            t.schedule[0].every,
            Some(HumanDuration(std::time::Duration::from_secs(30)))
        );
    }

    #[test]
    fn no_trigger_parameter_keeps_the_current_triggers_and_unknown_ones_are_named() {
        assert_eq!(parse_query("timeout=5s").unwrap().triggers, None);
        let err = parse_query("rout=/x").unwrap_err();
        assert!(err.contains("`rout`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (query, want) in [
            ("memory=lots", "memory"),
            ("timeout=soon", "timeout"),
            ("max_instances=many", "max_instances"),
            ("every=30", "every"),
        ] {
            let err = parse_query(query).unwrap_err();
            assert!(err.contains(want), "{query}: {err}");
        }
    }
}
