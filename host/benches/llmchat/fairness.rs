//! (f) Fairness beside floods (issue 11): how long `hello` takes while 32 attackers keep the
//! host busy.
//!
//! A fresh `llmchat` serves `hello` on `/hello` and one attack fixture on `/attack` (the e2e
//! test's limits: `memory_limit = "32MiB"`, `timeout = "2s"`, `max_instances = 32`; kv on
//! the embedded memory store, as in `tests/all/host_memory.rs`). [`ATTACKERS`] clients keep
//! one `/attack` request each in flight for [`ATTACK_FOR`]: every one runs into its 2 s
//! timeout (504) and is sent again at once. Meanwhile ONE client asks `GET /hello` one
//! request after another, each on a new connection, with a 5 ms pause (the test's
//! `HelloClient`). The same client alone, for [`ALONE_FOR`] on a host with the attack
//! component idle, is the baseline. The cases run interleaved, [`ROUNDS`] rounds, each on a
//! fresh host; the row's p99 is the median of the rounds' p99s. A `hello` that does not
//! answer `200 Hello, world!` is an error. All traffic is on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::blocking::Client;

use crate::process::{Llmchat, expect_ok};
use crate::{Paths, median};

pub const ATTACKERS: usize = 32;
pub const ROUNDS: usize = 3;
pub const ATTACK_FOR: Duration = Duration::from_secs(8);
pub const ALONE_FOR: Duration = Duration::from_secs(4);
/// The hello client's pause between two requests.
pub const PAUSE: Duration = Duration::from_millis(5);

/// Hellos sent before this met only the first 32 attack requests (the e2e test's window,
/// nearly): the first ones end at 2 s.
const FIRST_WAVE: Duration = Duration::from_millis(1900);

/// The attack fixtures: file, the request that warms it (must answer 200), a label.
const FLOODS: [(&str, &str, &str); 2] = [
    ("fixture_log_flood.wasm", "/attack?lines=10", "log floods"),
    ("fixture_kv_flood.wasm", "/attack?reads=5", "kv floods"),
];

/// One round of one case.
pub struct Round {
    /// Latency of every `hello` that answered as it should.
    pub latencies: Vec<Duration>,
    /// When each of them was sent, from the start of the window.
    pub sent_at: Vec<Duration>,
    pub errors: u64,
    /// Attack requests answered, and how many of them not with 504.
    pub attacks: u64,
    pub attacks_not_504: u64,
}

impl Round {
    fn percentile(&self, p: f64) -> Duration {
        let secs: Vec<f64> = self.latencies.iter().map(Duration::as_secs_f64).collect();
        Duration::from_secs_f64(crate::percentile(&secs, p))
    }

    /// The p99 of the hellos sent before `until` (e.g. the first attack wave's timeout).
    fn p99_before(&self, until: Duration) -> Duration {
        let secs: Vec<f64> = (self.latencies.iter().zip(&self.sent_at))
            .filter(|(_, sent)| **sent < until)
            .map(|(l, _)| l.as_secs_f64())
            .collect();
        Duration::from_secs_f64(crate::percentile(&secs, 99.0))
    }

    /// The `n` slowest hellos: (sent at, latency), slowest first.
    fn slowest(&self, n: usize) -> Vec<(Duration, Duration)> {
        let mut all: Vec<_> = self
            .sent_at
            .iter()
            .copied()
            .zip(self.latencies.iter().copied())
            .collect();
        all.sort_by_key(|(_, latency)| std::cmp::Reverse(*latency));
        all.truncate(n);
        all
    }
}

/// `hello` alone, or beside one kind of flood, over the rounds.
pub struct Case {
    /// `None` for the baseline.
    pub flood: Option<&'static str>,
    pub rounds: Vec<Round>,
}

impl Case {
    pub fn n(&self) -> usize {
        self.rounds.iter().map(|r| r.latencies.len()).sum()
    }

    fn median_of(&self, p: f64) -> Duration {
        Duration::from_secs_f64(median(
            self.rounds
                .iter()
                .map(|r| r.percentile(p).as_secs_f64())
                .collect(),
        ))
    }

    pub fn p50(&self) -> Duration {
        self.median_of(50.0)
    }

    /// The median of the rounds' p99s.
    pub fn p99(&self) -> Duration {
        self.median_of(99.0)
    }

    pub fn round_p99s(&self) -> Vec<Duration> {
        self.rounds.iter().map(|r| r.percentile(99.0)).collect()
    }

    pub fn max(&self) -> Duration {
        self.rounds
            .iter()
            .flat_map(|r| r.latencies.iter().copied())
            .max()
            .unwrap_or_default()
    }

    pub fn errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.errors).sum()
    }

    pub fn attacks(&self) -> u64 {
        self.rounds.iter().map(|r| r.attacks).sum()
    }

    pub fn attacks_not_504(&self) -> u64 {
        self.rounds.iter().map(|r| r.attacks_not_504).sum()
    }
}

pub struct Results {
    /// The baseline first, then one case per flood.
    pub cases: Vec<Case>,
}

