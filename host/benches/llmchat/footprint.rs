//! (m) Memory bounded by construction (issue 11): the host's resident memory as targets.
//!
//! - first start: the default manifest on an empty artifact cache (the components compile in
//!   child processes), RSS once idle;
//! - deploy: a 12–18 MB TypeScript component (`js-hello`) `PUT` into that running host,
//!   RSS once idle again;
//! - load: `wrk -t1 -c100` for [`LOAD_SECS`] s against each TypeScript and Python HTTP
//!   handler of the default app, on a fresh host each (artifacts cached): peak RSS during the
//!   load (sampled every [`SAMPLE_EVERY`]), and RSS [`SETTLE`] after it stopped, against the
//!   idle RSS before it. The default app has no Python HTTP handler (`usage` is a monitor), so
//!   the polyglot `py-hello` fixture stands in for it, added to the default manifest;
//! - attackers: [`ATTACKERS`] concurrent requests, and one alone, to the `fields-bomb` fixture
//!   (it makes the host hold 60 KiB header values in a loop), on a fresh `llmchat` each time,
//!   and on a fresh `wasmtime serve` 48.0.8 serving the same file with the same linear-memory
//!   cap and timeout as far as its flags can say them: peak RSS (VmHWM) of each, medians of
//!   [`ROUNDS`]. A peer above [`PEER_CAP`] is killed, and the row says so.
//!
//! "Idle" is after one request to each HTTP route and [`SETTLE`] without traffic, past a
//! minute boundary so that the app's schedules have run (see [`idle`]). RSS is
//! VmRSS; the breakdown (anonymous / file / shmem) is kept for the notes. All traffic is on
//! 127.0.0.1.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::blocking::Client;

use crate::load::{self, WrkRun};
use crate::process::{Llmchat, WasmtimeServe, expect_ok, get};
use crate::{Paths, median};

pub const LOAD_SECS: u64 = 60;
pub const SETTLE: Duration = Duration::from_secs(10);
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);
pub const ATTACKERS: usize = 32;
pub const ROUNDS: usize = 3;
/// A peer process above this RSS is killed: the run must not take the machine down.
pub const PEER_CAP: u64 = 8 << 30;
/// How long a `wasmtime serve` attack may run: its own timeout plus margin.
pub const PEER_WATCH: Duration = Duration::from_secs(5);

/// The Python stand-in's instances: one per core, as the default app's `prompts` has.
pub const PY_INSTANCES: u32 = 2;

const JS_HELLO: &str = "target/js/js-hello.wasm";
const PY_HELLO: &str = "target/python/py-hello.wasm";
const FIELDS_BOMB: &str = "fixture_fields_bomb.wasm";
/// `wasmtime serve`'s own caps, the bomb's `memory_limit` and `timeout`: linear memory and
/// time (it has no cap on what the host holds for the guest).
const SERVE_FLAGS: [&str; 4] = ["-W", "max-memory-size=33554432", "-W", "timeout=2s"];

/// RSS and its parts, bytes, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl Rss {
    pub fn read(pid: u32) -> Result<Self> {
        let file = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&file).with_context(|| format!("reading `{file}`"))?;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |v| v * 1024)
        };
        Ok(Self {
            total: kib("VmRSS:"),
            anon: kib("RssAnon:"),
            file: kib("RssFile:"),
            shmem: kib("RssShmem:"),
        })
    }

    /// VmHWM: the peak RSS since the process started.
    pub fn peak(pid: u32) -> Result<u64> {
        let file = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&file).with_context(|| format!("reading `{file}`"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|v| v * 1024)
            .with_context(|| format!("no VmHWM in `{file}`"))
    }

    /// `37.2 MB (anon 20.1, file 17.1, shmem 0.0)`.
    pub fn describe(&self) -> String {
        format!(
            "{:.1} MB (anon {:.1}, file {:.1}, shmem {:.1})",
            self.total as f64 / 1e6,
            self.anon as f64 / 1e6,
            self.file as f64 / 1e6,
            self.shmem as f64 / 1e6
        )
    }
}

