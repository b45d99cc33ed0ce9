//! The one `bindgen!` of the host: Rust types and `Host` traits for `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "llmchat:runtime/capabilities",
    imports: { default: async | trappable },
    with: {
        "llmchat:runtime/llm.completion-stream": crate::capabilities::HostCompletionStream,
    },
});
