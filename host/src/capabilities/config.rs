//! `llmchat:runtime/config`: the component's own key/values from the manifest, its
//! `config` and its `secrets` (which the manifest keeps from overlapping).

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::config;

impl config::Host for &mut CapabilityCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let component = &self.component;
        Ok(component
            .config
            .get(&key)
            .cloned()
            .or_else(|| component.secrets.get(&key).map(|s| s.expose().to_string())))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        let component = &self.component;
        let config = component.config.iter().map(|(k, v)| (k.clone(), v.clone()));
        let secrets = (component.secrets.iter()).map(|(k, s)| (k.clone(), s.expose().to_string()));
        Ok(config.chain(secrets).collect())
    }
}
