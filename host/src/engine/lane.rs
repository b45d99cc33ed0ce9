//! Fair CPU between short and long invocations: the long lane.
//!
//! Guests yield to tokio at every epoch tick ([`super::ticker::TICK`], 10 ms). With only
//! that, 32 guests spinning on 2 workers sit in tokio's run queue with every short request,
//! and a `hello` that arrives waits behind all of them: p99 above 150 ms. So an invocation
//! whose future has been polled for [`LONG_AFTER`] in all (wasm and the host work done in
//! its calls) joins the long lane: each later poll first waits for a turn (one per core,
//! handed out first come, first served) and gives it back when the poll returns. Long ones
//! take the cores in turns instead of crowding the run queue.
//!
//! **The reserve.** Taking turns is not enough while short work arrives: with a turn per
//! core, both workers of a 2-core host ran 10 ms slices of 32 flooding guests (log lines,
//! kv reads, each waking often from I/O), and `hello` beside them waited in the run queue
//! behind every woken flooder: p99 150–330 ms. With one turn fewer it was 5–6 ms. So one
//! turn is the reserve: while short invocations have been polled in the last [`QUIET`],
//! the lane holds it back, and the core it stands for serves short work; once short work
//! has been quiet that long, the reserve is lent to long work again. Long work alone thus
//! still gets every core. The switch is computed on access (a short poll, the end of a
//! long poll), with no timer. A host with one core has no reserve.
//!
//! A turn is held only during a poll, that is while the invocation computes: a guest
//! waiting for I/O (or for another instance of this host) has returned `Pending` and holds
//! nothing. Timeouts still apply while an invocation waits for its turn: the wait is part of
//! the invocation's future.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

/// Time polled after which an invocation is long.
pub const LONG_AFTER: Duration = Duration::from_millis(5);

/// How long short work must have been quiet before the reserve turn goes to long work.
pub const QUIET: Duration = Duration::from_millis(50);

static LANE: LazyLock<Arc<Lane>> = LazyLock::new(|| Arc::new(Lane::new(cores())));

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The turns of long invocations, and the reserve among them.
struct Lane {
    turns: Arc<Semaphore>,
    /// Whether the reserve is held back (one turn taken out of `turns` and forgotten).
    /// Only a compare-exchange winner changes it, together with the turn.
    withheld: AtomicBool,
    /// Whether there is a reserve at all: not with one core.
    has_reserve: bool,
    /// When a short invocation was last polled, in nanoseconds since `epoch`.
    last_short: AtomicU64,
    epoch: Instant,
}

