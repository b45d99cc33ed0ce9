//! Fair CPU between short and long invocations: the long lane.
//!
//! Guests yield to tokio at every epoch tick ([`super::ticker::TICK`], 10 ms). With only
//! that, 32 guests spinning on 2 workers sit in tokio's run queue with every short request,
//! and a `hello` that arrives waits behind all of them: p99 above 150 ms. So an invocation
//! whose future has been polled for [`LONG_AFTER`] in all (wasm and the host work done in
//! its calls) joins the long lane: each later poll first waits for one of [`lane_width`]
//! turns (one per core, handed out first come, first served) and gives it back when the
//! poll returns. Short invocations never wait here, and long ones take the cores in turns
//! instead of crowding the run queue.
//!
//! A turn is held only during a poll, that is while the invocation computes: a guest
//! waiting for I/O (or for another instance of this host) has returned `Pending` and holds
//! nothing. Timeouts still apply while an invocation waits for its turn: the wait is part of
//! the invocation's future.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;

/// Time polled after which an invocation is long.
pub const LONG_AFTER: Duration = Duration::from_millis(5);

static LANE: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(lane_width())));

/// Long invocations that compute at once: one per core.
pub fn lane_width() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

pin_project_lite::pin_project! {
    /// `inner`, polled in the long lane once it has been polled for [`LONG_AFTER`].
    pub struct InLane<F> {
        #[pin]
        inner: F,
        lane: Arc<Semaphore>,
        polled: Duration,
        // Created when the invocation becomes long.
        turns: Option<PollSemaphore>,
    }
}

impl<F> InLane<F> {
    /// `inner` in the process's one lane.
    pub fn new(inner: F) -> Self {
        Self::with_lane(inner, LANE.clone())
    }

    fn with_lane(inner: F, lane: Arc<Semaphore>) -> Self {
        Self {
            inner,
            lane,
            polled: Duration::ZERO,
            turns: None,
        }
    }
}

impl<F: Future> Future for InLane<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let turn = if *this.polled >= LONG_AFTER {
            let turns = this
                .turns
                .get_or_insert_with(|| PollSemaphore::new(this.lane.clone()));
            // `None` only if the semaphore were closed, which it never is.
            ready!(turns.poll_acquire(cx))
        } else {
            None
        };
        let started = Instant::now();
        let polled = this.inner.poll(cx);
        *this.polled += started.elapsed();
        drop(turn);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that computes for `each` on every poll, and is done after `polls` polls.
    struct Busy {
        each: Duration,
        polls: u32,
    }

    impl Future for Busy {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let until = Instant::now() + self.each;
            while Instant::now() < until {}
            self.polls -= 1;
            if self.polls == 0 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_short_invocation_never_waits_for_a_turn() {
        let lane = Arc::new(Semaphore::new(1));
        let _all_taken = lane.clone().try_acquire_owned().unwrap();
        // Polls that compute (almost) nothing: far below LONG_AFTER even on a busy machine.
        let short = InLane::with_lane(
            Busy {
                each: Duration::ZERO,
                polls: 3,
            },
            lane,
        );
        crate::timers::timeout(Duration::from_secs(5), short)
            .await
            .expect("done without a turn");
    }

    #[tokio::test]
    async fn a_long_invocation_polls_only_with_a_turn_and_gives_it_back() {
        let lane = Arc::new(Semaphore::new(1));
        let mut long = Box::pin(InLane::with_lane(
            Busy {
                each: LONG_AFTER,
                polls: 3,
            },
            lane.clone(),
        ));
        assert!(
            futures::poll!(long.as_mut()).is_pending(),
            "first poll: short"
        );
        let polled = long.polled;
        let taken = lane.clone().try_acquire_owned().unwrap();
        assert!(futures::poll!(long.as_mut()).is_pending(), "long, no turn");
        assert_eq!(long.polled, polled, "not polled without a turn");
        drop(taken);
        assert!(
            futures::poll!(long.as_mut()).is_pending(),
            "polled with a turn"
        );
        assert_eq!(lane.available_permits(), 1, "given back after the poll");
        long.await;
    }
}
