//! Running components: the store's data, what the host links into every component, and
//! one invocation path shared by every trigger.

mod classify;
mod invoke;
mod state;

use wasmtime::component::Linker;

pub use invoke::{GuestAnswer, GuestCall, Invoked, invoke};
pub use state::{InvocationState, OutboundPolicy};

/// The process's engine, with [`InvocationState`] as the data of every store.
pub type ComponentEngine = crate::engine::ComponentEngine<InvocationState>;

/// Adds everything a component may import to `linker`: WASI (with an empty context),
/// `wasi:http`, and the llmchat interfaces. Passed to [`ComponentEngine::new`].
pub fn link(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    crate::capabilities::add_to_linker(linker, |state| &mut state.caps)
}
