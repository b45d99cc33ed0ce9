//! Bindings for the `llmchat:runtime` capabilities this component imports.
//!
//! Only the `capabilities` world is generated here: the `wasi:http` side (export and the
//! WASI imports) comes from `wstd`'s own bindings, and both sets end up in one component.

wit_bindgen::generate!({
    path: "../../wit",
    world: "llmchat:runtime/capabilities",
});

pub use llmchat::runtime::{config, kv, llm, log, queue};
