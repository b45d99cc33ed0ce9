use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;

use super::*;

/// Entries start when due, or up to the timer resolution (1 ms) before.
fn assert_started_at(elapsed: Duration, due_ms: u64) {
    let due = Duration::from_millis(due_ms);
    assert!(
        elapsed <= due && elapsed + TIMER_RESOLUTION >= due,
        "started at {elapsed:?}, due at {due:?}"
    );
}

fn scheduler() -> Scheduler {
    Scheduler::new(Arc::new(SchedulerMetrics::default()))
}

/// An entry that records each start time and comes back every `period`, running `busy`.
fn periodic(
    starts: Arc<Mutex<Vec<Instant>>>,
    running: Arc<AtomicUsize>,
    period: Duration,
    busy: Duration,
) -> Work {
    Box::new(move |_due| {
        let (starts, running) = (starts.clone(), running.clone());
        async move {
            starts.lock().unwrap().push(Instant::now());
            assert_eq!(
                running.fetch_add(1, Ordering::SeqCst),
                0,
                "overlapping runs"
            );
            crate::timers::sleep(busy).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Some(Instant::now() + period)
        }
        .boxed()
    })
}

#[tokio::test(start_paused = true)]
async fn entries_run_when_due_and_never_overlap_themselves() {
    let s = scheduler();
    let fast = Arc::new(Mutex::new(Vec::new()));
    let slow = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    s.add(
        "fast",
        t0 + Duration::from_millis(10),
        periodic(
            fast.clone(),
            Arc::default(),
            Duration::from_millis(100),
            Duration::ZERO,
        ),
    );
    // Busy for longer than its period: the next run waits for this one.
    s.add(
        "slow",
        t0,
        periodic(
            slow.clone(),
            Arc::default(),
            Duration::from_millis(10),
            Duration::from_millis(250),
        ),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(s.run(stop.clone()));
    crate::timers::sleep(Duration::from_millis(955)).await;
    stop.cancel();
    run.await.unwrap();
    let fast = fast.lock().unwrap();
    assert_eq!(fast.len(), 10, "{fast:?}");
    assert_started_at(fast[0] - t0, 10);
    // Each period is counted from the previous start, which may be up to 1 ms early.
    let tenth = (fast[9] - t0).as_millis();
    assert!((900..=910).contains(&tenth), "{tenth} ms");
    let slow = slow.lock().unwrap();
    // Starts at 0, 260, 520, 780: each 250 ms of work plus the 10 ms period.
    assert_eq!(slow.len(), 4, "{slow:?}");
    assert_started_at(slow[1] - t0, 260);
}

#[tokio::test(start_paused = true)]
async fn a_waker_pulls_an_entry_forward_but_never_back() {
    let s = scheduler();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let waker = s.add(
        "promote",
        t0 + Duration::from_secs(30),
        periodic(
            starts.clone(),
            Arc::default(),
            Duration::from_secs(30),
            Duration::ZERO,
        ),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(s.run(stop.clone()));
    crate::timers::sleep(Duration::from_millis(100)).await;
    waker.wake_at(t0 + Duration::from_millis(500));
    waker.wake_at(t0 + Duration::from_secs(10));
    crate::timers::sleep(Duration::from_secs(1)).await;
    assert_eq!(starts.lock().unwrap().len(), 1);
    assert_started_at(starts.lock().unwrap()[0] - t0, 500);
    stop.cancel();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retired_entry_does_not_come_back() {
    let s = scheduler();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    s.add(
        "once",
        Instant::now(),
        Box::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { None }.boxed()
        }),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(s.run(stop.clone()));
    crate::timers::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    run.await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn lag_is_recorded_per_start() {
    let metrics = Arc::new(SchedulerMetrics::default());
    let s = Scheduler::new(metrics.clone());
    s.add(
        "tick",
        Instant::now(),
        periodic(
            Arc::default(),
            Arc::default(),
            Duration::from_millis(100),
            Duration::ZERO,
        ),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(s.run(stop.clone()));
    crate::timers::sleep(Duration::from_millis(450)).await;
    stop.cancel();
    run.await.unwrap();
    let lag = metrics.lag_snapshot();
    assert_eq!(lag.count(), 5);
    assert!(lag.quantile(0.99).unwrap() <= Duration::from_millis(2));
}

#[tokio::test(start_paused = true)]
async fn entries_added_while_running_run_and_retired_slots_are_reused() {
    let s = scheduler();
    let handle = s.handle();
    let stop = CancellationToken::new();
    let run = tokio::spawn(s.run(stop.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    // A thousand short-lived entries, ten at a time: the tables stay at ten slots.
    for round in 0..100 {
        let before = runs.load(Ordering::SeqCst);
        for _ in 0..10 {
            let counted = runs.clone();
            handle.add(
                format!("once {round}"),
                Instant::now() + Duration::from_millis(5),
                Box::new(move |_| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { None }.boxed()
                }),
            );
        }
        crate::timers::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), before + 10, "round {round}");
    }
    assert_eq!(handle.len(), 0);
    assert!(handle.shared.lock().requested.len() <= 10);
    stop.cancel();
    run.await.unwrap();
}
