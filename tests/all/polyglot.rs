//! Components in JavaScript (jco/StarlingMonkey) and Python (componentize-py) get the same
//! guarantees as Rust ones, on the real binary: a fresh instance per invocation, the memory
//! cap, the time cap, and thrown errors turned into the WIT job error, retried or
//! dead-lettered like a Rust job's.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Host, client, component, component_toml, error_of, get_json, poll_until, repo_root, route_toml,
};

const WAIT: Duration = Duration::from_secs(60);

/// A JS or Python component built by `just build-components` (`components/js/build.sh`,
/// `components/python/build.sh`).
fn built(lang: &str, name: &str) -> PathBuf {
    let path = repo_root()
        .join("components/target")
        .join(lang)
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "`{}` is missing; build it with `just build-components` (needs Node.js and Python)",
        path.display()
    );
    path
}

/// Every fixture of both languages on its own route, `/{lang}/{kind}`, plus Rust's hello.
fn polyglot_host(extra: &str) -> Host {
    let mut manifest =
        component_toml("hello", &component("hello"), "") + &route_toml("/hello", "hello");
    // The names in full, so that the components guard sees each fixture run.
    for (lang, names) in [
        ("js", ["js-counter", "js-memory-bomb", "js-loop"]),
        ("python", ["py-counter", "py-memory-bomb", "py-loop"]),
    ] {
        for name in names {
            let (prefix, kind) = name
                .split_once('-')
                .expect("a fixture is named `LANG-KIND`");
            let limits = match kind {
                "loop" => "memory_limit = \"64MiB\"\ntimeout = \"2s\"",
                _ => "memory_limit = \"64MiB\"",
            };
            manifest += &component_toml(name, &built(lang, name), limits);
            manifest += &route_toml(&format!("/{prefix}/{kind}"), name);
        }
    }
    Host::start(&(manifest + extra))
}

#[test]
fn js_and_python_get_a_fresh_instance_per_request_and_hit_their_caps() {
    let host = polyglot_host("");
    for lang in ["js", "py"] {
        // A module-level counter / a Python global: 1 on every request.
        for _ in 0..5 {
            let body = client()
                .get(host.url(&format!("/{lang}/counter")))
                .send()
                .unwrap()
                .text()
                .unwrap();
            assert_eq!(body.trim(), "count=1", "{lang}");
        }
        // A small allocation fits; allocating without end is stopped by the cap.
        let small = client()
            .get(host.url(&format!("/{lang}/memory-bomb?mib=4")))
            .send()
            .unwrap();
        assert_eq!(small.status(), StatusCode::OK, "{lang}");
        let bomb = client()
            .get(host.url(&format!("/{lang}/memory-bomb")))
            .send()
            .unwrap();
        assert_eq!(bomb.status(), StatusCode::INTERNAL_SERVER_ERROR, "{lang}");
        let error = error_of(bomb);
        assert!(error.contains("memory limit exceeded"), "{lang}: {error}");
        // An endless loop is stopped by the time cap.
        let spin = client()
            .get(host.url(&format!("/{lang}/loop")))
            .send()
            .unwrap();
        assert_eq!(spin.status(), StatusCode::GATEWAY_TIMEOUT, "{lang}");
        assert!(error_of(spin).contains("timed out after 2s"), "{lang}");
        // And the host and the component go on serving.
        let quick = client()
            .get(host.url(&format!("/{lang}/loop?ms=5")))
            .send()
            .unwrap();
        assert_eq!(quick.status(), StatusCode::OK, "{lang}");
        assert!(
            client()
                .get(host.url("/hello"))
                .send()
                .unwrap()
                .status()
                .is_success()
        );
    }
}

/// `py-hello`, the Python benchmarks' baseline, answers what they measure.
#[test]
fn python_hello_answers_hello_world() {
    let manifest = component_toml(
        "py-hello",
        &built("python", "py-hello"),
        "memory_limit = \"64MiB\"",
    ) + &route_toml("/py/hello", "py-hello");
    let host = Host::start(&manifest);
    let response = client().get(host.url("/py/hello")).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().unwrap(), "Hello, world!");
}

