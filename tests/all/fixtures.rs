//! Fixture components that misbehave on purpose: each must fail only its own request.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{Host, client, component, component_toml, error_of, poll_until, route_toml};

/// A host serving `fixture` at `/f` (with `extra` component settings) and `hello` at `/hello`.
fn host_with(fixture: &str, extra: &str, http: &str) -> Host {
    let manifest = format!(
        "[http]\n{http}\n{}{}{}{}",
        component_toml("fixture", &component(fixture), extra),
        component_toml("hello", &component("hello"), ""),
        route_toml("/f", "fixture"),
        route_toml("/hello", "hello"),
    );
    Host::start(&manifest)
}

fn hello_ok(host: &Host) {
    let response = client().get(host.url("/hello")).send().expect("GET /hello");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().unwrap(), "Hello, world!\n");
}

#[test]
fn plain_wasi_http_hello_runs_unchanged() {
    let host = host_with("hello", "", "");
    hello_ok(&host);
    let response = client()
        .post(host.url("/f"))
        .body("ignored")
        .send()
        .unwrap();
    assert_eq!(response.text().unwrap(), "Hello, world!\n");
}

#[test]
fn memory_bomb_fails_its_request_and_host_keeps_serving() {
    let host = host_with("fixture-memory-bomb", "memory_limit = \"16MiB\"", "");
    let within = client().get(host.url("/f?mib=4")).send().unwrap();
    assert_eq!(
        within.status(),
        StatusCode::OK,
        "allocations under the cap work"
    );
    hello_ok(&host);
    let baseline = host.rss();

    for _ in 0..10 {
        let response = client().get(host.url("/f")).send().unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let error = error_of(response);
        assert!(error.contains("memory limit exceeded"), "{error}");
        hello_ok(&host);
    }
    host.wait_for_log("memory limit exceeded", Duration::from_secs(5));
    let after = host.rss();
    assert!(
        after < baseline + (8 << 20),
        "RSS must return to its baseline after the bombs: {baseline} -> {after} bytes"
    );
}

#[test]
fn infinite_loop_is_stopped_at_its_timeout_without_starving_others() {
    let host = host_with("fixture-infinite-loop", "timeout = \"2s\"", "");
    // Two spinning guests, one per tokio worker on this 2-core machine.
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let url = host.url("/f");
            std::thread::spawn(move || client().get(url).send().map(|r| (r.status(), error_of(r))))
        })
        .collect();
    // Others are still served while both loop: epoch ticks make guests yield.
    for _ in 0..5 {
        hello_ok(&host);
    }
    assert!(
        loops.iter().any(|l| !l.is_finished()),
        "hello was served while the loops ran"
    );
    for l in loops {
        let (status, error) = l.join().unwrap().expect("loop request answered");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(error.contains("timed out after 2s"), "{error}");
    }
    let quick = client().get(host.url("/f?ms=5")).send().unwrap();
    assert_eq!(quick.status(), StatusCode::OK, "the component still serves");
}

#[test]
fn growing_static_sees_fresh_state_every_request() {
    let host = host_with("fixture-growing-static", "", "");
    for _ in 0..5 {
        let body = client().get(host.url("/f")).send().unwrap().text().unwrap();
        assert_eq!(body.trim(), "calls=1 static_bytes=1048576");
    }
}

#[test]
fn panic_fails_the_request_and_host_keeps_serving() {
    let host = host_with("fixture-panic", "", "");
    let response = client().get(host.url("/f")).send().unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error_of(response).contains("trapped"));
    host.wait_for_log("fixture panic: deliberate", Duration::from_secs(5));
    hello_ok(&host);
}

#[test]
fn a_busy_component_answers_503_with_retry_after() {
    let host = host_with(
        "fixture-infinite-loop",
        "max_instances = 1\ntimeout = \"30s\"",
        "instance_wait = \"100ms\"",
    );
    let url = host.url("/f?ms=3000");
    let slow = std::thread::spawn(move || client().get(url).send().map(|r| r.status()));
    let busy = poll_until(
        Duration::from_secs(10),
        "a 503 while the only instance is busy",
        || {
            let r = client().get(host.url("/f?ms=1")).send().ok()?;
            (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        },
    );
    assert_eq!(busy.headers()["retry-after"], "1");
    assert!(error_of(busy).contains("busy"));
    assert_eq!(slow.join().unwrap().unwrap(), StatusCode::OK);
    let after = client().get(host.url("/f?ms=1")).send().unwrap();
    assert_eq!(after.status(), StatusCode::OK, "the slot is free again");
}
