//! The host side of the llmchat WIT imports (`kv`, `llm`, `log`, `config`, `queue`,
//! `probe`) and the exports the host calls ([`exports`]), generic over the store's data:
//! a store only has to hold a [`CapabilityCtx`].
//!
//! [`Services`] holds the shared backends, built once in `main`. Each invocation gets a
//! [`CapabilityCtx`] that binds those services to one component (its name is the kv
//! namespace, its config is what `config` returns). Adding a capability means: a WIT file,
//! one module here, and one `Host` bound in [`add_to_linker`].

mod bindings;
mod config;
mod exports;
mod kv;
mod llm;
mod log;
mod probe;
mod queue;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::kv::KvStore;
use crate::llm::LlmProvider;
use crate::manifest::Secret;
use crate::queue::Queues;
use crate::redis::RedisPool;

pub use bindings::exports::llmchat::runtime::monitoring::{
    Alert as WitAlert, Report as WitReport, Sample as WitSample, Severity as WitSeverity,
    Tick as WitTick,
};
pub use bindings::exports::llmchat::runtime::processor::{Job as WitJob, JobError as WitJobError};
pub use exports::{MonitorPre, ProcessorPre};
pub use llm::HostCompletionStream;

/// The backends every component's capabilities go through; built once per process.
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub llm: Arc<dyn LlmProvider>,
    pub queues: Arc<Queues>,
    /// For the `probe` capability's latency measurement; `None` without Redis.
    pub redis: Option<Arc<RedisPool>>,
    /// LLM call turns (host-wide and per component) and token counters.
    pub llm_gate: Arc<crate::limits::llm::LlmGate>,
}

/// What the capabilities know about the component they serve.
pub struct ComponentIdentity {
    pub name: String,
    /// Where its kv keys live: its name, or a namespace the manifest lets it share.
    pub kv_namespace: String,
    pub config: BTreeMap<String, String>,
    /// Read through `config` as well; never printed (see [`Secret`]).
    pub secrets: BTreeMap<String, Secret>,
    /// The first 12 hex digits of the SHA-256 of its wasm: which build runs, in traces.
    pub hash: String,
}

/// The per-invocation capability state.
pub struct CapabilityCtx {
    component: Arc<ComponentIdentity>,
    services: Arc<Services>,
    /// Open llm streams; separate from the WASI table so capabilities own their resources.
    streams: ResourceTable,
    /// Log lines this invocation has written, against [`log::MAX_LINES`].
    log_lines: u32,
    /// This invocation's number in the process, on its log lines ([`CapabilityCtx::invocation`]).
    invocation: u64,
    /// The job a queue processor runs, for `queue.progress`.
    job: Option<queue::RunningJob>,
}

/// The last invocation number handed out.
static INVOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl CapabilityCtx {
    /// `max_resources` caps the handles of the capabilities' own table, as the WASI table's.
    pub fn new(
        component: Arc<ComponentIdentity>,
        services: Arc<Services>,
        max_resources: usize,
    ) -> Self {
        let mut streams = ResourceTable::new();
        streams.set_max_capacity(max_resources);
        Self {
            component,
            services,
            streams,
            log_lines: 0,
            invocation: INVOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            job: None,
        }
    }

    /// Makes this invocation the processing of `delivery` (its `progress` goes to that job).
    pub fn set_job(&mut self, delivery: crate::queue::Delivery) {
        self.job = Some(queue::RunningJob::new(delivery));
    }

    /// Writes a progress value held back by the rate bound, when the attempt ends; returns
    /// whether the attempt reported any progress.
    pub async fn flush_progress(&mut self) -> bool {
        match &mut self.job {
            Some(job) => {
                job.flush(&self.services.queues).await;
                job.reported
            }
            None => false,
        }
    }

    /// This invocation's number, unique in the process (from 1, in order of creation): the
    /// `invocation` field of the guest's log lines and of the host's line on its end, so an
    /// operator can tell apart the lines of two concurrent invocations of one component.
    pub fn invocation(&self) -> u64 {
        self.invocation
    }

    /// The short hash of the component's wasm ([`ComponentIdentity::hash`]).
    pub fn component_hash(&self) -> &str {
        &self.component.hash
    }
}

struct Capabilities;

impl HasData for Capabilities {
    type Data<'a> = &'a mut CapabilityCtx;
}

/// Adds the llmchat interfaces to `linker`; `caps` finds the capability state in a store's
/// data, whatever else that data holds.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    caps: fn(&mut T) -> &mut CapabilityCtx,
) -> wasmtime::Result<()> {
    use bindings::llmchat::runtime::{config, kv, llm, log, probe, queue};
    kv::add_to_linker::<_, Capabilities>(linker, caps)?;
    llm::add_to_linker::<_, Capabilities>(linker, caps)?;
    log::add_to_linker::<_, Capabilities>(linker, caps)?;
    config::add_to_linker::<_, Capabilities>(linker, caps)?;
    queue::add_to_linker::<_, Capabilities>(linker, caps)?;
    probe::add_to_linker::<_, Capabilities>(linker, caps)
}
