//! One conformance suite for every queue backend: the embedded memory queue, Redis (a
//! private `redis-server` per test) and a Redis Cluster (a private 6-node cluster per
//! test). All must behave identically as seen through [`QueueBackend`]; each case below
//! runs against each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmchat_host::manifest::{QueueTrigger, RedisSettings};
use llmchat_host::queue::memory::MemoryQueue;
use llmchat_host::queue::redis::RedisQueue;
use llmchat_host::queue::{
    Delivery, EnqueueRequest, Enqueued, Finished, JobInfo, JobState, QueueBackend, QueueError,
    Queues,
};
use llmchat_host::redis::RedisPool;
use llmchat_host::timers::now_ms;

use crate::support::redis::RedisServer;
use crate::support::redis_cluster::RedisCluster;

/// A W3C trace context, as the host stores one with a job enqueued while tracing is on.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A backend under test, with the Redis server or cluster it needs (if any) kept alive.
struct Subject {
    queues: Queues,
    _redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
}

impl Drop for Subject {
    /// No command the case sent may have spanned two slots.
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster
            && !std::thread::panicking()
        {
            assert_eq!(
                cluster.error_count("CROSSSLOT"),
                0,
                "a command spanned two slots"
            );
        }
    }
}

impl Subject {
    fn backend(&self) -> &Arc<dyn QueueBackend> {
        self.queues.backend()
    }

    async fn enqueue(&self, payload: &str) -> String {
        self.queues
            .enqueue("jobs", payload.to_string(), EnqueueRequest::default())
            .await
            .expect("enqueue")
            .id()
            .to_string()
    }

    async fn receive(&self, wait: Duration) -> Vec<Delivery> {
        self.backend()
            .receive(&[("jobs".to_string(), 10)], wait)
            .await
            .expect("receive")
    }

    /// Receives exactly one delivery, waiting up to 5 s.
    async fn receive_one(&self) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut got = self.receive(Duration::from_millis(200)).await;
            if let Some(d) = got.pop() {
                assert!(got.is_empty(), "one job expected");
                return d;
            }
            self.backend()
                .promote_due(&["jobs".to_string()], now_ms())
                .await
                .expect("promote");
            assert!(Instant::now() < deadline, "no job arrived");
        }
    }

    async fn stats(&self) -> llmchat_host::queue::QueueStats {
        self.backend().stats("jobs").await.expect("stats")
    }

    /// Acknowledges `d` with `result`, under the queue's `keep_completed`; each in a later
    /// millisecond than the last, so "newest first" is well defined.
    async fn complete(&self, d: &Delivery, result: &str) {
        let before = now_ms();
        while now_ms() == before {
            std::hint::spin_loop();
        }
        let finished = Finished {
            delivery: d.clone(),
            result: result.to_string(),
            started_at_ms: now_ms() - 1,
            finished_at_ms: now_ms(),
            keep: self.queues.trigger("jobs").unwrap().keep_completed,
            progressed: true,
        };
        self.backend()
            .complete(&[finished])
            .await
            .expect("complete");
    }

    async fn bury(&self, d: &Delivery, error: &str) {
        let keep = self.queues.trigger("jobs").unwrap().keep_failed;
        self.backend().bury(d, error, keep).await.expect("bury");
    }

    async fn reclaim(&self, visibility: Duration) -> usize {
        let keep = self.queues.trigger("jobs").unwrap().keep_failed;
        self.backend()
            .reclaim_stalled("jobs", visibility, 100, keep)
            .await
            .expect("reclaim")
    }

    async fn job(&self, id: &str) -> Option<JobInfo> {
        self.backend().job("jobs", id).await.expect("job")
    }

    async fn state(&self, id: &str) -> Option<JobState> {
        self.job(id).await.map(|info| info.state)
    }

    async fn listed(&self, state: JobState) -> Vec<String> {
        let jobs = self.backend().jobs("jobs", state, 100).await.expect("jobs");
        assert!(jobs.iter().all(|j| j.state == state), "{jobs:?}");
        jobs.into_iter().map(|j| j.job.id).collect()
    }

    async fn enqueue_delayed(&self, payload: &str, delay: Duration) -> String {
        let request = EnqueueRequest {
            delay: Some(delay),
            ..EnqueueRequest::default()
        };
        self.queues
            .enqueue("jobs", payload.to_string(), request)
            .await
            .expect("enqueue")
            .id()
            .to_string()
    }
}

fn trigger(extra: &str) -> QueueTrigger {
    toml::from_str(&format!("queue = \"jobs\"\ncomponent = \"p\"\n{extra}")).expect("trigger")
}

