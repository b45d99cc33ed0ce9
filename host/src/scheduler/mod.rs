//! The single owner of time: everything periodic in the host is an entry here, and one
//! task runs them all.
//!
//! The queue worker's delayed-job promotion, stalled-job reclaim and heartbeats, the kv
//! expiry sweep, the dashboard's sampling and every `[[trigger.schedule]]` are entries of
//! one [`Scheduler`]: a priority queue of due times and ONE task that sleeps until the
//! earliest (one armed timer, whatever the number of entries). When an entry is due its
//! work starts as a future polled by that same task (work is I/O: a Redis round trip, a
//! spawn), so a slow Redis call never delays another entry, and an entry is never started
//! again while its previous run is still going. The work returns when it is next due. Anything that learns of earlier work (a delayed job
//! enqueued here) pulls its entry forward through an [`EntryWaker`].
//!
//! The lag (how late an entry started after its due time) is recorded for
//! `llmchat_scheduler_lag_seconds` and the dashboard.
//!
//! Not here: the wasmtime epoch ticker. It stays a plain thread (see
//! [`crate::engine`]): it must tick every 10 ms even when every tokio worker is busy running
//! guest code, which is exactly when a task on the runtime would be late.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::SchedulerMetrics;

/// Tokio's timers tick in whole milliseconds and round deadlines up, so a sleep until `t`
/// wakes 1–2 ms after `t`. Entries due within this of now start now instead: lag drops from
/// about 1.3 ms to a fraction of a millisecond, and nothing periodic here needs better than
/// millisecond precision.
const TIMER_RESOLUTION: std::time::Duration = std::time::Duration::from_millis(1);

/// What an entry's work returns: when it is next due, or `None` to retire the entry.
pub type Next = Option<Instant>;

/// An entry's work: called with the instant it was due, returns a future that does it.
pub type Work = Box<dyn FnMut(Instant) -> BoxFuture<'static, Next> + Send>;

struct Entry {
    name: String,
    work: Work,
}

/// What the scheduler task shares with the handles that add and wake entries.
struct Shared {
    state: Mutex<SharedState>,
    notify: Notify,
    metrics: Arc<SchedulerMetrics>,
}

#[derive(Default)]
struct SharedState {
    /// Earlier due times asked for, one slot per entry id.
    requested: Vec<Option<Instant>>,
    /// Entries added and not yet taken in by the task, with their id and first due time.
    added: Vec<(usize, Instant, Entry)>,
    /// Ids of retired entries, reused by the next additions: the tables never grow past
    /// the most entries alive at once.
    free: Vec<usize>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Pulls one entry's next run forward to a given instant (never backward).
#[derive(Clone)]
pub struct EntryWaker {
    shared: Arc<Shared>,
    id: usize,
}

impl EntryWaker {
    pub fn wake_at(&self, at: Instant) {
        let mut state = self.shared.lock();
        let Some(slot) = state.requested.get_mut(self.id) else {
            return;
        };
        if slot.is_none_or(|current| at < current) {
            *slot = Some(at);
            drop(state);
            self.shared.notify.notify_one();
        }
    }
}

/// Adds entries to a scheduler, before or while it runs (a deploy adds a schedule).
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
}

