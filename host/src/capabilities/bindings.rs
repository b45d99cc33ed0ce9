//! The one `bindgen!` of the host: Rust types and `Host` traits for `wit/`.
//!
//! It is generated for the `queue-processor` world because that world holds everything:
//! every llmchat interface a component may import, and the `processor` export the queue
//! worker calls. WASI interfaces map to wasmtime-wasi's own bindings; HTTP handlers use
//! wasmtime-wasi-http's `ProxyPre` for their export.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "llmchat:runtime/queue-processor",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "llmchat:runtime/llm.completion-stream": crate::capabilities::HostCompletionStream,
    },
});
