//! The one `bindgen!` of the host: Rust types and `Host` traits for `wit/`.
//!
//! It is generated for the `processor-and-monitor` world because that world holds
//! everything: every llmchat interface a component may import (`probe` included), and both
//! exports the host calls, `processor` and `monitoring`. A component exports either or both;
//! [`super::exports`] resolves each export on its own. WASI interfaces map to
//! wasmtime-wasi's own bindings; HTTP handlers use wasmtime-wasi-http's `ProxyPre`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "llmchat:runtime/processor-and-monitor",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "llmchat:runtime/llm.completion-stream": crate::capabilities::HostCompletionStream,
    },
});
