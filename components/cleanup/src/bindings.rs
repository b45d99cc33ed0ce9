//! Bindings for the `llmchat:runtime/processor-and-monitor` world: the capabilities this
//! component imports and the two interfaces it exports, `processor` (one call per job) and
//! `monitoring` (one call per schedule tick).

wit_bindgen::generate!({
    path: "../../wit",
    world: "llmchat:runtime/processor-and-monitor",
    // The world includes `wasi:cli/imports` for std's sake; nothing here calls WASI
    // directly, and the linker keeps only the imports that are used.
    generate_all,
});

pub use exports::llmchat::runtime::monitoring::{self, Report, Sample, Tick};
pub use exports::llmchat::runtime::processor::{self, Job, JobError};
pub use llmchat::runtime::kv;
