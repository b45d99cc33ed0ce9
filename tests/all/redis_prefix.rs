//! `[redis] prefix`: two applications (staging and production) on one Redis, each under its
//! own prefix, share the server and nothing else: not a job, a kv key, a schedule's tick or a
//! deployment, and every key and channel either of them made starts with its prefix.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Commands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::prometheus::{schedule_ticks, scrape};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, deploy_hello, get_json, poll_until};

const WAIT: Duration = Duration::from_secs(30);
const JOBS: usize = 20;

/// A queue processed by `p` (which counts each job's runs in kv) and a monitor `counter`
/// ticking every 50 ms (which counts each tick's runs in kv), under `prefix`.
fn app(redis: &RedisServer, prefix: &str) -> String {
    format!(
        "[redis]\nurl = {:?}\nprefix = {prefix:?}\n\
         {}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n\
         {}[component.counter.config]\naction = \"count\"\n\
         [[trigger.schedule]]\ncomponent = \"counter\"\nevery = \"50ms\"\ntimeout = \"5s\"\n",
        redis.url(),
        component_toml("p", &component("fixture-processor"), ""),
        component_toml("counter", &component("fixture-monitor"), ""),
    )
}

fn enqueue(host: &Host) -> String {
    let response = client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&json!({ "payload": { "action": "record" } }))
        .send()
        .expect("POST a job");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().expect("a JSON body");
    body["id"].as_str().expect("a job id").to_string()
}

fn processed(host: &Host) -> u64 {
    get_json(&host.url("/admin/queues"))["queues"][0]["processed"]
        .as_u64()
        .unwrap_or(0)
}

/// Ticks of the `counter` schedule on `host` that ended with `outcome`.
fn ticks(host: &Host, outcome: &str) -> f64 {
    schedule_ticks(&scrape(host), "counter", outcome)
}

fn component_names(host: &Host) -> BTreeSet<String> {
    get_json(&host.url("/admin/components"))["components"]
        .as_array()
        .expect("a component list")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn two_apps_with_their_own_prefix_share_one_redis_and_nothing_else() {
    let redis = RedisServer::start();
    let staging = Host::start(&app(&redis, "staging"));
    let prod = Host::start(&app(&redis, "prod"));

    // Jobs: each host processes its own, and its counters count only those.
    let staging_jobs: Vec<String> = (0..JOBS).map(|_| enqueue(&staging)).collect();
    let prod_jobs: Vec<String> = (0..JOBS).map(|_| enqueue(&prod)).collect();
    poll_until(WAIT, "both hosts processed their jobs", || {
        (processed(&staging) >= JOBS as u64 && processed(&prod) >= JOBS as u64).then_some(())
    });
    assert_eq!(
        processed(&staging),
        JOBS as u64,
        "staging counts only its own jobs"
    );
    assert_eq!(
        processed(&prod),
        JOBS as u64,
        "prod counts only its own jobs"
    );
    let mut conn = redis.connection();
    for (prefix, mine, theirs) in [
        ("staging", &staging_jobs, &prod_jobs),
        ("prod", &prod_jobs, &staging_jobs),
    ] {
        for id in mine {
            let runs: Option<u64> = conn.get(format!("{prefix}:kv:p:runs:{id}")).unwrap();
            assert_eq!(
                runs,
                Some(1),
                "job {id} of {prefix} ran once, in {prefix}'s kv"
            );
        }
        for id in theirs {
            let runs: Option<u64> = conn.get(format!("{prefix}:kv:p:runs:{id}")).unwrap();
            assert_eq!(
                runs, None,
                "job {id} of the other app is not in {prefix}'s kv"
            );
        }
    }

    // Schedules: each host claims every tick of its own schedule; none is lost to the other
    // (on a shared prefix the two hosts would split the ticks: `elsewhere`).
    poll_until(WAIT, "10 ticks on each host", || {
        (ticks(&staging, "ok") >= 10.0 && ticks(&prod, "ok") >= 10.0).then_some(())
    });
    assert_eq!(ticks(&staging, "elsewhere"), 0.0);
    assert_eq!(ticks(&prod, "elsewhere"), 0.0);

    // Deploys: each app's records and notifications stay its own.
    deploy_hello(&staging, "greeter", "/greet");
    deploy_hello(&prod, "other", "/other");
    assert!(component_names(&staging).contains("greeter"));
    assert!(!component_names(&staging).contains("other"));
    assert!(component_names(&prod).contains("other"));
    assert!(!component_names(&prod).contains("greeter"));
    let names: BTreeSet<String> = conn.smembers("staging:{deploy}:names").unwrap();
    assert_eq!(names, BTreeSet::from(["greeter".to_string()]));
    let names: BTreeSet<String> = conn.smembers("prod:{deploy}:names").unwrap();
    assert_eq!(names, BTreeSet::from(["other".to_string()]));
    let channels: BTreeSet<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        channels,
        BTreeSet::from([
            "prod:{deploy}:notify".to_string(),
            "staging:{deploy}:notify".to_string(),
        ])
    );

    // Every key either app made is under its prefix.
    let keys: Vec<String> = conn.keys("*").unwrap();
    assert!(keys.len() > 2 * JOBS, "{} keys", keys.len());
    let stray: Vec<&String> = keys
        .iter()
        .filter(|k| !(k.starts_with("staging:") || k.starts_with("prod:")))
        .collect();
    assert!(stray.is_empty(), "keys outside both prefixes: {stray:?}");
    for prefix in ["staging", "prod"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{prefix}:schedule:"))),
            "{prefix}'s schedule claim is under its prefix"
        );
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{prefix}:{{jobs}}:"))),
            "{prefix}'s queue is under its prefix"
        );
    }
}
