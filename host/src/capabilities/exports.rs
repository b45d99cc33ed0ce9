//! The component exports the host calls besides `wasi:http`: `processor` (one call per
//! job) and `monitoring` (one call per schedule tick), each resolved once per component and
//! called on a fresh instance.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::exports::llmchat::runtime::{monitoring, processor};
use crate::engine::InvocationState;

/// A component's `llmchat:runtime/processor` export, ready to instantiate.
#[derive(Clone)]
pub struct ProcessorPre {
    pre: InstancePre<InvocationState>,
    indices: Arc<processor::GuestIndices>,
}

impl ProcessorPre {
    /// Fails when the component does not export `processor`.
    pub fn new(pre: InstancePre<InvocationState>) -> wasmtime::Result<Self> {
        let indices = Arc::new(processor::GuestIndices::new(&pre)?);
        Ok(Self { pre, indices })
    }

    /// Instantiates the component in `store` and processes one job.
    pub async fn process(
        &self,
        store: &mut Store<InvocationState>,
        job: &processor::Job,
    ) -> wasmtime::Result<Result<String, processor::JobError>> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        let guest = self.indices.load(&mut *store, &instance)?;
        guest.call_process(store, job).await
    }
}

/// A component's `llmchat:runtime/monitoring` export, ready to instantiate.
#[derive(Clone)]
pub struct MonitorPre {
    pre: InstancePre<InvocationState>,
    indices: Arc<monitoring::GuestIndices>,
}

impl MonitorPre {
    /// Fails when the component does not export `monitoring`.
    pub fn new(pre: InstancePre<InvocationState>) -> wasmtime::Result<Self> {
        let indices = Arc::new(monitoring::GuestIndices::new(&pre)?);
        Ok(Self { pre, indices })
    }

    /// Instantiates the component in `store` and runs one tick.
    pub async fn run(
        &self,
        store: &mut Store<InvocationState>,
        tick: &monitoring::Tick,
    ) -> wasmtime::Result<Result<monitoring::Report, String>> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        let guest = self.indices.load(&mut *store, &instance)?;
        guest.call_run(store, tick).await
    }
}
