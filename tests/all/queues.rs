//! Queue processors under the real binary, on a private Redis: fresh instances per job,
//! retries with backoff, dead letters, timeouts, memory caps, idle cost, two hosts with one
//! killed mid-run, and a Redis restart mid-run.
//!
//! Jobs are enqueued through the host library on the same Redis (the admin API is covered in
//! `admin.rs`); the `fixture-processor` component counts its runs in kv, which the tests read
//! straight from Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmchat_host::manifest::{QueueTrigger, RedisSettings};
use llmchat_host::queue::redis::RedisQueue;
use llmchat_host::queue::{EnqueueRequest, QueueStats, Queues};
use llmchat_host::redis::RedisPool;
use redis::Commands;

use crate::support::redis::RedisServer;
use crate::support::{Host, component, component_toml, poll_until};

/// A manifest with one queue `jobs` processed by `fixture-processor` as component `p`.
fn manifest(redis_url: &str, trigger: &str, component_extra: &str) -> String {
    format!(
        "[redis]\nurl = {redis_url:?}\n{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n{trigger}\n",
        component_toml("p", &component("fixture-processor"), component_extra),
    )
}

/// Enqueues through the host library, as a component or the admin API would.
struct Producer {
    rt: tokio::runtime::Runtime,
    queues: Queues,
}

impl Producer {
    fn new(redis_url: &str, trigger: &str) -> Producer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let trigger: QueueTrigger =
            toml::from_str(&format!("queue = \"jobs\"\ncomponent = \"p\"\n{trigger}"))
                .expect("trigger");
        let queues = rt.block_on(async {
            let pool = Arc::new(RedisPool::new(&RedisSettings::default(), redis_url).unwrap());
            let backend = RedisQueue::connect(pool, &["jobs".to_string()])
                .await
                .unwrap();
            Queues::new(Arc::new(backend), &[trigger])
        });
        Producer { rt, queues }
    }

    fn enqueue(&self, payload: &str) -> String {
        self.enqueue_with(payload, EnqueueRequest::default())
    }

    fn enqueue_with(&self, payload: &str, request: EnqueueRequest) -> String {
        self.rt
            .block_on(self.queues.enqueue("jobs", payload.to_string(), request))
            .expect("enqueue")
            .id()
            .to_string()
    }

    /// Enqueues `n` jobs with priorities 0 to 9 in turn (a queue with `priorities`).
    fn enqueue_mixed(&self, n: usize, payload: &str) -> Vec<String> {
        (0..n)
            .map(|i| {
                let request = EnqueueRequest {
                    priority: Some((i % 10) as u8),
                    ..EnqueueRequest::default()
                };
                self.enqueue_with(payload, request)
            })
            .collect()
    }

    fn stats(&self) -> QueueStats {
        self.rt
            .block_on(self.queues.backend().stats("jobs"))
            .expect("stats")
    }

    fn dead(&self) -> Vec<llmchat_host::queue::DeadJob> {
        self.rt
            .block_on(self.queues.backend().dead_letters("jobs", 100))
            .expect("dead letters")
    }

    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&QueueStats) -> bool,
    ) -> QueueStats {
        poll_until(timeout, what, || {
            let s = self.stats();
            done(&s).then_some(s)
        })
    }
}

impl Producer {
    /// Pauses or resumes `jobs` for every host (through Redis, as `llmchat pause` does).
    fn set_paused(&self, paused: bool) {
        self.rt
            .block_on(self.queues.set_paused("jobs", paused))
            .expect("pause or resume");
    }

    /// Once the jobs that were running have finished, nothing finishes for half a second:
    /// the queue is held (jobs delivered just before the pause wait in their slots).
    fn assert_held(&self, what: &str) {
        // Windows with no progress are what is under test here.
        let settled = poll_until(Duration::from_secs(30), what, || {
            let before = self.stats().processed;
            std::thread::sleep(Duration::from_millis(300));
            (self.stats().processed == before).then_some(before)
        });
        std::thread::sleep(Duration::from_millis(500));
        let later = self.stats();
        assert_eq!(later.processed, settled, "{what}: jobs ran while paused");
        assert!(
            later.waiting > 0,
            "{what}: jobs are left to hold: {later:?}"
        );
    }

    /// Every job is found completed, with its result (`keep_completed`).
    fn assert_all_completed(&self, ids: &[String]) {
        let backend = self.queues.backend();
        for id in ids {
            let job = self.rt.block_on(backend.job("jobs", id)).expect("job");
            let job = job.unwrap_or_else(|| panic!("job {id} is not kept"));
            assert_eq!(job.state, llmchat_host::queue::JobState::Completed, "{id}");
            assert!(job.result.is_some_and(|r| r.starts_with("slept")), "{id}");
        }
    }
}

