//! The host's only door to tokio's timers, so that they can be counted.
//!
//! Invariant 2 of the design says the number of host tasks and timers does not grow with
//! queues × concurrency × monitors. Tokio does not report armed timers, so every timer the
//! host arms goes through [`sleep`], [`sleep_until`], [`timeout`] or [`timeout_at`], which
//! count themselves in [`armed`] for as long as they exist (`llmchat_timers_armed` in
//! /metrics). A guard test below fails if any other module arms a tokio timer directly. Periodic work does not arm timers at all: it is an entry of the
//! [`crate::scheduler`], whose one task holds one sleep.
//!
//! Timers inside libraries (hyper's keep-alive, the Redis client's reconnect) are not
//! counted; they are per connection, and connections are bounded elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

static ARMED: AtomicUsize = AtomicUsize::new(0);

/// Timers armed by the host now.
pub fn armed() -> usize {
    ARMED.load(Ordering::Relaxed)
}

/// Counts one armed timer from creation to drop.
struct Armed;

impl Armed {
    fn new() -> Self {
        ARMED.fetch_add(1, Ordering::Relaxed);
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A tokio timer future, counted while it exists. The future stays inline (no box):
    /// every invocation's deadline is one of these.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        armed: Armed,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

fn counted<F: Future>(inner: F) -> Counted<F> {
    Counted {
        inner,
        armed: Armed::new(),
    }
}

pub fn sleep(duration: Duration) -> Counted<tokio::time::Sleep> {
    counted(tokio::time::sleep(duration))
}

pub fn sleep_until(deadline: Instant) -> Counted<tokio::time::Sleep> {
    counted(tokio::time::sleep_until(deadline))
}

pub fn timeout<F: Future>(duration: Duration, future: F) -> Counted<tokio::time::Timeout<F>> {
    counted(tokio::time::timeout(duration, future))
}

pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Counted<tokio::time::Timeout<F>> {
    counted(tokio::time::timeout_at(deadline, future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timer_counts_while_it_exists() {
        // Other tests arm timers concurrently, hence a thousand and bounds, not equality.
        let sleeping: Vec<_> = (0..1000).map(|_| sleep(Duration::from_secs(60))).collect();
        assert!(armed() >= 1000, "{}", armed());
        drop(sleeping);
        assert!(armed() < 1000, "{}", armed());
        assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
    }

    /// Every timer of the host goes through this module, and nothing but the scheduler
    /// keeps an interval: the guard behind the count above.
    #[test]
    fn no_module_arms_a_tokio_timer_directly() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("timers.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        let armed = [
                            "sleep(",
                            "sleep_until(",
                            "timeout(",
                            "timeout_at(",
                            "interval(",
                        ]
                        .iter()
                        .any(|f| line.contains(&format!("tokio::time::{f}")))
                            || line.contains("interval(");
                        if armed {
                            offenders.push(format!(
                                "{}:{}: {}",
                                path.display(),
                                i + 1,
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "timers armed outside crate::timers:\n{}",
            offenders.join("\n")
        );
    }
}
