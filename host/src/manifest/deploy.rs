//! `[deploy]`: the room a running host keeps for components deployed into it.

use anyhow::{Result, bail};
use serde::Deserialize;

use super::ByteSize;

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
        if self.max_memory_limit > super::MAX_MEMORY_LIMIT
            || self.max_memory_limit < super::MIN_MEMORY_LIMIT
        {
            bail!(
                "in [deploy]: field `max_memory_limit`: {} is outside {}..={}",
                self.max_memory_limit,
                super::MIN_MEMORY_LIMIT,
                super::MAX_MEMORY_LIMIT
            );
        }
        Ok(())
    }
}
