//! The single owner of time: everything periodic in the host is an entry here, and one
//! task runs them all.
//!
//! The old backend ran 50+ `setInterval`s; here the queue worker's delayed-job promotion,
//! stalled-job reclaim and heartbeats, the kv expiry sweep, the dashboard's sampling and
//! every `[[trigger.schedule]]` are entries of one [`Scheduler`]: a priority queue of due
//! times and ONE task that sleeps until the earliest (one armed timer, whatever the number
//! of entries). When an entry is due its work starts as a future polled by that same task
//! (work is I/O: a Redis round trip, a spawn), so a slow Redis call never delays another
//! entry, and an entry is never started again while its previous run is still going. The
//! work returns when it is next due. Anything that learns of earlier work (a delayed job
//! enqueued here) pulls its entry forward through an [`EntryWaker`].
//!
//! The lag (how late an entry started after its due time) is recorded for
//! `llmchat_scheduler_lag_seconds` and the dashboard.
//!
//! Not here: the wasmtime epoch ticker. It stays a plain thread (see
//! [`crate::engine`]): it must tick every 10 ms even when every tokio worker is busy running
//! guest code, which is exactly when a task on the runtime would be late.

mod metrics;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use metrics::SchedulerMetrics;

/// What an entry's work returns: when it is next due, or `None` to retire the entry.
pub type Next = Option<Instant>;

/// An entry's work: called with the instant it was due, returns a future that does it.
pub type Work = Box<dyn FnMut(Instant) -> BoxFuture<'static, Next> + Send>;

struct Entry {
    name: String,
    work: Work,
}

/// Earlier due times asked for by other modules, one slot per entry.
struct WakeRequests {
    requested: Mutex<Vec<Option<Instant>>>,
    notify: Notify,
}

/// Pulls one entry's next run forward to a given instant (never backward).
#[derive(Clone)]
pub struct EntryWaker {
    requests: Arc<WakeRequests>,
    id: usize,
}

impl EntryWaker {
    pub fn wake_at(&self, at: Instant) {
        let mut requested = self
            .requests
            .requested
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let slot = &mut requested[self.id];
        if slot.is_none_or(|current| at < current) {
            *slot = Some(at);
            drop(requested);
            self.requests.notify.notify_one();
        }
    }
}

/// The periodic work of the host; built in `main`, entries added by their owners, then
/// [`Scheduler::run`] until shutdown.
pub struct Scheduler {
    entries: Vec<Entry>,
    first_due: Vec<Instant>,
    requests: Arc<WakeRequests>,
    metrics: Arc<SchedulerMetrics>,
}

impl Scheduler {
    pub fn new(metrics: Arc<SchedulerMetrics>) -> Self {
        Self {
            entries: Vec::new(),
            first_due: Vec::new(),
            requests: Arc::new(WakeRequests {
                requested: Mutex::new(Vec::new()),
                notify: Notify::new(),
            }),
            metrics,
        }
    }

    /// Adds an entry first due at `first_due`; the waker pulls it forward.
    pub fn add(&mut self, name: impl Into<String>, first_due: Instant, work: Work) -> EntryWaker {
        let id = self.entries.len();
        self.entries.push(Entry {
            name: name.into(),
            work,
        });
        self.first_due.push(first_due);
        self.requests
            .requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(None);
        self.metrics.set_entries(self.entries.len());
        EntryWaker {
            requests: self.requests.clone(),
            id,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Runs every entry when due until `shutdown`; work still going then is dropped (each
    /// entry's work is written so that dropping it midway loses nothing).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut queue: BTreeSet<(Instant, usize)> = self
            .first_due
            .iter()
            .enumerate()
            .map(|(id, at)| (*at, id))
            .collect();
        // Each entry's place in `queue`; `None` while its work runs (or once retired).
        let mut due: Vec<Option<Instant>> = self.first_due.iter().copied().map(Some).collect();
        let mut running = FuturesUnordered::new();
        loop {
            let now = Instant::now();
            while let Some(&(at, id)) = queue.first() {
                if at > now {
                    break;
                }
                queue.pop_first();
                due[id] = None;
                self.metrics.record_lag(now.saturating_duration_since(at));
                let work = (self.entries[id].work)(at);
                running.push(async move { (id, work.await) });
            }
            let next_at = queue.first().map(|(at, _)| *at);
            let woken = self.requests.notify.notified();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some((id, next)) = running.next(), if !running.is_empty() => {
                    let requested = self.take_request(id);
                    let at = match (next, requested) {
                        (Some(n), Some(r)) => Some(n.min(r)),
                        (Some(n), None) => Some(n),
                        // A retired entry stays retired.
                        (None, _) => None,
                    };
                    if let Some(at) = at {
                        queue.insert((at, id));
                        due[id] = Some(at);
                    } else {
                        tracing::debug!(entry = %self.entries[id].name, "scheduler entry retired");
                    }
                }
                () = woken => {
                    for (id, slot) in due.iter_mut().enumerate() {
                        // A running entry keeps its request until its work returns.
                        let Some(current) = *slot else { continue };
                        if let Some(at) = self.take_request(id)
                            && at < current
                        {
                            queue.remove(&(current, id));
                            queue.insert((at, id));
                            *slot = Some(at);
                        }
                    }
                }
                () = sleep_until_some(next_at) => {}
            }
        }
        tracing::debug!(
            running = running.len(),
            "scheduler stopped; unfinished maintenance is dropped"
        );
    }

    fn take_request(&self, id: usize) -> Option<Instant> {
        self.requests
            .requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())[id]
            .take()
    }
}

/// The tokio instant of a wall-clock time in ms since the Unix epoch (now, if it is past):
/// due times shared between hosts are wall-clock, the scheduler's are monotonic.
pub fn instant_of_wall_ms(ms: u64) -> Instant {
    let wait = ms.saturating_sub(crate::queue::now_ms());
    Instant::now() + std::time::Duration::from_millis(wait)
}

/// Sleeps until `at`, or forever when nothing is due.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => crate::timers::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