async fn memory(extra: &str) -> Subject {
    Subject {
        queues: Queues::new(Arc::new(MemoryQueue::new()), &[trigger(extra)]),
        _redis: None,
        cluster: None,
    }
}

async fn redis(extra: &str) -> Subject {
    let server = RedisServer::start();
    let pool = Arc::new(RedisPool::new(&RedisSettings::default(), &server.url()).expect("pool"));
    let backend = RedisQueue::connect(pool, &["jobs".to_string()])
        .await
        .expect("redis queue");
    Subject {
        queues: Queues::new(Arc::new(backend), &[trigger(extra)]),
        _redis: Some(server),
        cluster: None,
    }
}

async fn cluster(extra: &str) -> Subject {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("starting the cluster");
    let pool = Arc::new(RedisPool::new(&RedisSettings::default(), &cluster.seeds()).expect("pool"));
    assert!(pool.is_cluster(), "several seeds make a cluster pool");
    let backend = RedisQueue::connect(pool, &["jobs".to_string()])
        .await
        .expect("redis queue on a cluster");
    Subject {
        queues: Queues::new(Arc::new(backend), &[trigger(extra)]),
        _redis: None,
        cluster: Some(cluster),
    }
}

/// Declares `name` once per backend: `name::memory`, `name::redis` and `name::cluster`.
macro_rules! conformance {
    ($($name:ident($extra:expr, $subject:ident) $body:block)*) => {$(
        mod $name {
            use super::*;
            async fn case($subject: Subject) $body
            #[tokio::test]
            async fn memory() { case(super::memory($extra).await).await }
            #[tokio::test]
            async fn redis() { case(super::redis($extra).await).await }
            #[tokio::test]
            async fn cluster() { case(super::cluster($extra).await).await }
        }
    )*};
}

