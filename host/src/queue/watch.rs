//! Who on this host is watching which job, so that a change to the job wakes exactly them.
//!
//! A [`JobWatch`] is a ticket: `changed()` returns after the job may have changed, and the
//! watcher reads the job again (the state lives in the backend, never in the message). The
//! backends call [`Watchers::notify`]: the memory backend on every change, the Redis backend
//! when the job's queue channel says so (another host may be running the job). Dropping the
//! last ticket of a job forgets it, so the map holds only jobs someone watches now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::QueueError;

/// Jobs watched at once on one host; a watch beyond it is refused, not queued.
pub const MAX_WATCHED: usize = 10_000;

type Key = (String, String);

/// The watched jobs of one backend.
#[derive(Default)]
pub struct Watchers {
    jobs: Mutex<HashMap<Key, watch::Sender<u64>>>,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<u64>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for job `id` of `queue`; refused `full` when [`MAX_WATCHED`] jobs are
    /// watched.
    pub fn watch(self: &Arc<Self>, queue: &str, id: &str) -> Result<JobWatch, QueueError> {
        let key = (queue.to_string(), id.to_string());
        let mut jobs = self.lock();
        if !jobs.contains_key(&key) && jobs.len() >= MAX_WATCHED {
            return Err(QueueError::Full(format!(
                "{MAX_WATCHED} jobs are watched on this host, the most it follows at once"
            )));
        }
        let receiver = jobs
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Ok(JobWatch {
            watchers: self.clone(),
            key,
            receiver,
        })
    }

    /// Wakes the watchers of job `id` of `queue`, if any.
    pub fn notify(&self, queue: &str, id: &str) {
        let jobs = self.lock();
        // The common case, on every job change: nobody watches, and no key is built.
        if jobs.is_empty() {
            return;
        }
        if let Some(sender) = jobs.get(&(queue.to_string(), id.to_string())) {
            sender.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every watcher (messages may have been missed: a reconnect).
    pub fn notify_all(&self) {
        for sender in self.lock().values() {
            sender.send_modify(|n| *n += 1);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One watcher's ticket for one job; see the module doc.
pub struct JobWatch {
    watchers: Arc<Watchers>,
    key: Key,
    receiver: watch::Receiver<u64>,
}

impl JobWatch {
    /// Returns once the job may have changed since the last call (or since the watch began).
    pub async fn changed(&mut self) {
        // The sender lives in the map while this ticket does, so this never errors.
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn queue(&self) -> &str {
        &self.key.0
    }

    pub fn id(&self) -> &str {
        &self.key.1
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut jobs = self.watchers.lock();
        // This ticket's receiver still counts until the end of drop.
        if jobs
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            jobs.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_jobs_watchers_only_and_the_last_drop_forgets_the_job() {
        let watchers = Arc::new(Watchers::default());
        let mut a = watchers.watch("q", "1").unwrap();
        let mut b = watchers.watch("q", "1").unwrap();
        let mut other = watchers.watch("q", "2").unwrap();
        watchers.notify("q", "1");
        a.changed().await;
        b.changed().await;
        let pending = crate::timers::timeout(std::time::Duration::from_millis(20), other.changed());
        assert!(pending.await.is_err(), "job 2 did not change");
        assert_eq!(watchers.len(), 2);
        drop(a);
        assert_eq!(watchers.len(), 2, "b still watches job 1");
        drop(b);
        assert_eq!(watchers.len(), 1);
        drop(other);
        assert!(watchers.is_empty());
    }
}
