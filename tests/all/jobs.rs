//! Jobs users can see and steer, under the real binary on a private Redis: one job by id
//! (admin API and `llmchat job`), jobs by state, removal, a processor's progress and its own
//! status, the job's events as SSE from a host that does not run it, and pause / resume
//! across two hosts.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{cli_err, cli_ok};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, get_json, poll_until};

/// Queue `jobs` processed by `fixture-processor`, keeping completed jobs.
fn manifest(redis_url: &str, extra: &str) -> String {
    format!(
        "[redis]\nurl = {redis_url:?}\n{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n\
         keep_completed = {{ count = 100 }}\n{extra}\n",
        component_toml("p", &component("fixture-processor"), ""),
    )
}

fn enqueue(host: &Host, payload: Value) -> String {
    let response = client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&json!({ "payload": payload }))
        .send()
        .expect("enqueue");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().expect("JSON");
    body["id"].as_str().expect("an id").to_string()
}

fn job(host: &Host, id: &str) -> (StatusCode, Value) {
    let response = client()
        .get(host.url(&format!("/admin/queues/jobs/jobs/{id}")))
        .send()
        .expect("GET job");
    (response.status(), response.json().expect("JSON"))
}

fn wait_for_state(host: &Host, id: &str, state: &str) -> Value {
    poll_until(
        Duration::from_secs(20),
        &format!("job {id} {state}"),
        || {
            let (status, body) = job(host, id);
            (status == StatusCode::OK && body["state"] == state).then_some(body)
        },
    )
}

#[test]
fn a_job_is_followed_by_id_through_the_admin_api_and_the_cli() {
    let redis = RedisServer::start();
    let host = Host::start(&manifest(&redis.url(), ""));
    let base = host.url("");
    let id = enqueue(&host, json!({"action": "ok"}));
    let done = wait_for_state(&host, &id, "completed");
    assert_eq!(done["result"], "ok");
    assert_eq!(done["payload"], json!({"action": "ok"}));
    assert!(done["finished_at_ms"].as_u64() >= done["started_at_ms"].as_u64());

    let printed: Value = serde_json::from_str(&cli_ok(&base, &["job", "jobs", &id], None))
        .expect("`llmchat job` prints JSON");
    assert_eq!(
        (printed["id"].as_str(), printed["state"].as_str()),
        (Some(id.as_str()), Some("completed"))
    );
    let listed = cli_ok(&base, &["jobs", "jobs", "--state", "completed"], None);
    assert!(listed.contains(&id) && listed.contains("ok"), "{listed}");

    let (code, stderr) = cli_err(&base, &["jobs", "jobs", "--state", "finished"], None);
    assert_eq!(code, 2, "a bad state is a usage error");
    assert!(
        stderr.contains("unknown job state \"finished\""),
        "{stderr}"
    );
    let (status, body) = job(&host, "feed");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("no job `feed` in queue `jobs`"),
        "{body}"
    );
    let response = client()
        .get(host.url("/admin/queues/jobs/jobs?state=done"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A dead job carries its error; a delayed one can be removed from the CLI.
    let dead = enqueue(&host, json!({"action": "fail"}));
    let body = wait_for_state(&host, &dead, "dead");
    assert_eq!(body["error"], "permanent failure requested");
    let response = client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&json!({ "payload": {"action": "ok"}, "delay": "1h" }))
        .send()
        .unwrap();
    let later = response.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(job(&host, &later).1["state"], "delayed");
    let removed = cli_ok(&base, &["job", "jobs", &later, "--remove"], None);
    assert!(
        removed.contains("removed") && removed.contains("delayed"),
        "{removed}"
    );
    assert_eq!(job(&host, &later).0, StatusCode::NOT_FOUND);
}

#[test]
fn a_processor_reports_progress_and_reads_its_own_status() {
    let redis = RedisServer::start();
    let host = Host::start(&manifest(&redis.url(), ""));
    let me = enqueue(&host, json!({"action": "status-of-self"}));
    assert_eq!(wait_for_state(&host, &me, "completed")["result"], "active");
    let steps = enqueue(&host, json!({"action": "progress", "steps": 3, "ms": 1}));
    let done = wait_for_state(&host, &steps, "completed");
    assert_eq!(done["result"], "did 3 steps");
    assert_eq!(
        done["progress"],
        json!({"step": 3, "of": 3}),
        "the last value is kept, even when coalesced"
    );
}

