//! One invocation of a component, the same for every trigger.
//!
//! An HTTP request, a queue job and a schedule tick all run a component the same way: a
//! fresh store with the component's limits, the guest's call under its deadline, memory
//! budget and fair share of the CPU, the failure classified, the metrics and the log
//! written, and what the guest printed kept for the error. [`invoke`] does all of that
//! once; a trigger only says what to call, and what the answer means to it. With tracing
//! on, the guest runs inside its invocation span, so the spans of its capability calls
//! nest under it.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::Store;

use super::InvocationState;
use crate::engine::{InvocationError, InvocationLimits, with_deadline};
use crate::metrics::{ComponentMetrics, ErrorKind};

/// The guest call of one invocation: given the store, the future of the export's result.
pub type GuestCall<'s, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 's>>;

/// How an invocation ended, with its store (dropped by the caller when it is done with it:
/// dropping it frees the instance's pool slot and ends anything the guest left open).
pub struct Invoked<R> {
    /// What the export returned, or why the invocation failed.
    pub result: Result<R, InvocationError>,
    pub store: Store<InvocationState>,
}

/// Whether an export's answer is itself a failure (a job's or a monitor's `err`), which the
/// metrics count as `guest` errors.
pub trait GuestAnswer {
    fn is_guest_error(&self) -> bool;
}

impl GuestAnswer for () {
    fn is_guest_error(&self) -> bool {
        false
    }
}

impl<T, E> GuestAnswer for Result<T, E> {
    fn is_guest_error(&self) -> bool {
        self.is_err()
    }
}

/// Runs `call` on `store` (made by `registry::LoadedComponent::new_store`) under `timeout`,
/// then records the invocation of component `name` in `metrics` and the log.
pub async fn invoke<R: GuestAnswer>(
    name: &str,
    mut store: Store<InvocationState>,
    timeout: Duration,
    metrics: &ComponentMetrics,
    call: impl for<'s> FnOnce(&'s mut Store<InvocationState>) -> GuestCall<'s, R>,
) -> Invoked<R> {
    let started = Instant::now();
    let span = crate::telemetry::spans::invocation(
        name,
        store.data().caps.component_hash(),
        metrics.trigger().as_str(),
    );
    let limits = InvocationLimits::of(&store, timeout);
    let result = with_deadline(limits, call(&mut store))
        .instrument(span.clone())
        .await;
    // In the span, so that its log line carries the trace's ids.
    let kind = span.in_scope(|| report(name, metrics, store.data(), &result, started.elapsed()));
    crate::telemetry::spans::record_outcome(
        &span,
        kind.map_or("ok", ErrorKind::as_str),
        store.data().peak_memory(),
    );
    Invoked { result, store }
}

/// Records the end of an invocation in the metrics and the log; a failure is logged with
/// what the guest wrote to stderr. Returns the kind of failure, if any.
fn report<R: GuestAnswer>(
    name: &str,
    metrics: &ComponentMetrics,
    state: &InvocationState,
    result: &Result<R, InvocationError>,
    elapsed: Duration,
) -> Option<ErrorKind> {
    let peak = state.peak();
    let error = match result {
        Ok(answer) if answer.is_guest_error() => Some(ErrorKind::Guest),
        Ok(_) => None,
        Err(e) => Some(ErrorKind::from(e)),
    };
    metrics.invocation(elapsed, peak, error);
    let elapsed_us = elapsed.as_micros() as u64;
    let invocation = state.caps.invocation();
    match result {
        Ok(_) => tracing::debug!(
            component = name,
            invocation,
            elapsed_us,
            peak_memory = peak.total,
            peak_host_memory = peak.host,
            "invocation done"
        ),
        Err(e) => tracing::warn!(
            component = name,
            invocation,
            kind = e.kind(),
            elapsed_us,
            peak_memory = peak.total,
            peak_host_memory = peak.host,
            guest_output = %state.guest_output(),
            "invocation failed: {e}"
        ),
    }
    error
}