conformance! {
    enqueued_jobs_are_received_once_and_completed("", q) {
        let id = q.enqueue(r#"{"n":1}"#).await;
        let d = q.receive_one().await;
        assert_eq!((d.job.id.as_str(), d.job.payload.as_str(), d.job.attempt), (id.as_str(), r#"{"n":1}"#, 1));
        assert_eq!(q.stats().await.in_flight, 1);
        assert!(q.receive(Duration::from_millis(100)).await.is_empty(), "an in-flight job is not delivered twice");
        q.complete(&d, "ok").await;
        let s = q.stats().await;
        assert_eq!((s.waiting, s.in_flight, s.processed), (0, 0, 1), "{s:?}");
    }

    a_waiting_receiver_is_woken_by_an_enqueue("", q) {
        let q = Arc::new(q);
        let receiver = {
            let q = q.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (q.receive(Duration::from_secs(5)).await, started.elapsed())
            })
        };
        q.enqueue("1").await;
        let (got, waited) = receiver.await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(waited < Duration::from_secs(2), "woken by the job, not by the timeout: {waited:?}");
    }

    a_waiting_receive_can_be_interrupted("", q) {
        let q = Arc::new(q);
        let receiver = {
            let q = q.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (q.receive(Duration::from_secs(8)).await, started.elapsed())
            })
        };
        // Interrupt until the receiver returns: the first call may come before it waits.
        while !receiver.is_finished() {
            q.backend().interrupt_receive().await.unwrap();
            llmchat_host::timers::sleep(Duration::from_millis(20)).await;
        }
        let (got, waited) = receiver.await.unwrap();
        assert!(got.is_empty());
        assert!(waited < Duration::from_secs(4), "returned on the interrupt: {waited:?}");
    }

    an_empty_receive_ends_at_its_wait("", q) {
        let started = Instant::now();
        assert!(q.receive(Duration::from_millis(300)).await.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    delayed_jobs_wait_until_due("", q) {
        let started = now_ms();
        let request = EnqueueRequest { delay: Some(Duration::from_millis(400)), ..Default::default() };
        q.queues.enqueue("jobs", "1".into(), request).await.unwrap();
        assert_eq!(q.stats().await.delayed, 1);
        let next = q.backend().promote_due(&["jobs".to_string()], now_ms()).await.unwrap().expect("a due time");
        assert!((started + 390..=started + 1000).contains(&next), "due {} ms after enqueue", next - started);
        assert!(q.receive(Duration::from_millis(100)).await.is_empty(), "not before its time");
        let d = q.receive_one().await;
        assert!(now_ms() >= started + 400, "delivered only once due");
        assert_eq!(d.job.attempt, 1);
    }

    a_jobs_trace_context_rides_with_it_to_every_delivery("", q) {
        let traced = |delay| EnqueueRequest { delay, trace_context: Some(TRACEPARENT.into()), ..Default::default() };
        q.queues.enqueue("jobs", "1".into(), traced(None)).await.expect("enqueue");
        let d = q.receive_one().await;
        assert_eq!(d.job.trace_context.as_deref(), Some(TRACEPARENT));
        q.backend().retry(&d, now_ms(), "transient").await.unwrap();
        let again = q.receive_one().await;
        assert_eq!((again.job.attempt, again.job.trace_context.as_deref()), (2, Some(TRACEPARENT)), "a retry keeps it");
        q.complete(&again, "null").await;
        q.queues.enqueue("jobs", "2".into(), traced(Some(Duration::from_millis(50)))).await.expect("enqueue");
        let delayed = q.receive_one().await;
        assert_eq!(delayed.job.trace_context.as_deref(), Some(TRACEPARENT), "a delayed job keeps it");
        q.complete(&delayed, "null").await;
        q.enqueue("3").await;
        assert_eq!(q.receive_one().await.job.trace_context, None, "a job without one has none");
    }

    a_prioritized_jobs_trace_context_rides_with_it("priorities = true", q) {
        let request = EnqueueRequest { priority: Some(3), trace_context: Some(TRACEPARENT.into()), ..Default::default() };
        q.queues.enqueue("jobs", "1".into(), request).await.expect("enqueue");
        assert_eq!(q.receive_one().await.job.trace_context.as_deref(), Some(TRACEPARENT));
    }

    retried_jobs_come_back_as_the_next_attempt("", q) {
        let id = q.enqueue("1").await;
        let d = q.receive_one().await;
        q.backend().retry(&d, now_ms() + 50, "transient").await.unwrap();
        let s = q.stats().await;
        assert_eq!((s.in_flight, s.delayed, s.retried), (0, 1, 1), "{s:?}");
        let again = q.receive_one().await;
        assert_eq!((again.job.id.as_str(), again.job.attempt), (id.as_str(), 2));
    }

    buried_jobs_are_dead_letters_that_can_be_retried_or_purged("", q) {
        let id = q.enqueue(r#"{"x":true}"#).await;
        let d = q.receive_one().await;
        q.bury(&d, "boom").await;
        let dead = q.backend().dead_letters("jobs", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].job.id.as_str(), dead[0].error.as_str(), dead[0].job.payload.as_str()), (id.as_str(), "boom", r#"{"x":true}"#));
        let s = q.stats().await;
        assert_eq!((s.dead, s.failed, s.in_flight), (1, 1, 0), "{s:?}");

        assert_eq!(q.backend().retry_dead("jobs", Some("no-such-id")).await.unwrap(), 0);
        assert_eq!(q.backend().retry_dead("jobs", Some(&id)).await.unwrap(), 1);
        let revived = q.receive_one().await;
        assert_eq!((revived.job.id.as_str(), revived.job.attempt), (id.as_str(), 1));
        q.bury(&revived, "boom again").await;
        assert_eq!(q.backend().purge_dead("jobs").await.unwrap(), 1);
        assert_eq!(q.stats().await.dead, 0);
    }

    a_dedup_key_keeps_a_second_job_out_inside_its_window("dedup_window = \"300ms\"", q) {
        let request = || EnqueueRequest { dedup_key: Some("conv-1".into()), ..Default::default() };
        let first = q.queues.enqueue("jobs", "1".into(), request()).await.unwrap();
        let second = q.queues.enqueue("jobs", "2".into(), request()).await.unwrap();
        assert!(matches!(first, Enqueued::New(_)));
        assert_eq!(second, Enqueued::Duplicate(first.id().to_string()));
        assert_eq!(q.stats().await.waiting, 1);
        let third = crate::support::poll_until_async(Duration::from_secs(5), || async {
            let e = q.queues.enqueue("jobs", "3".into(), request()).await.unwrap();
            matches!(e, Enqueued::New(_)).then_some(e)
        }).await;
        assert_ne!(third.id(), first.id());
    }

    a_full_queue_refuses_jobs_and_keeps_what_it_has("max_waiting = 2", q) {
        q.enqueue("1").await;
        q.enqueue("2").await;
        let err = q.queues.enqueue("jobs", "3".into(), EnqueueRequest::default()).await.unwrap_err();
        assert!(matches!(err, QueueError::Full(_)), "{err}");
        assert_eq!(q.stats().await.waiting, 2);
    }

    stalled_jobs_are_requeued_then_dead_lettered("max_attempts = 2", q) {
        let visibility = Duration::from_millis(200);
        let first = q.receive_one_after_enqueue().await;
        assert_eq!(q.reclaim(visibility).await, 0, "not stalled yet");
        llmchat_host::timers::sleep(visibility + Duration::from_millis(50)).await;
        assert_eq!(q.reclaim(visibility).await, 1);
        let second = q.receive_one().await;
        assert_eq!((second.job.id.as_str(), second.job.attempt), (first.job.id.as_str(), 2));
        // The first holder can no longer finish it.
        q.bury(&first, "late").await;
        assert!(q.backend().dead_letters("jobs", 10).await.unwrap().is_empty());
        llmchat_host::timers::sleep(visibility + Duration::from_millis(50)).await;
        assert_eq!(q.reclaim(visibility).await, 1);
        let dead = q.backend().dead_letters("jobs", 10).await.unwrap();
        assert_eq!(dead.len(), 1, "out of attempts: dead-lettered");
        assert!(dead[0].error.contains("stalled"), "{}", dead[0].error);
    }

    heartbeats_keep_a_running_job_from_being_reclaimed("", q) {
        let visibility = Duration::from_millis(200);
        let d = q.receive_one_after_enqueue().await;
        for _ in 0..3 {
            llmchat_host::timers::sleep(Duration::from_millis(100)).await;
            q.backend().heartbeat(std::slice::from_ref(&d)).await.unwrap();
        }
        assert_eq!(q.reclaim(visibility).await, 0);
        q.complete(&d, "ok").await;
        assert_eq!(q.stats().await.processed, 1);
    }
}

conformance! {
    a_job_is_seen_in_each_state_with_its_progress_result_and_times("keep_completed = { count = 10 }", q) {
        let id = q.enqueue(r#"{"n":1}"#).await;
        let other = q.enqueue(r#"{"n":2}"#).await;
        let waiting = q.job(&id).await.expect("a waiting job is found");
        assert_eq!((waiting.state, waiting.job.payload.as_str(), waiting.job.attempt), (JobState::Waiting, r#"{"n":1}"#, 1));
        assert_eq!(q.listed(JobState::Waiting).await, vec![id.clone(), other.clone()]);
        let deliveries = q.receive(Duration::from_secs(2)).await;
        assert_eq!(deliveries.len(), 2);
        let d = deliveries.iter().find(|d| d.job.id == id).unwrap().clone();
        assert_eq!(q.state(&id).await, Some(JobState::Active));
        assert!(q.listed(JobState::Waiting).await.is_empty());
        let mut active = q.listed(JobState::Active).await;
        active.sort();
        let mut both = vec![id.clone(), other.clone()];
        both.sort();
        assert_eq!(active, both);
        q.backend().progress(&d, r#"{"done":40}"#).await.unwrap();
        assert_eq!(q.job(&id).await.unwrap().progress.as_deref(), Some(r#"{"done":40}"#));
        q.complete(&d, "summary written").await;
        let done = q.job(&id).await.expect("kept under keep_completed");
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.result.as_deref(), Some("summary written"));
        assert_eq!(done.progress.as_deref(), Some(r#"{"done":40}"#));
        assert!(done.started_at_ms.is_some() && done.finished_at_ms >= done.started_at_ms, "{done:?}");
        assert_eq!(done.job.payload, r#"{"n":1}"#);
        assert_eq!(q.listed(JobState::Completed).await, vec![id.clone()]);
        // Progress after the end changes nothing.
        q.backend().progress(&d, r#"{"done":99}"#).await.unwrap();
        assert_eq!(q.job(&id).await.unwrap().progress.as_deref(), Some(r#"{"done":40}"#));
        assert_eq!(q.job("0123").await, None, "an unknown id");
        assert_eq!(q.stats().await.processed, 1);
    }

    completed_jobs_are_not_kept_by_default("", q) {
        let d = q.receive_one_after_enqueue().await;
        q.complete(&d, "ok").await;
        assert_eq!(q.job(&d.job.id).await, None);
        assert!(q.listed(JobState::Completed).await.is_empty());
        assert_eq!(q.stats().await.processed, 1);
    }

    retention_keeps_the_newest_completed_jobs_by_count("keep_completed = { count = 2 }", q) {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let d = q.receive_one_after_enqueue().await;
            q.complete(&d, "ok").await;
            ids.push(d.job.id);
        }
        assert_eq!(q.listed(JobState::Completed).await, vec![ids[2].clone(), ids[1].clone()], "newest first, the oldest dropped");
        assert_eq!(q.job(&ids[0]).await, None);
    }

    retention_drops_completed_jobs_past_their_age("keep_completed = { count = 100, age = \"300ms\" }", q) {
        let old = q.receive_one_after_enqueue().await;
        q.complete(&old, "ok").await;
        assert_eq!(q.state(&old.job.id).await, Some(JobState::Completed));
        // Time passing is what is under test here.
        llmchat_host::timers::sleep(Duration::from_millis(400)).await;
        let new = q.receive_one_after_enqueue().await;
        q.complete(&new, "ok").await;
        assert_eq!(q.job(&old.job.id).await, None, "older than 300ms");
        assert_eq!(q.listed(JobState::Completed).await, vec![new.job.id.clone()]);
    }

    delayed_failed_and_dead_jobs_are_told_apart("max_attempts = 2\nkeep_failed = { count = 1 }", q) {
        let later = q.enqueue_delayed("{}", Duration::from_secs(60)).await;
        let info = q.job(&later).await.unwrap();
        assert_eq!(info.state, JobState::Delayed);
        assert!(info.due_at_ms.unwrap() > now_ms() + 50_000, "{info:?}");
        let d = q.receive_one_after_enqueue().await;
        q.backend().retry(&d, now_ms() + 60_000, "flaky upstream").await.unwrap();
        let failed = q.job(&d.job.id).await.unwrap();
        assert_eq!((failed.state, failed.error.as_deref(), failed.job.attempt), (JobState::Failed, Some("flaky upstream"), 2));
        assert_eq!(q.listed(JobState::Failed).await, vec![d.job.id.clone()]);
        assert_eq!(q.listed(JobState::Delayed).await, vec![later.clone()]);
        let first = q.receive_one_after_enqueue().await;
        q.bury(&first, "broken payload").await;
        let dead = q.job(&first.job.id).await.unwrap();
        assert_eq!((dead.state, dead.error.as_deref()), (JobState::Dead, Some("broken payload")));
        assert!(dead.finished_at_ms.is_some());
        let second = q.receive_one_after_enqueue().await;
        q.bury(&second, "also broken").await;
        assert_eq!(q.job(&first.job.id).await, None, "keep_failed count = 1 dropped the older dead letter");
        assert_eq!(q.listed(JobState::Dead).await, vec![second.job.id.clone()]);
        assert_eq!(q.stats().await.dead, 1);
        // A revived dead letter waits again, carrying its last error.
        assert_eq!(q.backend().retry_dead("jobs", Some(&second.job.id)).await.unwrap(), 1);
        let revived = q.job(&second.job.id).await.unwrap();
        assert_eq!((revived.state, revived.error.as_deref()), (JobState::Waiting, Some("also broken")));
    }

    waiting_delayed_and_failed_jobs_can_be_removed_but_running_ones_cannot("", q) {
        let waiting = q.enqueue("{}").await;
        assert_eq!(q.backend().remove("jobs", &waiting).await.unwrap(), Some(JobState::Waiting));
        assert_eq!(q.job(&waiting).await, None);
        assert!(q.receive(Duration::from_millis(100)).await.is_empty(), "a removed job is never delivered");
        let later = q.enqueue_delayed("{}", Duration::from_secs(60)).await;
        assert_eq!(q.backend().remove("jobs", &later).await.unwrap(), Some(JobState::Delayed));
        assert_eq!(q.stats().await.delayed, 0);
        let d = q.receive_one_after_enqueue().await;
        let e = q.backend().remove("jobs", &d.job.id).await.unwrap_err();
        assert!(matches!(&e, QueueError::Invalid(m) if m.contains("is active")), "{e}");
        assert_eq!(q.state(&d.job.id).await, Some(JobState::Active), "a refused removal changes nothing");
        q.backend().retry(&d, now_ms() + 60_000, "again").await.unwrap();
        assert_eq!(q.backend().remove("jobs", &d.job.id).await.unwrap(), Some(JobState::Failed));
        assert_eq!(q.backend().remove("jobs", "nope").await.unwrap(), None);
        let s = q.stats().await;
        assert_eq!((s.waiting, s.in_flight, s.delayed), (0, 0, 0), "{s:?}");
    }

    a_watcher_is_woken_by_progress_and_by_the_end("", q) {
        let d = q.receive_one_after_enqueue().await;
        let mut watch = q.backend().watch("jobs", &d.job.id).await.unwrap();
        q.backend().progress(&d, r#"{"step":1}"#).await.unwrap();
        assert!(woken(&mut watch).await, "progress wakes the watcher");
        assert_eq!(q.job(&d.job.id).await.unwrap().progress.as_deref(), Some(r#"{"step":1}"#));
        q.complete(&d, "ok").await;
        assert!(woken(&mut watch).await, "completion wakes the watcher");
    }
}

conformance! {
    global_concurrency_leases_are_bounded_renewed_given_back_and_lapse("", q) {
        let (b, ttl) = (q.backend(), Duration::from_secs(30));
        assert_eq!(b.acquire_lease("jobs", 2, "t1", ttl).await.unwrap(), None);
        assert_eq!(b.acquire_lease("jobs", 2, "t2", ttl).await.unwrap(), None);
        assert_eq!(b.acquire_lease("jobs", 2, "t1", ttl).await.unwrap(), None, "a held lease is held again");
        let wait = b.acquire_lease("jobs", 2, "t3", ttl).await.unwrap().expect("all taken");
        assert!(wait > Duration::from_secs(20) && wait <= ttl, "until the earliest lapses: {wait:?}");
        assert_eq!(b.acquire_lease("other", 2, "t3", ttl).await.unwrap(), None, "leases are per queue");
        let mut watch = b.watch_leases("jobs").await.unwrap();
        b.release_lease("jobs", "t1").await.unwrap();
        assert!(woken(&mut watch).await, "a lease given back wakes the waiters");
        assert_eq!(b.acquire_lease("jobs", 2, "t3", ttl).await.unwrap(), None);
        // A lease not renewed lapses (its host died); a renewed one does not.
        let short = Duration::from_millis(200);
        b.renew_leases(&[("jobs".into(), "t2".into())], ttl).await.unwrap();
        b.release_lease("jobs", "t3").await.unwrap();
        assert_eq!(b.acquire_lease("jobs", 2, "t4", short).await.unwrap(), None);
        assert!(b.acquire_lease("jobs", 2, "t5", ttl).await.unwrap().is_some());
        // Time passing is what is under test here.
        llmchat_host::timers::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.acquire_lease("jobs", 2, "t5", ttl).await.unwrap(), None, "t4 lapsed");
        assert!(b.acquire_lease("jobs", 2, "t6", ttl).await.unwrap().is_some(), "t2 was renewed");
    }
}

/// Whether `watch` wakes within 5 s.
async fn woken(watch: &mut llmchat_host::queue::watch::JobWatch) -> bool {
    llmchat_host::timers::timeout(Duration::from_secs(5), watch.changed())
        .await
        .is_ok()
}

impl Subject {
    async fn receive_one_after_enqueue(&self) -> Delivery {
        self.enqueue("{}").await;
        self.receive_one().await
    }
}

#[tokio::test]
async fn bad_jobs_are_refused_before_any_backend_sees_them() {
    let q = memory("max_payload = \"16B\"").await;
    let e = |r: Result<Enqueued, QueueError>| r.unwrap_err();
    let enqueue = |queue: &'static str, payload: &str, request: EnqueueRequest| {
        q.queues.enqueue(queue, payload.to_string(), request)
    };
    assert!(matches!(
        e(enqueue("nope", "1", EnqueueRequest::default()).await),
        QueueError::UnknownQueue(_)
    ));
    assert!(
        matches!(e(enqueue("jobs", "{oops", EnqueueRequest::default()).await), QueueError::Invalid(m) if m.contains("JSON"))
    );
    assert!(matches!(
        e(enqueue(
            "jobs",
            &format!("\"{}\"", "x".repeat(40)),
            EnqueueRequest::default()
        )
        .await),
        QueueError::TooLarge(_)
    ));
    let bad_backoff = EnqueueRequest {
        backoff: Some("sometimes".into()),
        ..Default::default()
    };
    assert!(
        matches!(e(enqueue("jobs", "1", bad_backoff).await), QueueError::Invalid(m) if m.contains("backoff"))
    );
    let zero = EnqueueRequest {
        max_attempts: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        e(enqueue("jobs", "1", zero).await),
        QueueError::Invalid(_)
    ));
    let s = q.stats().await;
    assert_eq!((s.waiting, s.delayed), (0, 0), "nothing was stored");
}

impl Subject {
    async fn enqueue_at(&self, payload: &str, priority: u8) -> String {
        let request = EnqueueRequest {
            priority: Some(priority),
            ..EnqueueRequest::default()
        };
        self.queues
            .enqueue("jobs", payload.to_string(), request)
            .await
            .expect("enqueue with a priority")
            .id()
            .to_string()
    }

    /// The payloads of up to `n` jobs received at once.
    async fn receive_payloads(&self, n: usize) -> Vec<String> {
        let got = self
            .backend()
            .receive(&[("jobs".to_string(), n)], Duration::from_secs(2))
            .await
            .expect("receive");
        got.into_iter().map(|d| d.job.payload).collect()
    }
}

conformance! {
    priorities_start_higher_jobs_first_and_keep_fifo_within_one("priorities = true", q) {
        let mut ids = Vec::new();
        for (payload, priority) in [("\"a0\"", 0), ("\"b0\"", 0), ("\"c5\"", 5), ("\"d9\"", 9), ("\"e5\"", 5), ("\"f0\"", 0)] {
            ids.push(q.enqueue_at(payload, priority).await);
        }
        assert_eq!(q.stats().await.waiting, 6);
        let listed = q.listed(JobState::Waiting).await;
        let order = [3, 2, 4, 0, 1, 5].map(|i| ids[i].clone());
        assert_eq!(listed, order, "waiting jobs are listed in the order they will start");
        let info = q.job(&ids[2]).await.expect("a waiting job is found by id");
        assert_eq!((info.state, info.job.priority), (JobState::Waiting, 5));
        assert_eq!(q.receive_payloads(2).await, ["\"d9\"", "\"c5\""]);
        q.enqueue_at("\"g9\"", 9).await;
        assert_eq!(q.receive_payloads(10).await, ["\"g9\"", "\"e5\"", "\"a0\"", "\"b0\"", "\"f0\""]);
        assert_eq!(q.stats().await.in_flight, 7);
    }

    a_waiting_reader_is_woken_by_a_job_with_a_priority("priorities = true", q) {
        let q = Arc::new(q);
        // Twice: the second wake-up needs the first bell to have been answered.
        for round in 0..2 {
            let receiver = {
                let q = q.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    (q.receive(Duration::from_secs(8)).await, started.elapsed())
                })
            };
            // Time for the reader to find the queue empty and wait: a job that came sooner
            // would be read at once, and the wake-up under test would not happen.
            llmchat_host::timers::sleep(Duration::from_millis(300)).await;
            q.enqueue_at("1", 3).await;
            let (got, waited) = receiver.await.unwrap();
            assert_eq!(got.len(), 1, "round {round}");
            assert!(waited < Duration::from_secs(4), "round {round}: woken by the job, not the timeout: {waited:?}");
        }
    }

    a_priority_survives_retries_reclaims_and_revivals("priorities = true\nmax_attempts = 3", q) {
        let high = q.enqueue_at("\"high\"", 7).await;
        let d = q.receive_one().await;
        q.backend().retry(&d, now_ms(), "transient").await.unwrap();
        q.enqueue_at("\"low\"", 2).await;
        q.backend().promote_due(&["jobs".to_string()], now_ms() + 1).await.unwrap();
        let info = q.job(&high).await.expect("the retried job");
        assert_eq!((info.state, info.job.priority, info.job.attempt), (JobState::Waiting, 7, 2));
        let again = q.receive_payloads(1).await;
        assert_eq!(again, ["\"high\""], "a retry keeps its priority");
        // Its host dies: the reclaimed job waits with its priority, ahead of `low`.
        let visibility = Duration::from_millis(100);
        llmchat_host::timers::sleep(visibility + Duration::from_millis(50)).await;
        assert_eq!(q.reclaim(visibility).await, 1);
        assert_eq!(q.job(&high).await.map(|i| (i.state, i.job.priority)), Some((JobState::Waiting, 7)));
        let third = q.backend().receive(&[("jobs".into(), 1)], Duration::from_secs(2)).await.unwrap();
        let third = third.into_iter().next().expect("the reclaimed job");
        assert_eq!((third.job.id.as_str(), third.job.attempt), (high.as_str(), 3));
        q.bury(&third, "boom").await;
        assert_eq!(q.backend().dead_letters("jobs", 10).await.unwrap()[0].job.priority, 7);
        assert_eq!(q.backend().retry_dead("jobs", Some(&high)).await.unwrap(), 1);
        assert_eq!(q.receive_payloads(1).await, ["\"high\""], "a revived job keeps its priority");
        assert_eq!(q.receive_payloads(1).await, ["\"low\""]);
    }

    jobs_with_priorities_are_removed_counted_and_bounded("priorities = true\nmax_waiting = 2", q) {
        let a = q.enqueue_at("1", 1).await;
        q.enqueue_at("2", 0).await;
        let err = q.queues.enqueue("jobs", "3".into(), EnqueueRequest { priority: Some(9), ..Default::default() }).await.unwrap_err();
        assert!(matches!(err, QueueError::Full(_)), "{err}");
        assert_eq!(q.backend().remove("jobs", &a).await.unwrap(), Some(JobState::Waiting));
        assert_eq!(q.job(&a).await, None);
        assert_eq!(q.stats().await.waiting, 1);
        assert_eq!(q.receive_payloads(5).await, ["2"]);
    }
}

#[tokio::test]
async fn priorities_are_refused_where_the_queue_has_none_or_out_of_range() {
    let q = memory("").await;
    let with = |p| EnqueueRequest {
        priority: Some(p),
        ..EnqueueRequest::default()
    };
    let err = q
        .queues
        .enqueue("jobs", "1".into(), with(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueueError::Invalid(m) if m.contains("priorities = true")),
        "{err}"
    );
    assert!(q.queues.enqueue("jobs", "1".into(), with(0)).await.is_ok());
    let q = memory("priorities = true").await;
    let err = q
        .queues
        .enqueue("jobs", "1".into(), with(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueueError::Invalid(m) if m.contains("0 to 9")),
        "{err}"
    );
    assert_eq!(q.stats().await.waiting, 0, "nothing was stored");
}

/// One node reads a queue with priorities and a plain one in one receive: a job of either
/// wakes a reader waiting on both, and a busy queue with priorities does not keep the plain
/// one's jobs from being read.
#[tokio::test]
async fn one_node_reads_queues_with_and_without_priorities_together() {
    let server = RedisServer::start();
    let pool = Arc::new(RedisPool::new(&RedisSettings::default(), &server.url()).expect("pool"));
    let names = ["jobs".to_string(), "plain".to_string()];
    let backend = RedisQueue::connect(pool, &names)
        .await
        .expect("redis queue");
    let plain: QueueTrigger =
        toml::from_str("queue = \"plain\"\ncomponent = \"p\"").expect("trigger");
    let queues = Arc::new(Queues::new(
        Arc::new(backend),
        &[trigger("priorities = true"), plain],
    ));
    let wants = [("jobs".to_string(), 5), ("plain".to_string(), 5)];
    for (queue, priority) in [("plain", None), ("jobs", Some(4))] {
        let reader = {
            let (queues, wants) = (queues.clone(), wants.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let got = queues
                    .backend()
                    .receive(&wants, Duration::from_secs(8))
                    .await;
                (got, started.elapsed())
            })
        };
        llmchat_host::timers::sleep(Duration::from_millis(300)).await;
        let request = EnqueueRequest {
            priority,
            ..EnqueueRequest::default()
        };
        queues
            .enqueue(queue, "1".into(), request)
            .await
            .expect("enqueue");
        let (got, waited) = reader.await.unwrap();
        let got = got.expect("receive");
        assert_eq!(got.len(), 1, "{queue}");
        assert_eq!(got[0].job.queue, queue);
        assert!(
            waited < Duration::from_secs(4),
            "{queue}: woken by the job: {waited:?}"
        );
    }
    for queue in ["jobs", "plain"] {
        let request = EnqueueRequest::default();
        queues.enqueue(queue, "2".into(), request).await.unwrap();
    }
    let got = queues
        .backend()
        .receive(&wants, Duration::from_secs(2))
        .await
        .unwrap();
    let mut seen: Vec<&str> = got.iter().map(|d| d.job.queue.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        ["jobs", "plain"],
        "both queues are read in one receive"
    );
}

/// Two hosts wait on a queue with priorities on one node: a burst of jobs wakes both, as a
/// channel would (one bell shared by the readers would wake only one, and the other would
/// sleep through the burst until its read timed out).
#[tokio::test]
async fn every_host_waiting_on_a_queue_with_priorities_wakes_for_a_burst() {
    let server = RedisServer::start();
    let host = || async {
        let pool =
            Arc::new(RedisPool::new(&RedisSettings::default(), &server.url()).expect("pool"));
        let backend = RedisQueue::connect(pool, &["jobs".to_string()])
            .await
            .expect("redis queue");
        Arc::new(Queues::new(
            Arc::new(backend),
            &[trigger("priorities = true")],
        ))
    };
    let (a, b) = (host().await, host().await);
    let readers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|q| {
            tokio::spawn(async move {
                let started = Instant::now();
                let got = q
                    .backend()
                    .receive(&[("jobs".to_string(), 1)], Duration::from_secs(8))
                    .await
                    .expect("receive");
                (got.len(), started.elapsed())
            })
        })
        .collect();
    // Time for both readers to find the queue empty and wait (see the case above).
    llmchat_host::timers::sleep(Duration::from_millis(300)).await;
    for i in 0..2 {
        let request = EnqueueRequest {
            priority: Some(i),
            ..EnqueueRequest::default()
        };
        a.enqueue("jobs", "1".into(), request)
            .await
            .expect("enqueue");
    }
    for reader in readers {
        let (got, waited) = reader.await.unwrap();
        assert_eq!(got, 1);
        assert!(
            waited < Duration::from_secs(4),
            "both readers woken by the burst: {waited:?}"
        );
    }
}
