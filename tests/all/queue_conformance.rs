//! One conformance suite for every queue backend: the embedded memory queue, Redis (a
//! private `redis-server` per test) and a Redis Cluster (a private 6-node cluster per
//! test). All must behave identically as seen through [`QueueBackend`]; each case below
//! runs against each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmchat_host::manifest::{QueueTrigger, RedisSettings};
use llmchat_host::queue::memory::MemoryQueue;
use llmchat_host::queue::redis::RedisQueue;
use llmchat_host::queue::{Delivery, EnqueueRequest, Enqueued, QueueBackend, QueueError, Queues};
use llmchat_host::redis::RedisPool;
use llmchat_host::timers::now_ms;

use crate::support::redis::RedisServer;
use crate::support::redis_cluster::RedisCluster;

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
        q.backend().complete(std::slice::from_ref(&d)).await.unwrap();
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
        q.backend().bury(&d, "boom").await.unwrap();
        let dead = q.backend().dead_letters("jobs", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].job.id.as_str(), dead[0].error.as_str(), dead[0].job.payload.as_str()), (id.as_str(), "boom", r#"{"x":true}"#));
        let s = q.stats().await;
        assert_eq!((s.dead, s.failed, s.in_flight), (1, 1, 0), "{s:?}");

        assert_eq!(q.backend().retry_dead("jobs", Some("no-such-id")).await.unwrap(), 0);
        assert_eq!(q.backend().retry_dead("jobs", Some(&id)).await.unwrap(), 1);
        let revived = q.receive_one().await;
        assert_eq!((revived.job.id.as_str(), revived.job.attempt), (id.as_str(), 1));
        q.backend().bury(&revived, "boom again").await.unwrap();
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
        assert_eq!(q.backend().reclaim_stalled("jobs", visibility, 100).await.unwrap(), 0, "not stalled yet");
        llmchat_host::timers::sleep(visibility + Duration::from_millis(50)).await;
        assert_eq!(q.backend().reclaim_stalled("jobs", visibility, 100).await.unwrap(), 1);
        let second = q.receive_one().await;
        assert_eq!((second.job.id.as_str(), second.job.attempt), (first.job.id.as_str(), 2));
        // The first holder can no longer finish it.
        q.backend().bury(&first, "late").await.unwrap();
        assert!(q.backend().dead_letters("jobs", 10).await.unwrap().is_empty());
        llmchat_host::timers::sleep(visibility + Duration::from_millis(50)).await;
        assert_eq!(q.backend().reclaim_stalled("jobs", visibility, 100).await.unwrap(), 1);
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
        assert_eq!(q.backend().reclaim_stalled("jobs", visibility, 100).await.unwrap(), 0);
        q.backend().complete(std::slice::from_ref(&d)).await.unwrap();
        assert_eq!(q.stats().await.processed, 1);
    }
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
