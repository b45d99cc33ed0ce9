//! Bindings for the `llmchat:runtime/monitor` world: the capabilities and probes this
//! component imports and the `monitoring` interface it exports.

wit_bindgen::generate!({
    path: "../../wit",
    world: "llmchat:runtime/monitor",
    // The world includes `wasi:cli/imports` for std's sake; nothing here calls WASI
    // directly, and the linker keeps only the imports that are used.
    generate_all,
});

pub use exports::llmchat::runtime::monitoring::{Alert, Guest, Report, Sample, Severity, Tick};
pub use llmchat::runtime::{config, probe};