/// How often the processor ran each job (its `runs:{id}` counter in kv namespace `p`).
fn runs(redis: &mut redis::Connection, ids: &[String]) -> Vec<u64> {
    ids.chunks(500)
        .flat_map(|chunk| {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| format!("llmchat:kv:p:runs:{id}"))
                .collect();
            let values: Vec<Option<u64>> = redis.mget(&keys).expect("MGET");
            values.into_iter().map(|v| v.unwrap_or(0))
        })
        .collect()
}

#[test]
fn jobs_run_once_each_on_fresh_instances() {
    let redis = RedisServer::start();
    let _host = Host::start(&manifest(&redis.url(), "", ""));
    let producer = Producer::new(&redis.url(), "");
    let ids: Vec<String> = (0..50)
        .map(|_| producer.enqueue(r#"{"action":"record"}"#))
        .collect();
    let s = producer.wait_for("50 processed jobs", Duration::from_secs(30), |s| {
        s.processed == 50
    });
    assert_eq!((s.waiting, s.in_flight, s.failed), (0, 0, 0), "{s:?}");
    assert!(runs(&mut redis.connection(), &ids).iter().all(|&n| n == 1));
}

#[test]
fn the_smallest_processor_runs_jobs_too() {
    let redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\n{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n",
        redis.url(),
        component_toml("p", &component("fixture-noop-processor"), "")
    );
    let _host = Host::start(&manifest);
    let producer = Producer::new(&redis.url(), "");
    for _ in 0..100 {
        producer.enqueue("{}");
    }
    let s = producer.wait_for("100 processed jobs", Duration::from_secs(30), |s| {
        s.processed == 100
    });
    assert_eq!(s.failed, 0);
}

#[test]
fn failing_jobs_are_retried_after_their_backoff_then_succeed() {
    let redis = RedisServer::start();
    let trigger = "backoff = \"fixed:300ms\"\nmax_attempts = 3";
    let host = Host::start(&manifest(&redis.url(), trigger, ""));
    let producer = Producer::new(&redis.url(), trigger);
    let started = Instant::now();
    let id = producer.enqueue(r#"{"action":"flaky","fail_times":2}"#);
    let s = producer.wait_for("the flaky job to succeed", Duration::from_secs(30), |s| {
        s.processed == 1
    });
    let took = started.elapsed();
    assert_eq!(s.retried, 2, "{s:?}");
    assert!(
        took >= Duration::from_millis(600),
        "two backoffs of 300 ms: {took:?}"
    );
    assert!(
        took < Duration::from_millis(600 + 60 + 1500),
        "no lateness beyond jitter and slack: {took:?}"
    );
    let attempts: u64 = redis
        .connection()
        .get(format!("llmchat:kv:p:attempts:{id}"))
        .unwrap();
    assert_eq!(attempts, 3);
    host.wait_for_log("retrying in", Duration::from_secs(5));
}

#[test]
fn exhausted_and_permanent_failures_are_dead_lettered() {
    let redis = RedisServer::start();
    let trigger = "backoff = \"fixed:10ms\"\nmax_attempts = 2";
    let _host = Host::start(&manifest(&redis.url(), trigger, ""));
    let producer = Producer::new(&redis.url(), trigger);
    let transient = producer.enqueue(r#"{"action":"retry"}"#);
    let permanent = producer.enqueue(r#"{"action":"fail"}"#);
    let malformed = producer.enqueue(r#"{"action":"dance"}"#);
    let s = producer.wait_for("three dead letters", Duration::from_secs(30), |s| {
        s.dead == 3
    });
    assert_eq!(
        (s.retried, s.processed),
        (1, 0),
        "only the transient failure was retried: {s:?}"
    );
    let dead = producer.dead();
    let find = |id: &str| dead.iter().find(|d| d.job.id == id).expect("dead letter");
    assert_eq!(find(&transient).job.attempt, 2);
    assert!(
        find(&transient).error.contains("attempt 2 of 2"),
        "{}",
        find(&transient).error
    );
    assert_eq!(find(&permanent).job.attempt, 1);
    assert!(find(&permanent).error.contains("permanent"));
    assert!(
        find(&malformed).error.contains("dance"),
        "the error names the problem: {}",
        find(&malformed).error
    );
}

#[test]
fn a_job_timeout_stops_an_infinite_loop_which_is_retried_then_dead_lettered() {
    let redis = RedisServer::start();
    let trigger = "backoff = \"fixed:10ms\"\nmax_attempts = 2\ntimeout = \"300ms\"";
    let _host = Host::start(&manifest(&redis.url(), trigger, ""));
    let producer = Producer::new(&redis.url(), trigger);
    producer.enqueue(r#"{"action":"loop"}"#);
    let ok = producer.enqueue(r#"{"action":"record"}"#);
    let s = producer.wait_for(
        "the loop to be dead-lettered",
        Duration::from_secs(30),
        |s| s.dead == 1 && s.processed == 1,
    );
    assert_eq!(s.retried, 1);
    let dead = producer.dead();
    assert!(
        dead[0].error.contains("timed out after 300ms"),
        "{}",
        dead[0].error
    );
    assert_eq!(runs(&mut redis.connection(), &[ok]), vec![1]);
}

#[test]
fn a_memory_bomb_fails_only_its_own_job() {
    let redis = RedisServer::start();
    let trigger = "max_attempts = 1\nconcurrency = 3";
    let _host = Host::start(&manifest(&redis.url(), trigger, "memory_limit = \"16MiB\""));
    let producer = Producer::new(&redis.url(), trigger);
    producer.enqueue(r#"{"action":"bomb"}"#);
    let ids: Vec<String> = (0..20)
        .map(|_| producer.enqueue(r#"{"action":"record"}"#))
        .collect();
    producer.wait_for(
        "the bomb dead and the rest done",
        Duration::from_secs(30),
        |s| s.dead == 1 && s.processed == 20,
    );
    assert!(
        producer.dead()[0].error.contains("memory limit exceeded"),
        "{}",
        producer.dead()[0].error
    );
    assert!(runs(&mut redis.connection(), &ids).iter().all(|&n| n == 1));
}

#[test]
fn an_idle_host_sends_almost_no_commands_and_holds_four_connections() {
    let redis = RedisServer::start();
    let queues: String = ["a", "b", "c"]
        .iter()
        .map(|q| {
            format!("[[trigger.queue]]\nqueue = \"{q}\"\ncomponent = \"p\"\nconcurrency = 5\n")
        })
        .collect();
    let manifest = format!(
        "[redis]\nurl = {:?}\n{}{queues}",
        redis.url(),
        component_toml("p", &component("fixture-processor"), "")
    );
    let host = Host::start(&manifest);
    let mut conn = redis.connection();
    let total = |conn: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // Let start-up (group creation, first reads and promotions) settle.
    host.wait_for_log("llmchat listening", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    let before = total(&mut conn);
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let sent = total(&mut conn) - before - 1; // minus the INFO that read `before`
    assert!(
        sent <= window.as_secs(),
        "{sent} commands in {window:?} while idle"
    );
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let host_connections = clients.lines().count() - 1; // minus this test's connection
    // 2 command connections, the blocking queue reader, the deploy notifications.
    assert!(
        host_connections <= 4,
        "{host_connections} connections:\n{clients}"
    );
}

#[test]
fn two_hosts_share_the_queue_and_lose_nothing_when_one_is_killed() {
    let redis = RedisServer::start();
    // Retention, priorities, a global concurrency and (below) a pause, all in use.
    let trigger = "visibility = \"2s\"\nmax_attempts = 5\nbackoff = \"fixed:10ms\"\n\
                   keep_completed = { count = 10000 }\npriorities = true\n\
                   global_concurrency = 12";
    let manifest = manifest(&redis.url(), trigger, "");
    let producer = Producer::new(&redis.url(), trigger);
    let ids = producer.enqueue_mixed(5000, r#"{"action":"sleep","ms":2}"#);
    let victim = Host::start(&manifest);
    let survivor = Host::start(&manifest);
    producer.wait_for("some progress", Duration::from_secs(60), |s| {
        s.processed >= 500
    });
    // Paused while a host dies: the pause holds on the survivor, and resuming loses nothing.
    producer.set_paused(true);
    let victim_pid = victim.pid();
    std::process::Command::new("kill")
        .args(["-9", &victim_pid.to_string()])
        .status()
        .unwrap();
    drop(victim);
    producer.assert_held("paused after a host died");
    producer.set_paused(false);
    let s = producer.wait_for("every job", Duration::from_secs(120), |s| {
        s.processed >= 5000 && s.in_flight == 0 && s.waiting == 0
    });
    assert_eq!(s.dead, 0, "{s:?}");
    let counts = runs(&mut redis.connection(), &ids);
    let missing = counts.iter().filter(|&&n| n == 0).count();
    let duplicates: u64 = counts.iter().map(|&n| n.saturating_sub(1)).sum();
    println!("two hosts, one killed with -9: 5000 jobs, {missing} missing, {duplicates} run twice");
    assert_eq!(missing, 0, "every job completed at least once");
    producer.assert_all_completed(&ids);
    survivor.wait_for_log("requeued stalled jobs", Duration::from_secs(10));
}

#[test]
fn a_redis_restart_mid_run_loses_no_job() {
    let mut redis = RedisServer::start();
    let trigger = "visibility = \"2s\"\nmax_attempts = 10\nbackoff = \"fixed:100ms\"\n\
                   keep_completed = { count = 10000 }\npriorities = true\n\
                   global_concurrency = 12";
    let producer = Producer::new(&redis.url(), trigger);
    let ids = producer.enqueue_mixed(2000, r#"{"action":"sleep","ms":1}"#);
    let _host = Host::start(&manifest(&redis.url(), trigger, ""));
    producer.wait_for("some progress", Duration::from_secs(60), |s| {
        s.processed >= 200
    });
    producer.set_paused(true);
    redis.restart();
    let producer = Producer::new(&redis.url(), trigger);
    producer.assert_held("paused across a Redis restart");
    producer.set_paused(false);
    producer.wait_for(
        "every job after the restart",
        Duration::from_secs(120),
        |s| s.processed >= 2000 && s.in_flight == 0 && s.waiting == 0,
    );
    let counts = runs(&mut redis.connection(), &ids);
    let missing = counts.iter().filter(|&&n| n == 0).count();
    println!("redis restart: 2000 jobs, {missing} missing");
    assert_eq!(missing, 0);
    producer.assert_all_completed(&ids);
}

#[test]
fn sigterm_finishes_running_jobs_and_leaves_the_rest_for_redelivery() {
    let redis = RedisServer::start();
    let trigger = "concurrency = 2\nvisibility = \"2s\"";
    let manifest = |grace: &str| {
        format!(
            "[http]\nshutdown_grace = \"{grace}\"\n{}",
            manifest(&redis.url(), trigger, "")
        )
    };
    let producer = Producer::new(&redis.url(), trigger);
    let ids: Vec<String> = (0..10)
        .map(|_| producer.enqueue(r#"{"action":"sleep","ms":400}"#))
        .collect();

    // A generous grace: the two running jobs finish, the other eight are never started.
    let host = Host::start(&manifest("10s"));
    producer.wait_for("two running jobs", Duration::from_secs(10), |s| {
        s.in_flight == 2
    });
    assert!(host.terminate().success());
    let s = producer.stats();
    assert_eq!((s.processed, s.in_flight, s.waiting), (2, 0, 8), "{s:?}");

    // A grace too short for a job: it is cut, and redelivered to the next host.
    let host = Host::start(&manifest("50ms"));
    producer.wait_for("two running jobs", Duration::from_secs(10), |s| {
        s.in_flight == 2
    });
    assert!(host.terminate().success());

    let _next = Host::start(&manifest("10s"));
    producer.wait_for("every job", Duration::from_secs(30), |s| {
        s.processed == 10 && s.in_flight == 0
    });
    let counts = runs(&mut redis.connection(), &ids);
    assert!(counts.iter().all(|&n| n >= 1), "nothing lost: {counts:?}");
}

#[test]
fn a_busy_queue_is_not_starved_while_the_reader_waits_on_an_idle_one() {
    let redis = RedisServer::start();
    // Queue `jobs` has one slot; queue `idle` never gets a job. While `jobs` is busy the
    // reader blocks on `idle` only; a freed `jobs` slot must end that wait at once.
    let manifest = format!(
        "{}[[trigger.queue]]\nqueue = \"idle\"\ncomponent = \"p\"\n",
        manifest(&redis.url(), "concurrency = 1", "")
    );
    let producer = Producer::new(&redis.url(), "concurrency = 1");
    for _ in 0..20 {
        producer.enqueue(r#"{"action":"sleep","ms":5}"#);
    }
    let started = Instant::now();
    let _host = Host::start(&manifest);
    producer.wait_for("20 jobs through one slot", Duration::from_secs(60), |s| {
        s.processed == 20
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "20 jobs of 5 ms took {took:?}: the busy queue waited for the idle one"
    );
}
