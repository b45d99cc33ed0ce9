//! Start-up and shutdown: SIGTERM drains in-flight requests within a bounded grace and exits 0.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{Host, client, component, component_toml, poll_until, route_toml};

fn slow_host(grace: &str) -> Host {
    Host::start(&format!(
        "[http]\ninstance_wait = \"50ms\"\nshutdown_grace = \"{grace}\"\n{}{}",
        component_toml(
            "slow",
            &component("fixture-infinite-loop"),
            "max_instances = 1\ntimeout = \"120s\""
        ),
        route_toml("/slow", "slow"),
    ))
}

/// Starts `GET path` in a thread and returns once the host is running it (its only slot is taken).
fn start_in_flight(
    host: &Host,
    path: &str,
) -> std::thread::JoinHandle<reqwest::Result<StatusCode>> {
    let url = host.url(path);
    let request = std::thread::spawn(move || client().get(url).send().map(|r| r.status()));
    poll_until(
        Duration::from_secs(10),
        "the request to be in flight",
        || {
            let r = client().get(host.url("/slow?ms=1")).send().ok()?;
            (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    );
    request
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let host = slow_host("20s");
    let base = host.base.clone();
    let request = start_in_flight(&host, "/slow?ms=1500");
    let status = host.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        request
            .join()
            .unwrap()
            .expect("the in-flight request is answered"),
        StatusCode::OK
    );
    assert!(
        client().get(format!("{base}/slow?ms=1")).send().is_err(),
        "no longer accepting"
    );
}

#[test]
fn sigterm_cuts_requests_that_outlast_the_grace() {
    let host = slow_host("300ms");
    let request = start_in_flight(&host, "/slow?ms=60000");
    let started = Instant::now();
    let status = host.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exit is bounded by the grace"
    );
    assert!(
        request.join().unwrap().is_err(),
        "the request that outlived the grace was cut"
    );
}

#[test]
fn a_restart_maps_compiled_components_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let manifest = format!(
        "{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/hello", "hello")
    );

    let first = Host::start_with_env(&manifest, &[("LLMCHAT_CACHE_DIR", cache_dir)]);
    first.wait_for_log("component loaded component=hello", Duration::from_secs(5));
    assert!(first.log().contains("cached=false"), "{}", first.log());
    assert!(first.terminate().success());
    let artifacts = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(artifacts, 1, "one compiled artifact is stored");

    let second = Host::start_with_env(&manifest, &[("LLMCHAT_CACHE_DIR", cache_dir)]);
    assert!(second.log().contains("cached=true"), "{}", second.log());
    assert_eq!(
        client().get(second.url("/hello")).send().unwrap().status(),
        StatusCode::OK
    );
}