/// Samples a process's RSS on a thread until stopped; kills it (SIGKILL) above `cap`.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Sampled>,
}

#[derive(Default)]
struct Sampled {
    /// The largest sample, with its parts.
    max: Rss,
    /// The cap was reached and the process killed.
    capped: bool,
}

impl Sampler {
    fn start(pid: u32, cap: Option<u64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sampled = Sampled::default();
            while !flag.load(Ordering::Relaxed) {
                let Ok(rss) = Rss::read(pid) else { break };
                if rss.total > sampled.max.total {
                    sampled.max = rss;
                }
                if cap.is_some_and(|cap| rss.total > cap) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    sampled.capped = true;
                    break;
                }
                std::thread::sleep(if cap.is_some() {
                    Duration::from_millis(5)
                } else {
                    SAMPLE_EVERY
                });
            }
            sampled
        });
        Self { stop, thread }
    }

    fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One handler under load.
pub struct Loaded {
    pub label: &'static str,
    pub idle: Rss,
    pub peak: Rss,
    pub after: Rss,
    pub run: WrkRun,
}

/// Peak RSS of one server over the attack rounds.
pub struct Attack {
    /// VmHWM per round (for a killed peer: the last sample before the kill).
    pub peaks: Vec<u64>,
    /// Rounds in which the peer reached [`PEER_CAP`] and was killed.
    pub capped: usize,
    /// llmchat: requests that did not answer 500 naming the memory limit; `wasmtime serve`:
    /// requests still unanswered when [`PEER_WATCH`] ended it (not counted when capped).
    pub unexpected: u64,
}

impl Attack {
    pub fn median(&self) -> u64 {
        median(self.peaks.iter().map(|&p| p as f64).collect()) as u64
    }
}

pub struct Results {
    /// After the first start, [`SETTLE`] without any request.
    pub first_start_unserved: Rss,
    pub first_start: Rss,
    pub js_size: u64,
    pub after_deploy: Rss,
    pub loads: Vec<Loaded>,
    pub swarm: Attack,
    pub single: Attack,
    /// `None` when `wasmtime` is not installed.
    pub serve_swarm: Option<Attack>,
    pub serve_single: Option<Attack>,
    /// The `wasmtime serve` flags used.
    pub serve_flags: String,
}

