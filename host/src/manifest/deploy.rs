//! `[deploy]`: the room a running host keeps for components deployed into it; and
//! [`DeploySpec`], what a deploy asks for.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{ByteSize, ComponentConfig, MAX_MEMORY_LIMIT, MIN_MEMORY_LIMIT, TriggerConfigs};

/// What a deploy asks for: the `[component.NAME]` fields (without `source`: a deploy sends
/// the bytes) and, optionally, the component's triggers, each a manifest trigger table
/// without `component`. The body of a deploy's `spec` part, what its query parameters say,
/// what `llmchat deploy` sends, and what a deployment record keeps (then with every limit
/// filled in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    #[serde(flatten)]
    pub component: ComponentConfig,
    /// `None`: keep the component's current triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<TriggerConfigs>,
}

impl DeploySpec {
    /// `self` with every field `newer` sets replaced: a redeploy keeps what it does not
    /// mention.
    pub fn merged_with(&self, newer: &DeploySpec) -> DeploySpec {
        DeploySpec {
            component: self.component.merged_with(&newer.component),
            triggers: newer.triggers.clone().or_else(|| self.triggers.clone()),
        }
    }
}

/// The pool is sized at start-up; components deployed later must fit in what is reserved
/// here, on top of what the manifest's components take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// Largest component accepted by `PUT /admin/components/NAME` (413 beyond).
    #[serde(default = "default_max_component_size")]
    pub max_component_size: ByteSize,
    /// Instance slots reserved for deployed components (their `max_instances` add up).
    #[serde(default = "default_reserve_instances")]
    pub reserve_instances: u32,
    /// Largest `memory_limit` a deployed component may ask for; sizes each pool slot.
    #[serde(default = "default_max_memory_limit")]
    pub max_memory_limit: ByteSize,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            max_component_size: default_max_component_size(),
            reserve_instances: default_reserve_instances(),
            max_memory_limit: default_max_memory_limit(),
        }
    }
}

fn default_max_component_size() -> ByteSize {
    ByteSize(32 << 20)
}

fn default_reserve_instances() -> u32 {
    256
}

fn default_max_memory_limit() -> ByteSize {
    ByteSize(128 << 20)
}

impl DeploySettings {
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_component_size.bytes() == 0 {
            bail!("in [deploy]: field `max_component_size` must be greater than zero");
        }
        if self.reserve_instances > 10_000 {
            bail!(
                "in [deploy]: field `reserve_instances`: {} is outside 0..=10000",
                self.reserve_instances
            );
        }
        if self.max_memory_limit > MAX_MEMORY_LIMIT || self.max_memory_limit < MIN_MEMORY_LIMIT {
            bail!(
                "in [deploy]: field `max_memory_limit`: {} is outside {}..={}",
                self.max_memory_limit,
                MIN_MEMORY_LIMIT,
                MAX_MEMORY_LIMIT
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_the_component_fields_and_triggers_and_nothing_else() {
        let spec: DeploySpec = serde_json::from_value(serde_json::json!({
            "memory_limit": "32MiB",
            "environment": { "A": "1" },
            "triggers": { "http": [{ "route": "/x" }] }
        }))
        .unwrap();
        assert_eq!(spec.component.memory_limit, Some(ByteSize::mib(32)));
        assert_eq!(spec.triggers.as_ref().unwrap().http[0].route, "/x");
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({
                "memory_limit": "32MiB",
                "environment": { "A": "1" },
                "triggers": { "http": [{ "route": "/x" }], "queue": [], "schedule": [] }
            })
        );
        for (typo, field) in [
            (serde_json::json!({ "memroy": "1MiB" }), "memroy"),
            (serde_json::json!({ "triggers": { "htp": [] } }), "htp"),
            (
                serde_json::json!({ "triggers": { "http": [{ "route": "/x", "rout": "/y" }] } }),
                "rout",
            ),
        ] {
            let e = serde_json::from_value::<DeploySpec>(typo).unwrap_err();
            assert!(
                e.to_string().contains(&format!("unknown field `{field}`")),
                "{e}"
            );
        }
        let e = serde_json::from_value::<DeploySpec>(serde_json::json!({ "timeout": "soon" }))
            .unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn a_redeploy_keeps_what_it_does_not_mention() {
        let v1 = DeploySpec {
            component: ComponentConfig {
                memory_limit: Some(ByteSize::mib(64)),
                ..Default::default()
            },
            triggers: Some(TriggerConfigs::default()),
        };
        let v2 = v1.merged_with(&DeploySpec::default());
        assert_eq!(v2, v1);
    }
}