impl Lane {
    fn new(cores: usize) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(cores.max(1))),
            withheld: AtomicBool::new(false),
            has_reserve: cores >= 2,
            last_short: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A short invocation is about to be polled at `now`: short work is active, so hold the
    /// reserve back, at once if a turn is free (else when a long poll gives one back).
    fn short_polled(&self, now: Instant) {
        if !self.has_reserve {
            return;
        }
        // One line shared by every worker: written at most once a millisecond, far below
        // QUIET, so that short polls on many cores do not fight over it.
        let now = self.nanos(now);
        let last = self.last_short.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 1_000_000 {
            self.last_short.store(now, Ordering::Relaxed);
        }
        if !self.withheld.load(Ordering::Relaxed)
            && let Ok(turn) = self.turns.clone().try_acquire_owned()
        {
            self.withhold(turn);
        }
    }

    /// Whether short work has been polled in the last [`QUIET`] before `now`.
    fn short_active(&self, now: Instant) -> bool {
        let last = self.last_short.load(Ordering::Relaxed);
        last != 0 && self.nanos(now).saturating_sub(last) < QUIET.as_nanos() as u64
    }

    /// Keeps `turn` out of circulation as the reserve, unless the reserve is already held.
    fn withhold(&self, turn: OwnedSemaphorePermit) {
        if self
            .withheld
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            turn.forget();
        }
    }

    /// A long poll gives `turn` back at `now`: it becomes the reserve if short work is
    /// active and the reserve is not held; else, with short work quiet, a held reserve is
    /// lent out again with it.
    fn give_back(&self, turn: OwnedSemaphorePermit, now: Instant) {
        if !self.has_reserve {
            return;
        }
        if self.short_active(now) {
            self.withhold(turn);
        } else {
            drop(turn);
            self.lend_reserve(now);
        }
    }

    /// Puts a held reserve back into circulation if short work has been quiet for [`QUIET`].
    fn lend_reserve(&self, now: Instant) {
        if self.withheld.load(Ordering::Relaxed)
            && !self.short_active(now)
            && self
                .withheld
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.turns.add_permits(1);
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`, polled in the long lane once it has been polled for [`LONG_AFTER`].
    pub struct InLane<F> {
        #[pin]
        inner: F,
        lane: Arc<Lane>,
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

    fn with_lane(inner: F, lane: Arc<Lane>) -> Self {
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
        let started = Instant::now();
        let turn = if *this.polled >= LONG_AFTER {
            let turns = this
                .turns
                .get_or_insert_with(|| PollSemaphore::new(this.lane.turns.clone()));
            match turns.poll_acquire(cx) {
                Poll::Ready(turn) => turn, // `None` only if closed, which it never is
                Poll::Pending => {
                    // Waiting for a turn: maybe for the reserve, which short work no longer needs.
                    this.lane.lend_reserve(started);
                    return Poll::Pending;
                }
            }
        } else {
            this.lane.short_polled(started);
            None
        };
        let polled = this.inner.poll(cx);
        let ended = Instant::now();
        *this.polled += ended - started;
        if let Some(turn) = turn {
            this.lane.give_back(turn, ended);
        }
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
        let lane = Arc::new(Lane::new(1));
        let _all_taken = lane.turns.clone().try_acquire_owned().unwrap();
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
        let lane = Arc::new(Lane::new(1));
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
        let taken = lane.turns.clone().try_acquire_owned().unwrap();
        assert!(futures::poll!(long.as_mut()).is_pending(), "long, no turn");
        assert_eq!(long.polled, polled, "not polled without a turn");
        drop(taken);
        assert!(
            futures::poll!(long.as_mut()).is_pending(),
            "polled with a turn"
        );
        assert_eq!(
            lane.turns.available_permits(),
            1,
            "given back after the poll"
        );
        long.await;
    }

    #[test]
    fn the_reserve_is_held_while_short_work_is_active_and_lent_once_it_is_quiet() {
        let lane = Lane::new(2);
        let now = lane.epoch + Duration::from_secs(1);
        lane.lend_reserve(now);
        assert_eq!(
            lane.turns.available_permits(),
            2,
            "no short work yet: every turn"
        );

        lane.short_polled(now);
        assert_eq!(
            lane.turns.available_permits(),
            1,
            "short work: one turn held back"
        );
        lane.short_polled(now + Duration::from_millis(1));
        assert_eq!(
            lane.turns.available_permits(),
            1,
            "held back once, not twice"
        );

        let long = lane.turns.clone().try_acquire_owned().unwrap();
        lane.give_back(long, now + QUIET / 2);
        assert_eq!(lane.turns.available_permits(), 1, "still held within QUIET");
        lane.lend_reserve(now + QUIET / 2);
        assert_eq!(lane.turns.available_permits(), 1, "not lent within QUIET");

        let later = now + Duration::from_millis(1) + QUIET;
        let long = lane.turns.clone().try_acquire_owned().unwrap();
        lane.give_back(long, later);
        assert_eq!(
            lane.turns.available_permits(),
            2,
            "quiet: lent with the turn"
        );
        assert!(!lane.withheld.load(Ordering::Relaxed));
    }

    #[test]
    fn a_turn_given_back_while_short_work_is_active_becomes_the_reserve() {
        let lane = Lane::new(2);
        let now = lane.epoch + Duration::from_secs(1);
        let first = lane.turns.clone().try_acquire_owned().unwrap();
        let second = lane.turns.clone().try_acquire_owned().unwrap();
        lane.short_polled(now);
        assert!(
            !lane.withheld.load(Ordering::Relaxed),
            "every turn in use: nothing to hold back yet"
        );
        lane.give_back(first, now);
        assert_eq!(
            lane.turns.available_permits(),
            0,
            "the first one back is the reserve"
        );
        lane.give_back(second, now);
        assert_eq!(lane.turns.available_permits(), 1, "the next one circulates");
    }

    #[test]
    fn one_core_has_no_reserve() {
        let lane = Lane::new(1);
        let now = lane.epoch + Duration::from_secs(1);
        lane.short_polled(now);
        assert_eq!(lane.turns.available_permits(), 1);
        let long = lane.turns.clone().try_acquire_owned().unwrap();
        lane.give_back(long, now);
        assert_eq!(lane.turns.available_permits(), 1);
    }
}
