//! Bindings for the `llmchat:runtime/queue-processor` world: the capabilities this
//! component imports and the `processor` interface it exports.

wit_bindgen::generate!({
    path: "../../wit",
    world: "llmchat:runtime/queue-processor",
    // The world includes `wasi:cli/imports` for std's sake; nothing here calls WASI
    // directly, and the linker keeps only the imports that are used.
    generate_all,
});

pub use exports::llmchat::runtime::processor::{Guest, Job, JobError};
pub use llmchat::runtime::{config, kv, llm, queue};
