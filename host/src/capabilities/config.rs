//! `llmchat:runtime/config`: the component's own key/values from the manifest.

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::config;

impl config::Host for &mut CapabilityCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.component.config.get(&key).cloned())
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .component
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