pub fn measure(paths: &Paths) -> Result<Results> {
    let hello = paths.wasm.join("hello.wasm");
    let manifests = FLOODS
        .iter()
        .map(|(file, _, _)| {
            let wasm = paths.wasm.join(file);
            if !wasm.is_file() {
                bail!(
                    "component `{}` is missing; run `just build` first",
                    wasm.display()
                );
            }
            Ok(manifest(&hello, &wasm))
        })
        .collect::<Result<Vec<_>>>()?;
    let work = tempfile::tempdir().context("creating a temp folder")?;
    let cache = work.path().join("artifact-cache");
    let start = |manifest: &str, warm: &str| -> Result<Llmchat> {
        // Kv on the embedded store, as in the e2e test: no inherited Redis, no state.
        let host = Llmchat::start_with_env(
            &paths.llmchat,
            manifest,
            &cache,
            &[],
            &["REDIS_URL", "LLMCHAT_STATE_DIR"],
        )?;
        expect_ok(&host.url(warm))?;
        for _ in 0..20 {
            expect_ok(&host.url("/hello"))?;
        }
        Ok(host)
    };
    // The first start of each manifest only compiles its components into the cache.
    for (manifest, (_, warm, _)) in manifests.iter().zip(FLOODS) {
        drop(start(manifest, warm)?);
    }

    let mut cases = vec![Case {
        flood: None,
        rounds: Vec::new(),
    }];
    cases.extend(FLOODS.iter().map(|(_, _, label)| Case {
        flood: Some(label),
        rounds: Vec::new(),
    }));
    // The baseline runs on the log-flood host, its attack component idle.
    let hosts: Vec<(&String, &str)> = std::iter::once((&manifests[0], FLOODS[0].1))
        .chain(manifests.iter().zip(FLOODS.iter().map(|f| f.1)))
        .collect();
    for round in 1..=ROUNDS {
        for (case, (manifest, warm)) in cases.iter_mut().zip(&hosts) {
            let host = start(manifest, warm)?;
            let r = match case.flood {
                None => run(&host, 0, ALONE_FOR)?,
                Some(_) => run(&host, ATTACKERS, ATTACK_FOR)?,
            };
            eprintln!(
                "  round {round}/{ROUNDS} hello {:<28} n {:>5}  p50 {:>6.2} ms  p99 {:>6.2} ms  \
                 max {:>7.2} ms  errors {}  attacks {} (not 504: {})",
                case.flood
                    .map_or("alone".to_string(), |f| format!("beside {ATTACKERS} {f}")),
                r.latencies.len(),
                r.percentile(50.0).as_secs_f64() * 1e3,
                r.percentile(99.0).as_secs_f64() * 1e3,
                r.latencies
                    .iter()
                    .max()
                    .copied()
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3,
                r.errors,
                r.attacks,
                r.attacks_not_504
            );
            if case.flood.is_some() {
                let slowest: Vec<String> = r
                    .slowest(5)
                    .iter()
                    .map(|(at, l)| {
                        format!(
                            "{:.0} ms at {:.2} s",
                            l.as_secs_f64() * 1e3,
                            at.as_secs_f64()
                        )
                    })
                    .collect();
                eprintln!(
                    "    p99 before the first timeouts (sent < {FIRST_WAVE:?}): {:.2} ms; slowest: {}",
                    r.p99_before(FIRST_WAVE).as_secs_f64() * 1e3,
                    slowest.join(", ")
                );
            }
            case.rounds.push(r);
        }
    }
    Ok(Results { cases })
}

/// `hello` on `/hello`, the attack fixture on `/attack` with the e2e test's limits.
fn manifest(hello: &std::path::Path, attack: &std::path::Path) -> String {
    format!(
        "[component.attack]\nsource = {:?}\nmemory_limit = \"32MiB\"\ntimeout = \"2s\"\n\
         max_instances = {ATTACKERS}\n\n[component.hello]\nsource = {:?}\n\n\
         [[trigger.http]]\nroute = \"/attack\"\ncomponent = \"attack\"\n\n\
         [[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\n",
        attack.display().to_string(),
        hello.display().to_string()
    )
}

/// The hello client for `window`, beside `attackers` clients that keep one `/attack` request
/// each in flight until then (the last ones end at their timeout, after the window).
fn run(host: &Llmchat, attackers: usize, window: Duration) -> Result<Round> {
    // No keep-alive: each request on a new connection, as in the e2e test.
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .context("building an HTTP client")?;
    let stop = Arc::new(AtomicBool::new(false));
    let attacks = Arc::new(AtomicU64::new(0));
    let not_504 = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..attackers)
        .map(|_| {
            let (client, url) = (client.clone(), host.url("/attack"));
            let (stop, attacks, not_504) = (stop.clone(), attacks.clone(), not_504.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let status = client
                        .get(&url)
                        .send()
                        .map(|r| {
                            let status = r.status().as_u16();
                            let _ = r.bytes();
                            status
                        })
                        .unwrap_or(0);
                    attacks.fetch_add(1, Ordering::Relaxed);
                    if status != 504 {
                        not_504.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let url = host.url("/hello");
    let started = Instant::now();
    let mut round = Round {
        latencies: Vec::new(),
        sent_at: Vec::new(),
        errors: 0,
        attacks: 0,
        attacks_not_504: 0,
    };
    while started.elapsed() < window {
        let sent = Instant::now();
        let ok = client
            .get(&url)
            .send()
            .ok()
            .filter(|r| r.status().as_u16() == 200)
            .and_then(|r| r.text().ok())
            .is_some_and(|body| body == "Hello, world!\n");
        if ok {
            round.latencies.push(sent.elapsed());
            round.sent_at.push(sent - started);
        } else {
            round.errors += 1;
        }
        std::thread::sleep(PAUSE);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    round.attacks = attacks.load(Ordering::Relaxed);
    round.attacks_not_504 = not_504.load(Ordering::Relaxed);
    Ok(round)
}