pub fn measure(paths: &Paths, default_manifest: &str) -> Result<Results> {
    let js_hello = crate::polyglot::built_component(paths, JS_HELLO)?;
    let py_hello = crate::polyglot::built_component(paths, PY_HELLO)?;
    let bomb = paths.wasm.join(FIELDS_BOMB);
    if !bomb.is_file() {
        bail!(
            "component `{}` is missing; run `just build` first",
            bomb.display()
        );
    }
    let work = tempfile::tempdir().context("creating a temp folder")?;
    let cache = work.path().join("artifact-cache");
    let state = work.path().join("state");

    eprintln!("  first start of the default manifest on an empty artifact cache");
    let (first_start_unserved, first_start, after_deploy, js_size) = {
        let host = Llmchat::start_with_env(
            &paths.llmchat,
            default_manifest,
            &cache,
            &[("LLMCHAT_STATE_DIR", OsStr::new(&state))],
            &["REDIS_URL"],
        )?;
        std::thread::sleep(SETTLE);
        let first_start_unserved = Rss::read(host.process.pid())?;
        eprintln!(
            "    nothing served yet: {}",
            first_start_unserved.describe()
        );
        let first_start = idle(&host, &["/api/agents", "/hello", "/api/prompts/"])?;
        eprintln!(
            "    idle after one request per route: {}",
            first_start.describe()
        );
        let bytes = std::fs::read(&js_hello)
            .with_context(|| format!("reading `{}`", js_hello.display()))?;
        let js_size = bytes.len() as u64;
        deploy(&host, "js-hello", "/js-hello", bytes)?;
        let after_deploy = idle(
            &host,
            &["/api/agents", "/hello", "/api/prompts/", "/js-hello"],
        )?;
        eprintln!(
            "    after deploying js-hello ({:.1} MB): {}",
            js_size as f64 / 1e6,
            after_deploy.describe()
        );
        (first_start_unserved, first_start, after_deploy, js_size)
    };

    let manifest = format!(
        "{default_manifest}\n[component.py-hello]\nsource = {:?}\nmemory_limit = \"32MiB\"\n\
         timeout = \"5s\"\nmax_instances = {PY_INSTANCES}\n\n[[trigger.http]]\nroute = \"/py-hello\"\n\
         component = \"py-hello\"\n",
        py_hello.display().to_string()
    );
    let routes = ["/api/agents", "/hello", "/api/prompts/", "/py-hello"];
    let mut loads = Vec::new();
    for (i, (label, path)) in [
        ("prompts (TypeScript) GET /api/prompts/", "/api/prompts/"),
        ("py-hello (Python fixture) GET /py-hello", "/py-hello"),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("  {label}: wrk -t1 -c100 -d{LOAD_SECS}s on a fresh host");
        // Its own state folder: the deploy above must not be restored here.
        let state = work.path().join(format!("state-load-{i}"));
        let host = Llmchat::start_with_env(
            &paths.llmchat,
            &manifest,
            &cache,
            &[("LLMCHAT_STATE_DIR", OsStr::new(&state))],
            &["REDIS_URL"],
        )?;
        let idle = idle(&host, &routes)?;
        let sampler = Sampler::start(host.process.pid(), None);
        let run = load::wrk(&host.url(path), Duration::from_secs(LOAD_SECS))?;
        let peak = sampler.finish().max;
        std::thread::sleep(SETTLE);
        let after = Rss::read(host.process.pid())?;
        eprintln!(
            "    {:.0} req/s, p99 {:.2} ms, errors {}; idle {}; peak {}; {}s after {}",
            run.req_per_sec,
            run.p99.as_secs_f64() * 1e3,
            run.non_2xx + run.socket_errors,
            idle.describe(),
            peak.describe(),
            SETTLE.as_secs(),
            after.describe()
        );
        loads.push(Loaded {
            label,
            idle,
            peak,
            after,
            run,
        });
    }

    let bomb_manifest = format!(
        "[component.bomb]\nsource = {:?}\nmemory_limit = \"32MiB\"\ntimeout = \"2s\"\n\
         max_instances = {ATTACKERS}\n\n[[trigger.http]]\nroute = \"/bomb\"\ncomponent = \"bomb\"\n",
        bomb.display().to_string()
    );
    // The first start only compiles the bomb into the cache.
    drop(Llmchat::start(&paths.llmchat, &bomb_manifest, &cache)?);
    let llmchat_attack = |n: usize| -> Result<Attack> {
        let mut attack = Attack {
            peaks: Vec::new(),
            capped: 0,
            unexpected: 0,
        };
        for _ in 0..ROUNDS {
            let host = Llmchat::start(&paths.llmchat, &bomb_manifest, &cache)?;
            let answers = fire(&host.url("/bomb"), n);
            attack.unexpected += answers
                .iter()
                .filter(|a| !matches!(a, Some((500, body)) if body.contains("memory limit")))
                .count() as u64;
            attack.peaks.push(Rss::peak(host.process.pid())?);
        }
        Ok(attack)
    };
    eprintln!("  fields-bomb: {ATTACKERS} concurrent requests, then one alone, {ROUNDS} rounds");
    let swarm = llmchat_attack(ATTACKERS)?;
    let single = llmchat_attack(1)?;
    eprintln!(
        "    llmchat peak: {ATTACKERS} attackers {:.1} MB, one {:.1} MB",
        swarm.median() as f64 / 1e6,
        single.median() as f64 / 1e6
    );

    let serve_flags = SERVE_FLAGS.join(" ");
    let (serve_swarm, serve_single) = match &paths.wasmtime {
        Some(w) => {
            let serve_attack = |n: usize| -> Result<Attack> {
                let mut attack = Attack {
                    peaks: Vec::new(),
                    capped: 0,
                    unexpected: 0,
                };
                for _ in 0..ROUNDS {
                    let (peak, capped, unexpected) = serve_round(&w.path, &bomb, n)?;
                    attack.peaks.push(peak);
                    attack.capped += usize::from(capped);
                    attack.unexpected += unexpected;
                }
                Ok(attack)
            };
            let swarm = serve_attack(ATTACKERS)?;
            let single = serve_attack(1)?;
            eprintln!(
                "    wasmtime serve peak: {ATTACKERS} attackers {:.1} MB (capped {}/{ROUNDS}), \
                 one {:.1} MB (capped {}/{ROUNDS})",
                swarm.median() as f64 / 1e6,
                swarm.capped,
                single.median() as f64 / 1e6,
                single.capped
            );
            (Some(swarm), Some(single))
        }
        None => (None, None),
    };

    Ok(Results {
        first_start_unserved,
        first_start,
        js_size,
        after_deploy,
        loads,
        swarm,
        single,
        serve_swarm,
        serve_single,
        serve_flags,
    })
}

