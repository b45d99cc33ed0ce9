//! (v) Deploy to serving (issue 5): how long after a `PUT /admin/components/{name}` the new
//! version answers, on the host that got the PUT and on another host of the same cluster.
//!
//! One component, `v`, on the route `/v`, redeployed alternately as two versions that answer
//! differently: `hello.wasm` ("Hello, world!") and `fixture_growing_static.wasm` ("calls=…").
//! Each redeploy is timed from just before the PUT is sent until a `GET /v` answers the new
//! version's body; the GETs are polled back to back, each a fresh request on a keep-alive
//! client (so a poll costs one loopback round trip, not a connection set-up).
//!
//! - local: one `llmchat up` without Redis, [`LOCAL_REDEPLOYS`] redeploys;
//! - cluster: two hosts on one private `redis-server`, each with its own state folder and
//!   artifact cache and the same `[redis] url`; [`CLUSTER_REDEPLOYS`] redeploys sent to host
//!   A, timed until host B serves the new body (B hears of the deploy through Redis pub/sub
//!   and fetches the bytes by content hash).
//!
//! Every host starts with an empty artifact cache: the first deploy of each version (timed
//! separately, as the uncached figure) compiles it; the measured redeploys then find both
//! versions compiled (cached compiles). All traffic is on 127.0.0.1.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::blocking::Client;

use crate::Paths;
use crate::process::{Llmchat, RedisServer};

pub const LOCAL_REDEPLOYS: usize = 100;
pub const CLUSTER_REDEPLOYS: usize = 50;
const ROUTE: &str = "/v";
const NAME: &str = "v";
/// How long a version may take to be served before the run fails.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// One of the two versions: its bytes and how to recognise its answer.
struct Version {
    label: &'static str,
    bytes: Vec<u8>,
    answers: fn(&str) -> bool,
}