fn enqueue(host: &Host, queue: &str, payload: Value) -> String {
    let response = client()
        .post(host.url(&format!("/admin/queues/{queue}/jobs")))
        .json(&json!({ "payload": payload }))
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    response.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn dead(host: &Host, queue: &str) -> Vec<Value> {
    get_json(&host.url(&format!("/admin/queues/{queue}/dead")))["jobs"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn js_throws_and_python_raises_become_job_errors_retried_then_dead_lettered() {
    let queue = |q: &str, c: &str| {
        format!(
            "[[trigger.queue]]\nqueue = \"{q}\"\ncomponent = \"{c}\"\nmax_attempts = 2\nbackoff = \"fixed:10ms\"\n"
        )
    };
    let manifest = format!(
        "{}{}{}{}",
        component_toml(
            "js-fail",
            &built("js", "js-fail"),
            "memory_limit = \"64MiB\""
        ),
        queue("js", "js-fail"),
        component_toml(
            "py-fail",
            &built("python", "py-fail"),
            "memory_limit = \"64MiB\""
        ),
        queue("py", "py-fail"),
    );
    let host = Host::start(&manifest);
    let js_thrown = enqueue(&host, "js", json!({"action": "throw"}));
    let js_ok = enqueue(&host, "js", json!({"action": "ok"}));
    let py_raised = enqueue(&host, "py", json!({"action": "raise"}));
    let py_failed = enqueue(&host, "py", json!({"action": "fail"}));
    let py_ok = enqueue(&host, "py", json!({"action": "ok"}));
    let (js_dead, py_dead) = poll_until(WAIT, "the failing jobs to be dead-lettered", || {
        let (js, py) = (dead(&host, "js"), dead(&host, "py"));
        (js.len() == 1 && py.len() == 2).then_some((js, py))
    });
    // Thrown / raised: a `retry` job error, so tried max_attempts times, then dead.
    assert_eq!(js_dead[0]["id"], js_thrown.as_str());
    assert_eq!(js_dead[0]["attempt"], 2, "{js_dead:?}");
    assert!(
        js_dead[0]["error"].as_str().unwrap().contains("deliberate"),
        "{js_dead:?}"
    );
    let py_raised_row = py_dead
        .iter()
        .find(|j| j["id"] == py_raised.as_str())
        .expect("raised job dead");
    assert_eq!(py_raised_row["attempt"], 2, "{py_dead:?}");
    // `fail`: dead at once, on its first attempt.
    let py_failed_row = py_dead
        .iter()
        .find(|j| j["id"] == py_failed.as_str())
        .expect("failed job dead");
    assert_eq!(py_failed_row["attempt"], 1, "{py_dead:?}");
    // The good jobs were processed.
    let queues: Value = get_json(&host.url("/admin/queues"));
    for q in queues["queues"].as_array().unwrap() {
        assert_eq!(q["processed"], 1, "{q}");
    }
    let _ = (js_ok, py_ok);
}

#[test]
fn the_default_apps_typescript_and_python_components_work() {
    let manifest = crate::support::default_manifest();
    let every_minute = "component = \"usage\"\nevery = \"60s\"";
    assert!(
        manifest.contains(every_minute),
        "the default manifest schedules `usage`"
    );
    let host =
        Host::start(&manifest.replace(every_minute, "component = \"usage\"\nevery = \"100ms\""));
    // TypeScript HTTP handler: prompt templates from its config, run with SSE streaming.
    let prompts: Value = get_json(&host.url("/api/prompts"));
    let names: Vec<&str> = prompts["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"summary"), "{prompts}");
    let run = client()
        .post(host.url("/api/prompts/summary/run"))
        .json(&json!({"vars": {"text": "one two"}}))
        .send()
        .unwrap();
    assert_eq!(run.headers()["content-type"], "text/event-stream");
    let events = run.text().unwrap();
    assert!(
        events.contains("data: {\"delta\"") && events.contains("event: done"),
        "{events}"
    );
    // Rust chat counts token usage; the Python monitor reports it.
    for _ in 0..3 {
        let chat = client()
            .post(host.url("/api/chat"))
            .json(&json!({"agent": "general", "message": "count my tokens"}))
            .send()
            .unwrap();
        assert_eq!(chat.status(), StatusCode::OK);
    }
    poll_until(WAIT, "the usage monitor to report 3 requests", || {
        let samples = crate::support::prometheus::scrape(&host);
        let requests = crate::support::prometheus::value(
            &samples,
            "llmchat_monitor_sample",
            &[("monitor", "usage"), ("sample", "requests_total")],
        );
        (requests == Some(3.0)).then_some(())
    });
    // TypeScript queue processor: a moderation job is processed.
    enqueue(
        &host,
        "moderation",
        json!({"conversation_id": "c1", "text": "buy spam now"}),
    );
    poll_until(WAIT, "the moderation job to be processed", || {
        let queues: Value = get_json(&host.url("/admin/queues"));
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["queue"] == "moderation" && q["processed"] == 1)
            .then_some(())
    });
}
