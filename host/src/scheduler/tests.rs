use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;

use super::*;

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
    let mut s = scheduler();
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
    crate::timers::sleep(Duration::from_millis(1005)).await;
    stop.cancel();
    run.await.unwrap();
    let fast = fast.lock().unwrap();
    assert_eq!(fast.len(), 10, "{fast:?}");
    assert_eq!(fast[0] - t0, Duration::from_millis(10));
    assert_eq!(fast[9] - t0, Duration::from_millis(910));
    let slow = slow.lock().unwrap();
    // Starts at 0, 260, 520, 780: each 250 ms of work plus the 10 ms period.
    assert_eq!(slow.len(), 4, "{slow:?}");
    assert_eq!(slow[1] - t0, Duration::from_millis(260));
}

#[tokio::test(start_paused = true)]
async fn a_waker_pulls_an_entry_forward_but_never_back() {
    let mut s = scheduler();
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
    assert_eq!(starts.lock().unwrap()[0] - t0, Duration::from_millis(500));
    stop.cancel();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retired_entry_does_not_come_back() {
    let mut s = scheduler();
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
    let mut s = Scheduler::new(metrics.clone());
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
