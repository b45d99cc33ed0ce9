//! Every invocation of the host, whatever its component, for the dashboard: a count per
//! trigger and a latency histogram whose quantiles are read per sampling window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Trigger;
use super::quantiles::{LogHistogram, Snapshot};

#[derive(Default)]
pub struct Activity {
    /// Indexed by [`Trigger::index`].
    invocations: [AtomicU64; Trigger::ALL.len()],
    latency: LogHistogram,
}

/// The activity totals at one moment.
#[derive(Clone, Default)]
pub struct ActivitySnapshot {
    pub invocations: [u64; Trigger::ALL.len()],
    pub latency: Snapshot,
}

impl Activity {
    pub(super) fn record(&self, trigger: Trigger, elapsed: Duration) {
        self.invocations[trigger.index()].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }

    pub fn snapshot(&self) -> ActivitySnapshot {
        ActivitySnapshot {
            invocations: std::array::from_fn(|i| self.invocations[i].load(Ordering::Relaxed)),
            latency: self.latency.snapshot(),
        }
    }
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity").finish_non_exhaustive()
    }
}