/// Deploy-to-serving times of one setting, milliseconds.
pub struct Series {
    /// The measured redeploys (both versions already compiled).
    pub samples_ms: Vec<f64>,
    /// The first, uncached deploy of each version: (label, ms).
    pub first_ms: Vec<(&'static str, f64)>,
    /// The PUT's own round trip over the measured redeploys (until its answer).
    pub put_ms: Vec<f64>,
    /// GETs polled per measured redeploy, in all.
    pub polls: u64,
}

pub struct Results {
    pub local: Series,
    pub cluster: Series,
    /// The 1-minute load average before and after the runs (other processes show here).
    pub loadavg: (f64, f64),
    pub cores: usize,
}

pub fn measure(paths: &Paths) -> Result<Results> {
    let read = |name: &str| {
        let file = paths.wasm.join(name);
        std::fs::read(&file)
            .with_context(|| format!("reading `{}` (run `just build` first)", file.display()))
    };
    let versions = [
        Version {
            label: "hello",
            bytes: read("hello.wasm")?,
            answers: |body| body.contains("Hello, world!"),
        },
        Version {
            label: "growing_static",
            bytes: read("fixture_growing_static.wasm")?,
            answers: |body| body.starts_with("calls="),
        },
    ];
    let loadavg_before = loadavg();
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")?;

    eprintln!("  local: {LOCAL_REDEPLOYS} redeploys on one host");
    let local = {
        let work = tempfile::tempdir().context("creating a temp folder")?;
        let host = start_host(paths, work.path(), None)?;
        run_series(&client, &host, &host, &versions, LOCAL_REDEPLOYS)?
    };
    summary("local", &local);

    eprintln!("  cluster: {CLUSTER_REDEPLOYS} redeploys to host A, served by host B");
    let cluster = {
        let redis = RedisServer::start()?;
        let url = redis.unix_url();
        let (work_a, work_b) = (
            tempfile::tempdir().context("creating a temp folder")?,
            tempfile::tempdir().context("creating a temp folder")?,
        );
        let a = start_host(paths, work_a.path(), Some(&url))?;
        let b = start_host(paths, work_b.path(), Some(&url))?;
        run_series(&client, &a, &b, &versions, CLUSTER_REDEPLOYS)?
    };
    summary("cluster", &cluster);

    Ok(Results {
        local,
        cluster,
        loadavg: (loadavg_before, loadavg()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// `llmchat up` with an empty manifest (plus `[redis] url` when given), its own state folder
/// and artifact cache under `work`, and no inherited `REDIS_URL`.
fn start_host(paths: &Paths, work: &std::path::Path, redis: Option<&str>) -> Result<Llmchat> {
    let manifest = redis.map_or(String::new(), |url| format!("[redis]\nurl = {url:?}\n"));
    let state = work.join("state");
    Llmchat::start_with_env(
        &paths.llmchat,
        &manifest,
        &work.join("artifact-cache"),
        &[("LLMCHAT_STATE_DIR", OsStr::new(&state))],
        &["REDIS_URL"],
    )
}

/// The first deploy of each version to `to` (uncached), then `count` redeploys alternating
/// the two, each timed until `serving` answers the new version on [`ROUTE`].
fn run_series(
    client: &Client,
    to: &Llmchat,
    serving: &Llmchat,
    versions: &[Version; 2],
    count: usize,
) -> Result<Series> {
    let mut series = Series {
        samples_ms: Vec::with_capacity(count),
        first_ms: Vec::new(),
        put_ms: Vec::with_capacity(count),
        polls: 0,
    };
    for version in versions {
        let timing = deploy_and_wait(client, to, serving, version)?;
        series.first_ms.push((version.label, timing.total_ms));
    }
    for i in 0..count {
        let timing = deploy_and_wait(client, to, serving, &versions[i % 2])?;
        series.samples_ms.push(timing.total_ms);
        series.put_ms.push(timing.put_ms);
        series.polls += timing.polls;
    }
    Ok(series)
}

struct Timing {
    total_ms: f64,
    put_ms: f64,
    polls: u64,
}

/// PUTs `version` to `to`, then polls `GET /v` on `serving` until it answers that version.
fn deploy_and_wait(
    client: &Client,
    to: &Llmchat,
    serving: &Llmchat,
    version: &Version,
) -> Result<Timing> {
    let put_url = to.url(&format!("/admin/components/{NAME}"));
    let get_url = serving.url(ROUTE);
    let token = std::env::var("LLMCHAT_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let mut request = client
        .put(&put_url)
        .query(&[("route", ROUTE)])
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(version.bytes.clone());
    if let Some(token) = &token {
        request = request.bearer_auth(token);
    }
    let started = Instant::now();
    let response = request.send().with_context(|| format!("PUT {put_url}"))?;
    let status = response.status();
    let text = response
        .text()
        .with_context(|| format!("reading PUT {put_url}"))?;
    let put_ms = started.elapsed().as_secs_f64() * 1e3;
    if !(status == reqwest::StatusCode::OK || status == reqwest::StatusCode::CREATED) {
        bail!(
            "PUT {put_url} ({}) answered {status}: {text}",
            version.label
        );
    }
    if !text.contains("\"version\"") {
        bail!("PUT {put_url} answered {status} without a version: {text}");
    }
    let mut polls = 0;
    loop {
        polls += 1;
        let response = client
            .get(&get_url)
            .send()
            .with_context(|| format!("GET {get_url}"))?;
        let ok = response.status().is_success();
        let body = response
            .text()
            .with_context(|| format!("reading GET {get_url}"))?;
        if ok && (version.answers)(&body) {
            break;
        }
        if started.elapsed() > SERVE_TIMEOUT {
            bail!(
                "{} was not served on {get_url} within {SERVE_TIMEOUT:?} of its PUT (last \
                 answer: {body:?}):\nhost that got the PUT:\n{}\nserving host:\n{}",
                version.label,
                to.process.log(),
                serving.process.log()
            );
        }
    }
    Ok(Timing {
        total_ms: started.elapsed().as_secs_f64() * 1e3,
        put_ms,
        polls,
    })
}

fn summary(what: &str, s: &Series) {
    let p = |pct| crate::percentile(&s.samples_ms, pct);
    let first: Vec<String> = s
        .first_ms
        .iter()
        .map(|(label, ms)| format!("{label} {ms:.1} ms"))
        .collect();
    eprintln!(
        "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} redeploys; first \
         (uncached) deploys: {}",
        p(50.0),
        p(99.0),
        p(100.0),
        s.samples_ms.len(),
        first.join(", ")
    );
}

/// The 1-minute load average (0 when unreadable).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
