//! The `/dashboard` page: served as one self-contained HTML file, and drawn by a real headless
//! Chromium from the host's own `/dashboard/history` without a single console error.
//!
//! The page reports what it did as `data-*` attributes (status, sample count, points per
//! chart, console errors it caught), which `support::chromium` reads from the dumped DOM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::chromium::{self, Page};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, poll_until, repo_root, route_toml};

/// The charts every host has data for; `redis` is checked apart, as it depends on Redis.
const CHARTS: [&str; 4] = ["queues", "throughput", "latency", "memory"];

/// `hello` at `/hello`, a queue `jobs`, and a history sampled every 100 ms so it fills fast.
fn manifest(redis_url: Option<&str>) -> String {
    let redis = redis_url.map_or(String::new(), |url| format!("[redis]\nurl = {url:?}\n"));
    format!(
        "{redis}[dashboard]\nsample_every = \"100ms\"\nsamples = 50\n{}{}{}\
         [[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n",
        component_toml("hello", &component("hello"), ""),
        component_toml("p", &component("fixture-noop-processor"), ""),
        route_toml("/hello", "hello"),
    )
}

/// Requests `/hello` every 20 ms until dropped, so every sample has throughput and latency
/// (the history holds only 5 s, less than a Chromium run may take end to end).
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(host: &Host) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url) = (stop.clone(), host.url("/hello"));
        let thread = std::thread::spawn(move || {
            let client = client();
            while !flag.load(Ordering::Relaxed) {
                let status = client.get(&url).send().map(|r| r.status());
                assert!(
                    matches!(status, Ok(StatusCode::OK)),
                    "GET /hello: {status:?}"
                );
                // Pacing, not synchronisation: leave the CPU to the host and the browser.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the /hello traffic thread failed");
        }
    }
}

/// Waits until `/dashboard/history` holds at least 5 samples, one of them with HTTP traffic.
fn wait_for_history(host: &Host) -> serde_json::Value {
    poll_until(
        Duration::from_secs(30),
        "5 dashboard samples, one with HTTP throughput",
        || {
            let response = client().get(host.url("/dashboard/history")).send().ok()?;
            let json = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
            let history: serde_json::Value = response.json().ok().filter(|_| json)?;
            let samples = history["samples"].as_array()?;
            let busy = samples
                .iter()
                .any(|s| s["throughput"]["http"].as_f64() > Some(0.0));
            (samples.len() >= 5 && busy).then_some(history)
        },
    )
}

/// A `data-*` attribute of an element of the page's DOM.
fn attr(page: &Page, tag: &str, id: Option<&str>, name: &str) -> Option<String> {
    page.element(tag, id)?.get(name).cloned()
}

/// What went wrong, with all the page said about itself and Chromium's log.
fn report(page: &Page, what: &str) -> String {
    let body = page.element("body", None).unwrap_or_default();
    format!(
        "{what}\n<body> attributes: {body:#?}\nChromium's log:\n{}",
        page.stderr
    )
}

/// Loads the dashboard in Chromium once the history has data, and checks it drew.
fn load_dashboard(host: &Host) -> Page {
    wait_for_history(host);
    // 5 s of virtual time: the page's first draw and a few refreshes (every 1 s here).
    let page = chromium::load(&host.url("/dashboard"), Duration::from_secs(5));
    assert_drew(&page);
    page
}

/// The page drew from at least 5 samples and caught no error, and Chromium logged no console
/// message (the page writes none when all is well).
fn assert_drew(page: &Page) {
    let body = |name| attr(page, "body", None, name);
    assert_eq!(
        body("data-status").as_deref(),
        Some("ok"),
        "{}",
        report(page, "the page did not draw")
    );
    let samples: usize = body("data-samples")
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(
        samples >= 5,
        "{}",
        report(page, "fewer than 5 samples drawn")
    );
    assert_eq!(
        body("data-console-errors").as_deref(),
        Some("0"),
        "{}",
        report(page, "the page caught errors")
    );
    let console = page.console_lines();
    assert!(
        console.is_empty(),
        "{}",
        report(
            page,
            &format!("the page wrote to the console: {console:#?}")
        )
    );
}

fn points(page: &Page, chart: &str) -> usize {
    attr(
        page,
        "canvas",
        Some(&format!("chart-{chart}")),
        "data-points",
    )
    .and_then(|n| n.parse().ok())
    .unwrap_or_else(|| {
        panic!(
            "{}",
            report(page, &format!("no data-points on chart-{chart}"))
        )
    })
}

#[test]
fn dashboard_is_one_html_page_that_loads_nothing_from_elsewhere() {
    let host = Host::start(&manifest(None));
    let response = client().get(host.url("/dashboard")).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .cloned();
    assert_eq!(
        content_type.as_ref().and_then(|t| t.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let page = response.text().unwrap();
    let source =
        std::fs::read_to_string(repo_root().join("host/src/dashboard/index.html")).unwrap();
    assert!(
        page == source,
        "/dashboard must serve host/src/dashboard/index.html as it is"
    );
    assert_self_contained(&page);
}

/// `page` loads nothing from another origin: no absolute or protocol-relative URL anywhere,
/// every URL attribute a `data:` URI or a local path, an inline favicon (else the browser
/// asks for `/favicon.ico`), and the CSP that makes the browser refuse the rest.
fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for scheme in ["http://", "https://", "@import"] {
        assert!(!lower.contains(scheme), "the page mentions {scheme:?}");
    }
    for quoted in ["\"//", "'//", "`//", "url(//", "url(\"//", "url('//"] {
        assert!(!lower.contains(quoted), "protocol-relative URL {quoted:?}");
    }
    chromium::assert_local_url_attributes(page);
    for (i, _) in lower.match_indices("url(") {
        let target = lower[i + 4..].trim_start_matches(['"', '\'']);
        assert!(
            target.starts_with("data:"),
            "CSS url() outside data: at byte {i}"
        );
    }
    assert!(
        page.contains("<link rel=\"icon\" href=\"data:,\">"),
        "an inline favicon, or the browser asks for /favicon.ico"
    );
    assert!(
        page.contains("default-src 'none'"),
        "the CSP that makes the browser refuse anything external"
    );
}

#[test]
fn headless_chromium_draws_every_chart_from_the_hosts_history() {
    let redis = RedisServer::start();
    let host = Host::start(&manifest(Some(&redis.url())));
    let _traffic = Traffic::start(&host);
    let page = load_dashboard(&host);
    for chart in CHARTS.into_iter().chain(["redis"]) {
        assert!(
            points(&page, chart) > 0,
            "{}",
            report(&page, &format!("chart-{chart} drew no point"))
        );
    }
    assert_eq!(
        attr(&page, "canvas", Some("chart-redis"), "data-no-redis").as_deref(),
        Some("false")
    );
}

#[test]
fn without_redis_the_redis_chart_says_so_and_the_others_still_draw() {
    let host = Host::start(&manifest(None));
    let _traffic = Traffic::start(&host);
    let page = load_dashboard(&host);
    for chart in CHARTS {
        assert!(
            points(&page, chart) > 0,
            "{}",
            report(&page, &format!("chart-{chart} drew no point"))
        );
    }
    assert_eq!(points(&page, "redis"), 0);
    assert_eq!(
        attr(&page, "canvas", Some("chart-redis"), "data-no-redis").as_deref(),
        Some("true"),
        "{}",
        report(&page, "the redis chart does not know there is no Redis")
    );
    assert!(
        page.dom.contains("no Redis: "),
        "{}",
        report(&page, "the page does not say there is no Redis")
    );
}
