//! The host side of the llmchat WIT imports: `kv`, `llm`, `log` and `config`.
//!
//! [`Services`] holds the shared backends, built once in `main`. Each invocation gets a
//! [`CapabilityCtx`] that binds those services to one component (its name is the kv
//! namespace, its config is what `config` returns). Adding a capability means: a WIT file,
//! one module here, and one `Host` bound in [`add_to_linker`].

mod bindings;
mod config;
mod kv;
mod llm;
mod log;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::engine::InvocationState;
use crate::kv::KvStore;
use crate::llm::LlmProvider;

pub use llm::HostCompletionStream;

/// The backends every component's capabilities go through; built once per process.
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub llm: Arc<dyn LlmProvider>,
}

/// What the capabilities know about the component they serve.
pub struct ComponentIdentity {
    pub name: String,
    pub config: BTreeMap<String, String>,
}

/// The per-invocation capability state.
pub struct CapabilityCtx {
    component: Arc<ComponentIdentity>,
    services: Arc<Services>,
    /// Open llm streams; separate from the WASI table so capabilities own their resources.
    streams: ResourceTable,
}

impl CapabilityCtx {
    pub fn new(component: Arc<ComponentIdentity>, services: Arc<Services>) -> Self {
        Self {
            component,
            services,
            streams: ResourceTable::new(),
        }
    }
}

struct Capabilities;

impl HasData for Capabilities {
    type Data<'a> = &'a mut CapabilityCtx;
}

/// Adds WASI (with an empty context), `wasi:http` and the llmchat interfaces to `linker`.
pub fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    bindings::Capabilities::add_to_linker::<InvocationState, Capabilities>(linker, |s| &mut s.caps)
}