/// RSS after one GET to each of `routes` (any status) and [`SETTLE`] without traffic, past a
/// minute boundary: the default app's schedules (`usage` every 60 s, `health` every 30 s, on
/// wall-clock multiples) have then run once, and they are part of an idle host.
fn idle(host: &Llmchat, routes: &[&str]) -> Result<Rss> {
    for route in routes {
        get(&host.url(route))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let to_tick = Duration::from_secs(60 - now.as_secs() % 60 + 3);
    std::thread::sleep(SETTLE.max(to_tick));
    Rss::read(host.process.pid())
}

/// `PUT /admin/components/{name}?route=ROUTE`, then one GET of the route that must answer 2xx.
fn deploy(host: &Llmchat, name: &str, route: &str, bytes: Vec<u8>) -> Result<()> {
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building an HTTP client")?;
    let url = host.url(&format!("/admin/components/{name}"));
    let mut request = client
        .put(&url)
        .query(&[("route", route)])
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes);
    if let Some(token) = std::env::var("LLMCHAT_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        request = request.bearer_auth(token);
    }
    let response = request.send().with_context(|| format!("PUT {url}"))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    if !status.is_success() {
        bail!("PUT {url} answered {status}: {text}");
    }
    expect_ok(&host.url(route))
}

/// `n` concurrent GETs of `url`, each on its own connection; (status, body) per request, or
/// `None` when it failed (connection reset, the server killed).
fn fire(url: &str, n: usize) -> Vec<Option<(u16, String)>> {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build();
    let Ok(client) = client else {
        return vec![None; n];
    };
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, barrier) = (client.clone(), url.to_string(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let response = client.get(&url).send().ok()?;
                let status = response.status().as_u16();
                Some((status, response.text().unwrap_or_default()))
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().ok().flatten())
        .collect()
}

/// One attack on a fresh `wasmtime serve`: (peak RSS, killed at the cap, requests that got
/// no answer although the server was not killed).
fn serve_round(wasmtime: &Path, bomb: &Path, n: usize) -> Result<(u64, bool, u64)> {
    let serve = WasmtimeServe::start_with(wasmtime, bomb, &SERVE_FLAGS, "/?count=1")?;
    let pid = serve.pid();
    let sampler = Sampler::start(pid, Some(PEER_CAP));
    let url = serve.url("/bomb");
    let started = Instant::now();
    let attackers = std::thread::spawn(move || fire(&url, n));
    // The requests end when the server traps them, or when the sampler kills it.
    while !attackers.is_finished() && started.elapsed() < PEER_WATCH {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sampled_peak = Rss::peak(pid).ok();
    let sampled = sampler.finish();
    drop(serve);
    let answers = attackers.join().unwrap_or_default();
    let unanswered = answers.iter().filter(|a| a.is_none()).count() as u64;
    let peak = sampled_peak.unwrap_or(0).max(sampled.max.total);
    Ok((
        peak,
        sampled.capped,
        if sampled.capped { 0 } else { unanswered },
    ))
}
