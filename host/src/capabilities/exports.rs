//! The component exports the host calls besides `wasi:http`: `processor` (one call per
//! job) and `monitoring` (one call per schedule tick), each resolved once per component and
//! called on a fresh instance.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::exports::llmchat::runtime::{monitoring, processor};
use crate::metrics::{MonitorAlert, MonitorReport, MonitorSample, Severity};

/// A component's `llmchat:runtime/processor` export, ready to instantiate.
pub struct ProcessorPre<T: 'static> {
    pre: InstancePre<T>,
    indices: Arc<processor::GuestIndices>,
}

impl<T: 'static> Clone for ProcessorPre<T> {
    fn clone(&self) -> Self {
        Self {
            pre: self.pre.clone(),
            indices: self.indices.clone(),
        }
    }
}

impl<T: Send + 'static> ProcessorPre<T> {
    /// Fails when the component does not export `processor`.
    pub fn new(pre: InstancePre<T>) -> wasmtime::Result<Self> {
        let indices = Arc::new(processor::GuestIndices::new(&pre)?);
        Ok(Self { pre, indices })
    }

    /// Instantiates the component in `store` and processes one job.
    pub async fn process(
        &self,
        store: &mut Store<T>,
        job: &processor::Job,
    ) -> wasmtime::Result<Result<String, processor::JobError>> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        let guest = self.indices.load(&mut *store, &instance)?;
        guest.call_process(store, job).await
    }
}

/// A component's `llmchat:runtime/monitoring` export, ready to instantiate.
pub struct MonitorPre<T: 'static> {
    pre: InstancePre<T>,
    indices: Arc<monitoring::GuestIndices>,
}

impl<T: 'static> Clone for MonitorPre<T> {
    fn clone(&self) -> Self {
        Self {
            pre: self.pre.clone(),
            indices: self.indices.clone(),
        }
    }
}

impl<T: Send + 'static> MonitorPre<T> {
    /// Fails when the component does not export `monitoring`.
    pub fn new(pre: InstancePre<T>) -> wasmtime::Result<Self> {
        let indices = Arc::new(monitoring::GuestIndices::new(&pre)?);
        Ok(Self { pre, indices })
    }

    /// Instantiates the component in `store` and runs one tick.
    pub async fn run(
        &self,
        store: &mut Store<T>,
        tick: &monitoring::Tick,
    ) -> wasmtime::Result<Result<monitoring::Report, String>> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        let guest = self.indices.load(&mut *store, &instance)?;
        guest.call_run(store, tick).await
    }
}

/// A monitor's report as metrics publishes it.
impl From<&monitoring::Report> for MonitorReport {
    fn from(report: &monitoring::Report) -> Self {
        MonitorReport {
            samples: report
                .samples
                .iter()
                .map(|s| MonitorSample {
                    name: s.name.clone(),
                    labels: s.labels.clone(),
                    value: s.value,
                })
                .collect(),
            alerts: report
                .alerts
                .iter()
                .map(|a| MonitorAlert {
                    severity: a.severity.into(),
                    message: a.message.clone(),
                })
                .collect(),
        }
    }
}

impl From<monitoring::Severity> for Severity {
    fn from(s: monitoring::Severity) -> Self {
        match s {
            monitoring::Severity::Info => Severity::Info,
            monitoring::Severity::Warning => Severity::Warning,
            monitoring::Severity::Critical => Severity::Critical,
        }
    }
}
