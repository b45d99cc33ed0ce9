//! `/metrics`, `/health` and `/ready` on the real binary: per-component counts after real
//! invocations (a memory bomb included), queue counts after jobs through the admin API,
//! host figures, and readiness following Redis.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::support::prometheus::{Sample, scrape, value};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, poll_until, route_toml};

const WAIT: Duration = Duration::from_secs(20);

/// Scrapes until `name{labels}` reaches `expected`, and returns that scrape.
fn wait_for_value(host: &Host, name: &str, labels: &[(&str, &str)], expected: f64) -> Vec<Sample> {
    poll_until(WAIT, &format!("{name}{labels:?} == {expected}"), || {
        let samples = scrape(host);
        (value(&samples, name, labels) == Some(expected)).then_some(samples)
    })
}

fn get(host: &Host, path: &str) -> (StatusCode, Value) {
    let response = client().get(host.url(path)).send().expect("GET");
    (response.status(), response.json().expect("a JSON body"))
}

#[test]
fn invocations_errors_durations_and_peak_memory_are_counted_per_component() {
    let manifest = format!(
        "{}{}{}{}",
        component_toml("hello", &component("hello"), ""),
        component_toml(
            "bomb",
            &component("fixture-memory-bomb"),
            "memory_limit = \"16MiB\""
        ),
        route_toml("/bomb", "bomb"),
        // A catch-all route must not shadow the host's endpoints.
        route_toml("/...", "hello"),
    );
    let host = Host::start(&manifest);
    for _ in 0..5 {
        let response = client().get(host.url("/hello")).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let bomb = client().get(host.url("/bomb")).send().unwrap();
    assert_eq!(bomb.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let hello = [("component", "hello")];
    // An invocation is counted when its task ends, which may be just after its response.
    wait_for_value(
        &host,
        "llmchat_component_invocations_total",
        &[("component", "hello"), ("trigger", "http")],
        5.0,
    );
    let samples = wait_for_value(
        &host,
        "llmchat_component_errors_total",
        &[("component", "bomb"), ("kind", "memory")],
        1.0,
    );
    for kind in ["trap", "timeout", "memory", "guest"] {
        assert_eq!(
            value(
                &samples,
                "llmchat_component_errors_total",
                &[("component", "hello"), ("kind", kind)]
            ),
            Some(0.0),
            "hello never failed ({kind})"
        );
    }
    assert_eq!(
        value(&samples, "llmchat_component_duration_seconds_count", &hello),
        Some(5.0)
    );
    let total = value(&samples, "llmchat_component_duration_seconds_sum", &hello).unwrap();
    assert!(total > 0.0 && total < 5.0, "hello took {total} s in all");
    assert_eq!(
        value(
            &samples,
            "llmchat_component_peak_memory_bytes_count",
            &hello
        ),
        Some(5.0)
    );
    let peak = value(
        &samples,
        "llmchat_component_peak_memory_bytes_sum",
        &[("component", "bomb")],
    )
    .expect("the bomb's peak memory");
    assert!(
        peak > f64::from(8 << 20) && peak <= f64::from(16 << 20),
        "the bomb peaked near its 16 MiB cap, not above: {peak}"
    );
    // Every observation lands at or under the 16 MiB bucket, whatever the bucket label's
    // number format.
    let at_cap = samples
        .iter()
        .find(|s| {
            s.name == "llmchat_component_peak_memory_bytes_bucket"
                && s.labels.contains(&("component".into(), "bomb".into()))
                && s.labels
                    .iter()
                    .any(|(k, v)| k == "le" && v.parse::<f64>().ok() == Some(f64::from(16 << 20)))
        })
        .expect("a 16 MiB bucket");
    assert_eq!(at_cap.value, 1.0);

    let rss = value(&samples, "llmchat_process_resident_memory_bytes", &[]).expect("RSS");
    assert!(rss > f64::from(1 << 20), "RSS {rss}");
    let tasks = value(&samples, "llmchat_tokio_alive_tasks", &[]).expect("tokio tasks");
    assert!(tasks > 0.0, "alive tasks {tasks}");
    assert_eq!(
        value(
            &samples,
            "llmchat_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        !samples
            .iter()
            .any(|s| s.name.starts_with("llmchat_redis_pool")),
        "no Redis pool without Redis"
    );
}

#[test]
fn queue_counts_follow_the_jobs() {
    let manifest = format!(
        "{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n",
        component_toml("p", &component("fixture-processor"), ""),
    );
    let host = Host::start(&manifest);
    let enqueue = |action: &str| {
        let response = client()
            .post(host.url("/admin/queues/jobs/jobs"))
            .json(&json!({ "payload": { "action": action } }))
            .send()
            .expect("POST jobs");
        assert_eq!(response.status(), StatusCode::CREATED);
    };
    for _ in 0..10 {
        enqueue("ok");
    }
    enqueue("fail");

    let jobs = [("queue", "jobs")];
    wait_for_value(&host, "llmchat_queue_processed_total", &jobs, 10.0);
    let samples = wait_for_value(&host, "llmchat_queue_failed_total", &jobs, 1.0);
    assert_eq!(value(&samples, "llmchat_queue_stats_up", &jobs), Some(1.0));
    assert_eq!(
        value(&samples, "llmchat_queue_retried_total", &jobs),
        Some(0.0)
    );
    for (state, expected) in [
        ("waiting", 0.0),
        ("in_flight", 0.0),
        ("delayed", 0.0),
        ("dead", 1.0),
    ] {
        assert_eq!(
            value(
                &samples,
                "llmchat_queue_jobs",
                &[("queue", "jobs"), ("state", state)]
            ),
            Some(expected),
            "{state}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "llmchat_component_invocations_total",
            &[("component", "p"), ("trigger", "queue")]
        ),
        Some(11.0)
    );
    assert_eq!(
        value(
            &samples,
            "llmchat_component_errors_total",
            &[("component", "p"), ("kind", "guest")]
        ),
        Some(1.0),
        "a `fail` error is the guest's"
    );
}

#[test]
fn health_and_ready_answer_and_only_get_is_allowed() {
    let manifest = format!(
        "{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/...", "hello"),
    );
    let host = Host::start(&manifest);
    assert_eq!(
        get(&host, "/health"),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        get(&host, "/ready"),
        (
            StatusCode::OK,
            json!({"status": "ready", "components": 1, "redis": "not configured"})
        )
    );
    for path in ["/metrics", "/health", "/ready"] {
        let response = client().post(host.url(path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(response.headers()["allow"], "GET, HEAD");
    }
    let open = client()
        .get(host.url("/metrics"))
        .header(
            ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .unwrap();
    assert_eq!(
        open.headers()[CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.text().unwrap().ends_with("# EOF\n"));
    // Paths below them are not the host's: the catch-all component answers.
    let below = client().get(host.url("/metrics/x")).send().unwrap();
    assert_eq!(below.text().unwrap(), "Hello, world!\n");
}

#[test]
fn ready_follows_redis_and_scrapes_survive_it() {
    let mut redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\nacquire_timeout = \"100ms\"\ncommand_timeout = \"300ms\"\n{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n",
        redis.url(),
        component_toml("p", &component("fixture-processor"), ""),
    );
    let host = Host::start(&manifest);
    assert_eq!(
        get(&host, "/ready"),
        (
            StatusCode::OK,
            json!({"status": "ready", "components": 1, "redis": "ok"})
        )
    );
    let samples = scrape(&host);
    let jobs = [("queue", "jobs")];
    assert_eq!(value(&samples, "llmchat_queue_stats_up", &jobs), Some(1.0));
    assert_eq!(
        value(&samples, "llmchat_redis_pool_connections", &[]),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "llmchat_redis_pool_max_in_flight", &[]),
        Some(512.0)
    );
    for gauge in ["in_flight", "waiters"] {
        let name = format!("llmchat_redis_pool_{gauge}");
        assert!(value(&samples, &name, &[]).is_some(), "{name}");
    }
    for counter in ["waits_total", "timeouts_total", "wait_seconds_count"] {
        let name = format!("llmchat_redis_pool_{counter}");
        assert!(value(&samples, &name, &[]).is_some(), "{name}");
    }

    redis.stop();
    let (status, body) = get(&host, "/ready");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["redis"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let samples = scrape(&host);
    assert_eq!(
        value(&samples, "llmchat_queue_stats_up", &jobs),
        Some(0.0),
        "a scrape without Redis still answers, with the queue down"
    );
    assert_eq!(
        value(&samples, "llmchat_queue_processed_total", &jobs),
        None
    );
}

#[test]
fn a_manifest_route_on_a_host_endpoint_is_refused_at_start_up() {
    let manifest = format!(
        "{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/metrics", "hello"),
    );
    let log = Host::try_start(&manifest, &[])
        .err()
        .expect("the host must not start");
    assert!(
        log.contains("route \"/metrics\" of component `hello` is reserved"),
        "{log}"
    );
}

#[test]
fn http_requests_are_counted_by_route_pattern_and_status_class() {
    let manifest = component_toml("hello", &component("hello"), "")
        + &component_toml("panic", &component("fixture-panic"), "")
        + &route_toml("/greet/...", "hello")
        + &route_toml("/boom", "panic");
    let host = Host::start(&manifest);
    for path in ["/greet/a", "/greet/b?x=1", "/greet"] {
        let response = client().get(host.url(path)).send().expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let (status, _) = get(&host, "/nowhere");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = client().get(host.url("/boom")).send().expect("GET /boom");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let route = |r: &'static str, class: &'static str| [("route", r), ("status_class", class)];
    let samples = wait_for_value(
        &host,
        "llmchat_http_requests_total",
        &route("/greet/...", "2xx"),
        3.0,
    );
    let count = |labels: &[(&str, &str)]| value(&samples, "llmchat_http_requests_total", labels);
    assert_eq!(
        count(&route("/greet/...", "5xx")),
        Some(0.0),
        "every class exists at 0"
    );
    assert_eq!(count(&route("unmatched", "4xx")), Some(1.0));
    assert_eq!(count(&route("/boom", "5xx")), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "llmchat_http_request_duration_seconds_count",
            &[("route", "/greet/...")]
        ),
        Some(3.0)
    );
    // The route's pattern is the label, never a request's path.
    assert!(
        samples
            .iter()
            .flat_map(|s| &s.labels)
            .all(|(_, v)| !v.starts_with("/greet/") || v == "/greet/..."),
        "a path became a label value"
    );
    // Off by default: no access log.
    let (_, log) = host.terminate_and_log();
    assert!(!log.contains("llmchat::access"), "{log}");
}
