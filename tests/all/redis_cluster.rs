//! Every feature on a real Redis Cluster (6 nodes: 3 masters, 3 replicas), shared by two
//! hosts: one given every seed, one given a single node that finds out it is a cluster by
//! asking. Queues (immediate, delayed, dedup, retries, dead letters and their retry), kv,
//! schedule tick claims, a rate limit shared by both hosts, and a deploy on one host that
//! the other follows. Then no node has ever refused a command for spanning two slots.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::Commands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::prometheus::{schedule_ticks, scrape};
use crate::support::redis_cluster::RedisCluster;
use crate::support::{Host, client, component, component_toml, deploy_hello, get_json, poll_until};

const WAIT: Duration = Duration::from_secs(60);
const QUEUES: [&str; 3] = ["jobs", "mail", "reports"];
/// `record` jobs per queue.
const JOBS: usize = 30;

fn app(url: &str) -> String {
    let queues: String = QUEUES
        .iter()
        .map(|q| format!("[[trigger.queue]]\nqueue = {q:?}\ncomponent = \"p\"\n"))
        .collect();
    format!(
        "[redis]\nurl = {url}\n\
         {}{queues}\
         {}[component.counter.config]\naction = \"count\"\n\
         [[trigger.schedule]]\ncomponent = \"counter\"\nevery = \"50ms\"\ntimeout = \"5s\"\n\
         {}[[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\nrate_limit = \"100/hour\"\nburst = 100\n",
        component_toml("p", &component("fixture-processor"), ""),
        component_toml("counter", &component("fixture-monitor"), ""),
        component_toml("hello", &component("hello"), ""),
    )
}

/// Enqueues through `host`'s admin API; returns the job id and whether it was a duplicate.
fn enqueue(host: &Host, queue: &str, body: Value) -> (String, bool) {
    let response = client()
        .post(host.url(&format!("/admin/queues/{queue}/jobs")))
        .json(&body)
        .send()
        .expect("POST a job");
    assert_eq!(response.status(), StatusCode::CREATED, "enqueue on {queue}");
    let body: Value = response.json().expect("a JSON body");
    (
        body["id"].as_str().expect("a job id").to_string(),
        body["duplicate"].as_bool().unwrap_or(false),
    )
}

/// `field` of `queue` in `/admin/queues` (the counters live in Redis: both hosts agree).
fn queue_stat(host: &Host, queue: &str, field: &str) -> u64 {
    get_json(&host.url("/admin/queues"))["queues"]
        .as_array()
        .expect("a queue list")
        .iter()
        .find(|q| q["queue"] == queue)
        .and_then(|q| q[field].as_u64())
        .unwrap_or(0)
}