/// Reads SSE events `(name, data)` from `response` until the stream ends or `deadline`.
fn read_events(response: reqwest::blocking::Response, deadline: Duration) -> Vec<(String, String)> {
    let end = Instant::now() + deadline;
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    for line in BufReader::new(response).lines() {
        let line = line.expect("reading the event stream");
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = d.to_string();
        } else if line.is_empty() && !name.is_empty() {
            events.push((std::mem::take(&mut name), std::mem::take(&mut data)));
        }
        assert!(Instant::now() < end, "the stream did not end: {events:?}");
    }
    events
}

#[test]
fn job_events_stream_from_a_host_that_does_not_run_the_job() {
    let redis = RedisServer::start();
    let manifest = manifest(&redis.url(), "");
    let runner = Host::start(&manifest);
    // 20 steps of 150 ms: long enough for the second host to start and follow it.
    let id = enqueue(
        &runner,
        json!({"action": "progress", "steps": 20, "ms": 150}),
    );
    wait_for_state(&runner, &id, "active");
    let follower = Host::start(&manifest);
    let response = client()
        .get(follower.url(&format!("/admin/queues/jobs/jobs/{id}/events")))
        .timeout(Duration::from_secs(60))
        .send()
        .expect("events");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response, Duration::from_secs(30));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"state"), "{events:?}");
    let progress: Vec<Value> = events
        .iter()
        .filter(|(n, _)| n == "progress")
        .map(|(_, d)| serde_json::from_str(d).expect("progress JSON"))
        .collect();
    assert!(
        progress.len() >= 3,
        "progress streamed while the job ran elsewhere: {events:?}"
    );
    let steps: Vec<u64> = progress.iter().filter_map(|p| p["step"].as_u64()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "in order: {steps:?}");
    let (last, data) = events.last().expect("a last event");
    assert_eq!(last, "completed", "{events:?}");
    let completed: Value = serde_json::from_str(data).unwrap();
    assert_eq!(completed["result"], "did 20 steps");

    // A client that comes after the end gets the final state at once, and the end.
    let started = Instant::now();
    let late = client()
        .get(follower.url(&format!("/admin/queues/jobs/jobs/{id}/events")))
        .send()
        .unwrap();
    let events = read_events(late, Duration::from_secs(5));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "completed");
    assert!(started.elapsed() < Duration::from_secs(5));
    let unknown = client()
        .get(follower.url("/admin/queues/jobs/jobs/beef/events"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[test]
fn pausing_a_queue_on_one_host_holds_its_jobs_on_every_host_until_resumed() {
    let redis = RedisServer::start();
    let manifest = manifest(&redis.url(), "");
    let (a, b) = (Host::start(&manifest), Host::start(&manifest));
    let paused = cli_ok(&a.url(""), &["pause", "jobs"], None);
    assert!(paused.contains("paused"), "{paused}");
    poll_until(Duration::from_secs(10), "host b sees the pause", || {
        (get_json(&b.url("/admin/queues"))["queues"][0]["paused"] == true).then_some(())
    });
    let ids: Vec<String> = (0..5)
        .map(|_| enqueue(&b, json!({"action": "ok"})))
        .collect();
    // Nothing may start while paused: watch for a second that every job stays waiting.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        for id in &ids {
            let state = job(&a, id).1["state"].clone();
            assert_eq!(state, "waiting", "job {id} was taken from a paused queue");
        }
    }
    cli_ok(&b.url(""), &["resume", "jobs"], None);
    for id in &ids {
        wait_for_state(&a, id, "completed");
    }
    assert_eq!(
        get_json(&a.url("/admin/queues"))["queues"][0]["paused"],
        false
    );
    let unknown = client()
        .post(a.url("/admin/queues/nope/pause"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_repeat_entry_enqueues_each_tick_once_across_two_hosts() {
    let redis = RedisServer::start();
    let manifest = manifest(
        &redis.url(),
        "repeat = [{ every = \"500ms\", payload = { action = \"ok\" } }]",
    );
    let (a, _b) = (Host::start(&manifest), Host::start(&manifest));
    let completed = || -> Vec<Value> {
        let list = get_json(&a.url("/admin/queues/jobs/jobs?state=completed&limit=1000"));
        list["jobs"].as_array().cloned().unwrap_or_default()
    };
    let jobs = poll_until(Duration::from_secs(20), "six repeat ticks", || {
        let jobs = completed();
        (jobs.len() >= 6).then_some(jobs)
    });
    for job in &jobs {
        assert_eq!(job["payload"], json!({"action": "ok"}));
    }
    let mut enqueued: Vec<u64> = jobs
        .iter()
        .filter_map(|j| j["enqueued_at_ms"].as_u64())
        .collect();
    enqueued.sort();
    let span = enqueued[enqueued.len() - 1] - enqueued[0];
    let ticks = (span as f64 / 500.0).round() as usize + 1;
    assert_eq!(
        enqueued.len(),
        ticks,
        "one job per tick though both hosts tick: {enqueued:?}"
    );
    for pair in enqueued.windows(2) {
        assert!(
            pair[1] - pair[0] >= 250,
            "two jobs for one tick: {enqueued:?}"
        );
    }
}

#[test]
fn a_repeat_added_at_run_time_ticks_on_every_host_once_until_removed() {
    let redis = RedisServer::start();
    let manifest = manifest(&redis.url(), "");
    let (a, b) = (Host::start(&manifest), Host::start(&manifest));
    let key = cli_ok(
        &a.url(""),
        &[
            "enqueue",
            "jobs",
            r#"{"action":"ok","n":7}"#,
            "--every",
            "300ms",
        ],
        None,
    )
    .trim()
    .to_string();
    assert!(key.starts_with("repeat:jobs:"), "{key}");
    let listed = cli_ok(&b.url(""), &["repeats", "jobs"], None);
    assert!(
        listed.contains(&key) && listed.contains("api") && listed.contains("every 300ms"),
        "{listed}"
    );
    let completed = || -> Vec<u64> {
        let list = get_json(&a.url("/admin/queues/jobs/jobs?state=completed&limit=1000"));
        let mut at: Vec<u64> = list["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["payload"]["n"] == 7)
            .filter_map(|j| j["enqueued_at_ms"].as_u64())
            .collect();
        at.sort();
        at
    };
    let ticks = poll_until(Duration::from_secs(20), "four run-time ticks", || {
        let at = completed();
        (at.len() >= 4).then_some(at)
    });
    for pair in ticks.windows(2) {
        assert!(pair[1] - pair[0] >= 150, "two jobs for one tick: {ticks:?}");
    }
    let removed = cli_ok(&b.url(""), &["repeats", "jobs", "--remove", &key], None);
    assert!(removed.contains("removed"), "{removed}");
    // Both hosts stop: the count settles (a tick already claimed may still land).
    let settled = poll_until(Duration::from_secs(10), "the ticks stop", || {
        let before = completed().len();
        std::thread::sleep(Duration::from_millis(700));
        (completed().len() == before).then_some(before)
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(completed().len(), settled, "no tick after the removal");
    let (code, stderr) = cli_err(&a.url(""), &["repeats", "jobs", "--remove", &key], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("no run-time repeat entry"), "{stderr}");
    let (code, stderr) = cli_err(
        &a.url(""),
        &["enqueue", "jobs", "{}", "--cron", "61 * * * *"],
        None,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("not a cron expression"), "{stderr}");
}

#[test]
fn global_concurrency_holds_exactly_across_two_hosts() {
    let redis = RedisServer::start();
    let manifest = manifest(&redis.url(), "concurrency = 5\nglobal_concurrency = 2");
    let (a, _b) = (Host::start(&manifest), Host::start(&manifest));
    let ids: Vec<String> = (0..24)
        .map(|_| enqueue(&a, json!({"action": "span", "ms": 40})))
        .collect();
    for id in &ids {
        wait_for_state(&a, id, "completed");
    }
    let mut conn = redis.connection();
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for id in &ids {
        let span: String = redis::cmd("GET")
            .arg(format!("llmchat:kv:p:span:{id}"))
            .query(&mut conn)
            .expect("the job stored its span");
        let (start, end) = span.split_once('-').expect("start-end");
        edges.push((start.parse().unwrap(), 1));
        edges.push((end.parse().unwrap(), -1));
    }
    // Ends before starts at the same ms: a job that ended lets the next one start.
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut running, mut most) = (0, 0);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert_eq!(
        most, 2,
        "at most 2 at once across both hosts, and the 2 were used"
    );
}

/// Enqueues `payload` through the admin API with `priority`; its id.
fn enqueue_at(host: &Host, payload: Value, priority: u8) -> String {
    let response = client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&json!({ "payload": payload, "priority": priority }))
        .send()
        .expect("enqueue");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().expect("JSON");
    body["id"].as_str().expect("an id").to_string()
}

#[test]
fn jobs_start_by_priority_from_the_admin_api_the_cli_and_a_component() {
    let redis = RedisServer::start();
    let host = Host::start(&manifest(
        &redis.url(),
        "priorities = true\nconcurrency = 1",
    ));
    let base = host.url("");
    // The one slot is busy with this job while the others arrive, so they all wait. (Not a
    // pause: a read already blocking when the pause lands may still take the next job, and
    // hold it in its slot, as designed.)
    let blocker = enqueue_at(&host, json!({"action": "sleep", "ms": 3000}), 0);
    wait_for_state(&host, &blocker, "active");
    let low: Vec<String> = (0..3)
        .map(|_| enqueue_at(&host, json!({"action": "sleep", "ms": 3}), 0))
        .collect();
    let printed = cli_ok(
        &base,
        &[
            "enqueue",
            "jobs",
            r#"{"action":"sleep","ms":3}"#,
            "--priority",
            "9",
        ],
        None,
    );
    let top = printed.trim().to_string();
    let middle = enqueue_at(&host, json!({"action": "sleep", "ms": 3}), 5);
    // When it runs, this one enqueues a job of priority 9 through the WIT `queue` interface.
    let parent = enqueue_at(
        &host,
        json!({"action": "enqueue", "priority": 9, "then": {"action": "sleep", "ms": 3}}),
        3,
    );
    let waiting = get_json(&host.url("/admin/queues/jobs/jobs?state=waiting"));
    let listed: Vec<&str> = waiting["jobs"]
        .as_array()
        .expect("a job list")
        .iter()
        .map(|j| j["id"].as_str().unwrap_or(""))
        .collect();
    let expected = [&top, &middle, &parent, &low[0], &low[1], &low[2]];
    assert_eq!(
        listed, expected,
        "waiting jobs are listed in the order they will start"
    );
    assert_eq!(waiting["jobs"][0]["priority"], 9);
    assert_eq!(
        job(&host, &blocker).1["state"],
        "active",
        "the list was read while the slot was busy (a machine this slow fails here)"
    );

    let (code, stderr) = cli_err(
        &base,
        &["enqueue", "jobs", r#"{"action":"ok"}"#, "--priority", "10"],
        None,
    );
    assert_eq!(
        code, 2,
        "an out-of-range priority is a usage error: {stderr}"
    );

    let child = wait_for_state(&host, &parent, "completed")["result"]
        .as_str()
        .expect("the parent's result is its child's id")
        .to_string();
    let started = |id: &str| {
        wait_for_state(&host, id, "completed")["started_at_ms"]
            .as_u64()
            .expect("a start time")
    };
    let order: Vec<u64> = [&top, &middle, &parent, &child, &low[0], &low[1], &low[2]]
        .iter()
        .map(|id| started(id))
        .collect();
    // One at a time, by priority, the child (9) ahead of the 0s that waited before it.
    // Each job but the parent busy-waits 3 ms, so starts are distinct milliseconds; the
    // child may start in the millisecond its parent started.
    for (i, pair) in order.windows(2).enumerate() {
        let in_order = if i == 2 {
            pair[0] <= pair[1]
        } else {
            pair[0] < pair[1]
        };
        assert!(in_order, "start times out of priority order: {order:?}");
    }
    assert_eq!(job(&host, &child).1["priority"], 9);
}