impl SchedulerHandle {
    /// Adds an entry first due at `first_due`; the waker pulls it forward. An entry leaves
    /// when its work returns `None`.
    pub fn add(&self, name: impl Into<String>, first_due: Instant, work: Work) -> EntryWaker {
        let mut state = self.shared.lock();
        let id = match state.free.pop() {
            Some(id) => {
                state.requested[id] = None;
                id
            }
            None => {
                state.requested.push(None);
                state.requested.len() - 1
            }
        };
        let entry = Entry {
            name: name.into(),
            work,
        };
        state.added.push((id, first_due, entry));
        let alive = state.requested.len() - state.free.len();
        drop(state);
        self.shared.metrics.set_entries(alive);
        self.shared.notify.notify_one();
        EntryWaker {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Entries alive (added and not retired).
    pub fn len(&self) -> usize {
        let state = self.shared.lock();
        state.requested.len() - state.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The periodic work of the host; built in `main`, entries added by their owners through
/// [`Scheduler::handle`], then [`Scheduler::run`] until shutdown.
pub struct Scheduler {
    handle: SchedulerHandle,
}

impl Scheduler {
    pub fn new(metrics: Arc<SchedulerMetrics>) -> Self {
        Self {
            handle: SchedulerHandle {
                shared: Arc::new(Shared {
                    state: Mutex::default(),
                    notify: Notify::new(),
                    metrics,
                }),
            },
        }
    }

    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// See [`SchedulerHandle::add`].
    pub fn add(&self, name: impl Into<String>, first_due: Instant, work: Work) -> EntryWaker {
        self.handle.add(name, first_due, work)
    }

    pub fn len(&self) -> usize {
        self.handle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handle.is_empty()
    }

    /// Runs every entry when due until `shutdown`; work still going then is dropped (each
    /// entry's work is written so that dropping it midway loses nothing).
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.handle.shared;
        let mut entries: Vec<Option<Entry>> = Vec::new();
        let mut queue: BTreeSet<(Instant, usize)> = BTreeSet::new();
        // Each entry's place in `queue`; `None` while its work runs (or once retired).
        let mut due: Vec<Option<Instant>> = Vec::new();
        let mut running = FuturesUnordered::new();
        loop {
            take_added(&shared, &mut entries, &mut due, &mut queue);
            let now = Instant::now();
            while let Some(&(at, id)) = queue.first() {
                if at > now + TIMER_RESOLUTION {
                    break;
                }
                queue.pop_first();
                due[id] = None;
                let Some(entry) = entries[id].as_mut() else {
                    continue;
                };
                shared.metrics.record_lag(now.saturating_duration_since(at));
                let work = (entry.work)(at);
                running.push(async move { (id, work.await) });
            }
            let next_at = queue
                .first()
                .map(|(at, _)| at.checked_sub(TIMER_RESOLUTION).unwrap_or(*at));
            let woken = shared.notify.notified();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some((id, next)) = running.next(), if !running.is_empty() => {
                    let requested = shared.lock().requested[id].take();
                    match (next, requested) {
                        (Some(n), r) => {
                            let at = r.map_or(n, |r| n.min(r));
                            queue.insert((at, id));
                            due[id] = Some(at);
                        }
                        (None, _) => {
                            // Retired: its id is free for the next addition.
                            if let Some(entry) = entries[id].take() {
                                tracing::debug!(entry = %entry.name, "scheduler entry retired");
                            }
                            let mut state = shared.lock();
                            state.free.push(id);
                            let alive = state.requested.len() - state.free.len();
                            drop(state);
                            shared.metrics.set_entries(alive);
                        }
                    }
                }
                () = woken => {
                    let mut state = shared.lock();
                    for (id, slot) in due.iter_mut().enumerate() {
                        // A running entry keeps its request until its work returns.
                        let Some(current) = *slot else { continue };
                        if let Some(at) = state.requested[id].take()
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
}

/// Takes in the entries added since the last look.
fn take_added(
    shared: &Shared,
    entries: &mut Vec<Option<Entry>>,
    due: &mut Vec<Option<Instant>>,
    queue: &mut BTreeSet<(Instant, usize)>,
) {
    let added = std::mem::take(&mut shared.lock().added);
    for (id, first_due, entry) in added {
        if entries.len() <= id {
            entries.resize_with(id + 1, || None);
            due.resize(id + 1, None);
        }
        entries[id] = Some(entry);
        due[id] = Some(first_due);
        queue.insert((first_due, id));
    }
}

/// The tokio instant of a wall-clock time in ms since the Unix epoch (now, if it is past):
/// due times shared between hosts are wall-clock, the scheduler's are monotonic.
pub fn instant_of_wall_ms(ms: u64) -> Instant {
    let wait = ms.saturating_sub(crate::timers::now_ms());
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
