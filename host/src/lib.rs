//! llmchat: a runtime for an LLM chat backend whose business logic is WebAssembly
//! components, each instantiated for one job and dropped afterwards.
//!
//! One owner type per concern, built once in `main` and handed down:
//! - [`manifest::Manifest`]: what runs, with which limits and triggers;
//! - [`engine::ComponentEngine`]: the wasmtime engine, pool, artifact cache, epoch ticker;
//! - [`registry::Registry`]: the loaded components, ready to instantiate;
//! - [`capabilities::Services`]: the kv and llm backends behind the WIT imports;
//! - [`metrics::Metrics`]: the Prometheus registry and per-component metric handles;
//! - [`http::HttpServer`]: HTTP triggers and the host's own endpoints;
//! - [`admin`]: the admin API, behind a bearer token or the loopback-only rule.

pub mod admin;
pub mod capabilities;
pub mod dashboard;
pub mod deploy;
pub mod engine;
#[cfg(test)]
mod floors;
pub mod http;
pub mod kv;
pub mod limits;
pub mod llm;
pub mod manifest;
pub mod metrics;
pub mod queue;
pub mod redis;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod telemetry;
pub mod timers;
pub mod triggers;

/// Every host allocation goes through the budget accounting, so that what the host holds
/// for a component counts against the component's `memory_limit` (see [`engine::budget`]).
#[global_allocator]
static ALLOCATOR: engine::budget::HostAllocator = engine::budget::HostAllocator;