#[test]
fn two_hosts_run_every_feature_on_a_six_node_cluster_without_a_cross_slot_command() {
    let cluster = RedisCluster::start();
    let a = Host::start(&app(&cluster.toml_urls()));
    let b = Host::start(&app(&format!("{:?}", cluster.first_url())));
    for host in [&a, &b] {
        host.wait_for_log("kv and queues use a Redis Cluster", Duration::from_secs(10));
    }
    let hosts = [&a, &b];

    // Queues: immediate jobs on three queues through both hosts, a few delayed, a duplicate.
    let mut recorded = Vec::new();
    for i in 0..JOBS {
        for (n, queue) in QUEUES.iter().enumerate() {
            let body = json!({ "payload": { "action": "record" } });
            recorded.push(enqueue(hosts[(i + n) % 2], queue, body).0);
        }
    }
    for _ in 0..5 {
        let body = json!({ "payload": { "action": "record" }, "delay": "200ms" });
        recorded.push(enqueue(&a, "jobs", body).0);
    }
    let first = json!({ "payload": { "action": "record" }, "dedup_key": "once" });
    let (id, duplicate) = enqueue(&a, "jobs", first.clone());
    assert!(!duplicate);
    recorded.push(id.clone());
    assert_eq!(
        enqueue(&b, "jobs", first),
        (id, true),
        "the other host sees the dedup key"
    );
    // Retries: each fails once, then records. Dead letters: two that always fail.
    for _ in 0..2 {
        let body = json!({ "payload": { "action": "flaky", "fail_times": 1 } });
        recorded.push(enqueue(&b, "mail", body).0);
        enqueue(&a, "reports", json!({ "payload": { "action": "fail" } }));
    }

    let mut conn = cluster.connection();
    let runs = |conn: &mut redis::cluster::ClusterConnection, id: &str| -> Option<u64> {
        conn.get(format!("llmchat:kv:p:runs:{id}"))
            .expect("GET a run count")
    };
    poll_until(WAIT, "every recorded job to run", || {
        recorded
            .iter()
            .all(|id| runs(&mut conn, id).is_some())
            .then_some(())
    });
    poll_until(WAIT, "the failing jobs to be dead letters", || {
        (queue_stat(&a, "reports", "dead") == 2).then_some(())
    });
    for id in &recorded {
        assert_eq!(runs(&mut conn, id), Some(1), "job {id} ran once");
    }
    assert_eq!(
        queue_stat(&b, "mail", "retried"),
        2,
        "each flaky job was retried once"
    );
    let retried = client()
        .post(b.url("/admin/queues/reports/dead/retry"))
        .json(&json!({ "all": true }))
        .send()
        .expect("retrying dead letters");
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(retried.json::<Value>().unwrap()["retried"], 2);
    poll_until(WAIT, "the retried dead letters to fail again", || {
        (queue_stat(&a, "reports", "failed") >= 4 && queue_stat(&a, "reports", "dead") == 2)
            .then_some(())
    });

    // kv: one namespace's keys spread over many slots, not one.
    let slots: BTreeSet<u64> = recorded
        .iter()
        .map(|id| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("llmchat:kv:p:runs:{id}"))
                .query(&mut conn)
                .expect("CLUSTER KEYSLOT")
        })
        .collect();
    assert!(
        slots.len() > recorded.len() / 2,
        "{} slots for {} keys",
        slots.len(),
        recorded.len()
    );

    // An idle host wakes for a new job at once: the doorbell, not the 10 s poll.
    let started = Instant::now();
    let (id, _) = enqueue(&b, "mail", json!({ "payload": { "action": "record" } }));
    poll_until(WAIT, "the job enqueued on idle hosts to run", || {
        runs(&mut conn, &id)
    });
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "an idle reader took {waited:?} to start a job"
    );

    // Schedules: both hosts contend for each tick, and each tick runs once.
    let ok = |h: &Host| schedule_ticks(&scrape(h), "counter", "ok");
    poll_until(WAIT, "20 ticks across both hosts", || {
        (ok(&a) + ok(&b) >= 20.0).then_some(())
    });
    let failed = |h: &Host| schedule_ticks(&scrape(h), "counter", "failed");
    assert_eq!(failed(&a) + failed(&b), 0.0, "no tick ran twice");

    // A rate limit shared by both hosts admits exactly its burst.
    let admitted = (0..150)
        .filter(|i| {
            let status = client()
                .get(hosts[i % 2].url("/hello"))
                .send()
                .unwrap()
                .status();
            assert!(
                matches!(status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS),
                "{status}"
            );
            status == StatusCode::OK
        })
        .count();
    assert_eq!(admitted, 100, "exactly the burst across both hosts");

    // Deploys: a component put on one host is served by the other.
    deploy_hello(&a, "greeter", "/greet");
    poll_until(
        WAIT,
        "the other host to serve the deployed component",
        || {
            let response = client().get(b.url("/greet")).send().ok()?;
            (response.status() == StatusCode::OK).then_some(())
        },
    );

    assert_eq!(
        cluster.error_count("CROSSSLOT"),
        0,
        "a command spanned two slots"
    );
    for (name, host) in [("a", a), ("b", b)] {
        let (status, log) = host.terminate_and_log();
        assert!(status.success(), "host {name} stopped cleanly");
        assert!(
            !log.contains("CROSSSLOT"),
            "host {name} logged a cross-slot error:\n{log}"
        );
    }
}

/// Commands each master processed (script internals included), from `INFO commandstats`,
/// without the replicas' `REPLCONF ACK`s (one a second), this test's `INFO`s and the
/// `CLIENT LIST`s of other tests' checks.
fn commands_per_master(cluster: &RedisCluster) -> Vec<u64> {
    cluster
        .master_infos("commandstats")
        .iter()
        .map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("cmdstat_"))
                .filter(|l| {
                    !["replconf:", "info:", "client|list:"]
                        .iter()
                        .any(|c| l.starts_with(c))
                })
                .filter_map(|l| {
                    l.split_once("calls=")?
                        .1
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum()
        })
        .collect()
}

/// An idle host on a cluster: with 3 queues it sends at most 1 command a second in all,
/// counted over 60 s on every master, and holds 3 connections per master (2 for commands,
/// 1 for the queue doorbells and deploy notifications) whatever the number of queues.
#[test]
fn an_idle_host_on_a_cluster_sends_at_most_a_command_a_second_and_three_connections_a_master() {
    let cluster = RedisCluster::start();
    let queues: String = ["a", "b", "c"]
        .iter()
        .map(|q| format!("[[trigger.queue]]\nqueue = {q:?}\ncomponent = \"p\"\nconcurrency = 5\n"))
        .collect();
    let manifest = format!(
        "[redis]\nurl = {}\n{}{queues}",
        cluster.toml_urls(),
        component_toml("p", &component("fixture-processor"), "")
    );
    let host = Host::start(&manifest);
    // Start-up settles: groups made, first reads and promotions done, doorbells subscribed.
    host.wait_for_log("llmchat listening", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let before = commands_per_master(&cluster);
    let window = Duration::from_secs(60);
    std::thread::sleep(window);
    let after = commands_per_master(&cluster);
    let sent: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    println!(
        "idle host on a cluster: {sent} commands in {window:?} over {} masters",
        before.len()
    );
    assert!(
        sent <= window.as_secs(),
        "{sent} commands in {window:?} while idle"
    );
    for (port, clients) in cluster.master_client_lists() {
        // Replicas' links are clients too (flags=S), and so is this test's connection.
        let host_connections = clients
            .lines()
            .filter(|l| !l.contains("flags=S") && !l.contains("cmd=client|list"))
            .count();
        assert!(
            host_connections <= 3,
            "{host_connections} connections of the host on master :{port}:\n{clients}"
        );
    }
}
