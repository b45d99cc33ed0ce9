//! (s) Soak: 1,000,000 invocations through the real `llmchat up` binary, HTTP requests, queue
//! jobs and schedule ticks mixed (issue 4, item 7). The old backend leaked timers and memory
//! under sustained traffic; here every invocation is a fresh instance and all periodic work
//! is one scheduler, so the host's RSS, tokio tasks and armed timers after 1M invocations must
//! be what they were after 10k, and the scheduler must stay on time while every core is busy.
//!
//! The load, all on 127.0.0.1:
//! - HTTP, the bulk: `wrk -t1 -c100` on `/hello` (`hello`), stopped with SIGINT at the mark;
//! - queue jobs: `fixture-processor` `{"action":"ok"}` on 3 queues × concurrency 5, posted to
//!   the admin API (`POST /admin/queues/{q}/jobs`, keep-alive) at [`QUEUE_RATE`] per second:
//!   the one way to feed the binary's memory backend from outside while it runs; the jobs run
//!   through the host's own worker;
//! - schedule ticks: [`SCHEDULES`] `fixture-monitor` schedules (action `ok`: one kv increment)
//!   every 10 ms, ≈ 1,000 ticks/s, from start to end.
//!
//! Invocations are `llmchat_component_invocations_total`, summed. Two phases: until 10,000
//! invocations, then until the total. After each the load stops and the queues drain, then a
//! quiescent checkpoint reads VmRSS (and RssAnon) from /proc and the median of
//! [`SETTLE_SAMPLES`] scrapes of `llmchat_tokio_alive_tasks` and `llmchat_timers_armed`, so
//! that the two checkpoints differ by the invocations in between, not by what was in flight.
//! The scheduler lag is `llmchat_scheduler_lag_seconds`: its bucket deltas over both load
//! phases, quantiles interpolated within buckets (Prometheus's `histogram_quantile`). The CPU
//! the rest of the machine used meanwhile is reported: on a shared 2-core machine a
//! concurrent build disturbs every figure here.
//!
//! kv and queues are on the memory backend; `LLMCHAT_BENCH_SOAK_BACKEND=redis` puts them on a
//! private `redis-server` (every tick is then a Redis claim too). `LLMCHAT_BENCH_QUICK=1`
//! shrinks the soak to 100,000 invocations; `LLMCHAT_BENCH_SOAK_INVOCATIONS=N` sets the count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;

use crate::Paths;
use crate::process::{Llmchat, RedisServer, expect_ok};
use crate::report::thousands;

/// The checkpoint before the total: "RSS at 10k invocations".
pub const FIRST_MARK: u64 = 10_000;
const FULL_TOTAL: u64 = 1_000_000;
const QUICK_TOTAL: u64 = 100_000;
/// Monitor schedules, each every [`SCHEDULE_EVERY_MS`]: ≈ 1,000 ticks/s together.
pub const SCHEDULES: usize = 10;
pub const SCHEDULE_EVERY_MS: u64 = 10;
const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const QUEUE_CONCURRENCY: u32 = 5;
/// Queue jobs posted per second while the load runs.
pub const QUEUE_RATE: f64 = 5_000.0;
/// Admin API requests in flight at most (one keep-alive connection each).
const ENQUEUE_IN_FLIGHT: usize = 32;
const JOB: &str = r#"{"payload":{"action":"ok"}}"#;
pub const WRK_CONNECTIONS: u32 = 100;
/// How often the invocation counter is read: often before the first mark (it comes within a
/// second), less often after.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL: Duration = Duration::from_millis(100);
/// A phase whose counter does not move for this long has stalled.
const STALL: Duration = Duration::from_secs(10);
/// How long the queues may take to drain after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Scrapes per checkpoint, [`SETTLE_EVERY`] apart.
pub const SETTLE_SAMPLES: usize = 10;
pub const SETTLE_EVERY: Duration = Duration::from_millis(100);
/// Other processes using more than this share of the machine make the figures suspect.
pub const MAX_OTHERS_SHARE: f64 = 0.10;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

pub struct Settings {
    pub total: u64,
    pub backend: Backend,
    pub queue_rate: f64,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let quick = match std::env::var("LLMCHAT_BENCH_QUICK").as_deref() {
            Err(_) | Ok("" | "0" | "false") => false,
            Ok("1" | "true") => true,
            Ok(v) => bail!("LLMCHAT_BENCH_QUICK must be 1 or 0, got {v:?}"),
        };
        let total = match std::env::var("LLMCHAT_BENCH_SOAK_INVOCATIONS") {
            Ok(v) => {
                let n: u64 = v.replace('_', "").parse().with_context(|| {
                    format!("LLMCHAT_BENCH_SOAK_INVOCATIONS must be a count, got {v:?}")
                })?;
                if n <= FIRST_MARK {
                    bail!("LLMCHAT_BENCH_SOAK_INVOCATIONS must be above {FIRST_MARK}, got {n}");
                }
                n
            }
            Err(_) if quick => QUICK_TOTAL,
            Err(_) => FULL_TOTAL,
        };
        let backend = match std::env::var("LLMCHAT_BENCH_SOAK_BACKEND").as_deref() {
            Err(_) | Ok("" | "memory") => Backend::Memory,
            Ok("redis") => Backend::Redis,
            Ok(v) => bail!("LLMCHAT_BENCH_SOAK_BACKEND must be memory or redis, got {v:?}"),
        };
        Ok(Self {
            total,
            backend,
            queue_rate: QUEUE_RATE,
        })
    }

    pub fn describe(&self) -> String {
        let reduced = if self.total < FULL_TOTAL {
            " (reduced count, not for the README)"
        } else {
            ""
        };
        format!(
            "{} invocations{reduced}; wrk -t1 -c{WRK_CONNECTIONS} on /hello, {} queue jobs/s via \
             the admin API over {} queues × concurrency {QUEUE_CONCURRENCY}, {SCHEDULES} \
             schedules every {SCHEDULE_EVERY_MS} ms; {} backend for kv and queues",
            thousands(self.total as f64),
            thousands(self.queue_rate),
            QUEUES.len(),
            self.backend.as_str()
        )
    }
}

/// A quiescent checkpoint of the host.
pub struct Mark {
    /// Invocations counted once the queues drained after the load stopped.
    pub invocations: u64,
    /// Queue jobs still pending when the load stopped, and how long they took to run.
    pub backlog: u64,
    pub drained_in: Duration,
    /// VmRSS after the queues drained, and its anonymous part (RssAnon: the heap and the
    /// instance pool, without the binary's pages that were read in as code paths ran).
    pub rss: u64,
    pub rss_anon: u64,
    /// Medians over the checkpoint's scrapes, and their (min, max).
    pub tasks: u64,
    pub tasks_range: (u64, u64),
    pub timers: u64,
    pub timers_range: (u64, u64),
}

/// Invocations by trigger.
#[derive(Clone, Copy, Default)]
pub struct Mix {
    pub http: u64,
    pub queue: u64,
    pub schedule: u64,
}

impl Mix {
    pub fn total(&self) -> u64 {
        self.http + self.queue + self.schedule
    }
}

/// `llmchat_scheduler_lag_seconds` over the load phases.
pub struct Lag {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
    /// Starts later than 5 ms.
    pub over_5ms: u64,
    /// The bucket holding the latest start: its upper bound (`None`: above the last bound).
    pub worst_le: Option<f64>,
}

/// `llmchat_schedule_ticks_total` by outcome, over the host's life.
#[derive(Default)]
pub struct Ticks {
    pub by_outcome: BTreeMap<String, u64>,
    /// `ok` ticks per second under load (expected ≈ SCHEDULES × 1000 / SCHEDULE_EVERY_MS).
    pub ok_per_sec: f64,
    /// p50 and p99 of the monitor's runs under load (instantiate + call), seconds: a run
    /// longer than the period makes the next tick of its schedule skip.
    pub run_p50: f64,
    pub run_p99: f64,
}

impl Ticks {
    pub fn get(&self, outcome: &str) -> u64 {
        self.by_outcome.get(outcome).copied().unwrap_or(0)
    }
}

pub struct Results {
    pub settings: String,
    /// The invocations asked for.
    pub total: u64,
    pub backend: Backend,
    /// At [`FIRST_MARK`] and at the total.
    pub marks: [Mark; 2],
    /// Every invocation of the host, start to end.
    pub mix: Mix,
    /// Invocations while the load ran (both phases).
    pub under_load: u64,
    /// Time under load (both phases) and wall clock from the first load to the last checkpoint.
    pub load_secs: f64,
    pub wall_secs: f64,
    pub lag: Lag,
    pub ticks: Ticks,
    pub enqueued: u64,
    /// Component errors (`llmchat_component_errors_total`), wrk's non-2xx and socket errors,
    /// and admin API calls that did not answer 201.
    pub component_errors: u64,
    pub wrk_errors: u64,
    pub enqueue_errors: u64,
    pub first_enqueue_error: Option<String>,
    /// wrk's figures for the long phase.
    pub wrk_req_per_sec: f64,
    pub wrk_p50_ms: f64,
    pub wrk_p99_ms: f64,
    /// Host CPU per invocation under load, µs.
    pub host_cpu_us: f64,
    /// The slowest `/metrics` scrape while the load ran (how late a checkpoint may start).
    pub slowest_scrape: Duration,
    /// Share of the machine's CPU time used by processes other than the soak's during the
    /// load (the host, wrk, the bench and redis-server taken out).
    pub others_share: f64,
}

impl Results {
    pub fn rss_growth(&self) -> i64 {
        self.marks[1].rss as i64 - self.marks[0].rss as i64
    }

    pub fn errors(&self) -> u64 {
        self.component_errors + self.wrk_errors + self.enqueue_errors
    }
}

pub fn measure(paths: &Paths, cache: &Path, s: &Settings) -> Result<Results> {
    let monitor = paths.wasm.join("fixture_monitor.wasm");
    if !monitor.is_file() {
        bail!(
            "component `{}` is missing; run `just build` first",
            monitor.display()
        );
    }
    // Compile into the artifact cache first: compiling at start-up leaves freed heap behind
    // that is not the soak's doing. On the memory backend, so that no tick claim of this
    // host is left in the soak's Redis.
    drop(Llmchat::start(
        &paths.llmchat,
        &manifest_text(paths, None),
        cache,
    )?);
    let redis = match s.backend {
        Backend::Redis => Some(RedisServer::start()?),
        Backend::Memory => None,
    };
    let manifest = manifest_text(paths, redis.as_ref().map(RedisServer::unix_url).as_deref());
    let host = Llmchat::start(&paths.llmchat, &manifest, cache)?;
    expect_ok(&host.url("/hello"))?;
    let metrics = MetricsClient::new(&host)?;
    let at_start = metrics.scrape()?;
    let started = Instant::now();

    let first = Phase::run(&host, &metrics, redis.as_ref(), FIRST_MARK, POLL_FIRST, s)?;
    let mark_first = checkpoint(&host, &metrics, &first)?;
    eprintln!(
        "  {} invocations in {:.1} s: RSS {:.1} MB, {} tasks, {} timers armed",
        thousands(mark_first.invocations as f64),
        first.elapsed.as_secs_f64(),
        mark_first.rss as f64 / 1e6,
        mark_first.tasks,
        mark_first.timers
    );
    let second = Phase::run(&host, &metrics, redis.as_ref(), s.total, POLL, s)?;
    let mark_total = checkpoint(&host, &metrics, &second)?;
    let wall_secs = started.elapsed().as_secs_f64();
    let at_end = metrics.scrape()?;
    eprintln!(
        "  {} invocations in {:.1} s: RSS {:.1} MB, {} tasks, {} timers armed",
        thousands(mark_total.invocations as f64),
        first.elapsed.as_secs_f64() + second.elapsed.as_secs_f64(),
        mark_total.rss as f64 / 1e6,
        mark_total.tasks,
        mark_total.timers
    );

    let phases = [&first, &second];
    let load_secs: f64 = phases.iter().map(|p| p.elapsed.as_secs_f64()).sum();
    let lag = lag(&phases)?;
    let mut ticks = Ticks::default();
    for (labels, v) in at_end.series("llmchat_schedule_ticks_total") {
        if let Some(outcome) = labels.get("outcome") {
            *ticks.by_outcome.entry(outcome.clone()).or_default() += v as u64;
        }
    }
    let ok_under_load: f64 = phases
        .iter()
        .map(|p| {
            let ok = |m: &Scrape| m.sum("llmchat_schedule_ticks_total", &[("outcome", "ok")]);
            ok(&p.after) - ok(&p.before)
        })
        .sum();
    ticks.ok_per_sec = ok_under_load / load_secs;
    let runs = histogram(
        &phases,
        "llmchat_component_duration_seconds",
        &[("component", "m0")],
    )?;
    (ticks.run_p50, ticks.run_p99) = (quantile(&runs, 0.5), quantile(&runs, 0.99));
    let invocations_under_load: f64 = phases
        .iter()
        .map(|p| (p.after.invocations() - p.before.invocations()) as f64)
        .sum();
    let host_cpu: Duration = phases
        .iter()
        .map(|p| p.cpu_after.host - p.cpu_before.host)
        .sum();
    let others: f64 = phases
        .iter()
        .map(|p| p.cpu_before.others_until(&p.cpu_after))
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let errors = |m: &Scrape| m.sum("llmchat_component_errors_total", &[]) as u64;
    let results = Results {
        settings: s.describe(),
        total: s.total,
        backend: s.backend,
        marks: [mark_first, mark_total],
        mix: at_end.mix(),
        under_load: invocations_under_load as u64,
        load_secs,
        wall_secs,
        lag,
        ticks,
        enqueued: first.enqueued.sent + second.enqueued.sent,
        component_errors: errors(&at_end) - errors(&at_start),
        wrk_errors: first.wrk.errors + second.wrk.errors,
        enqueue_errors: first.enqueued.failed + second.enqueued.failed,
        first_enqueue_error: first
            .enqueued
            .first_error
            .clone()
            .or_else(|| second.enqueued.first_error.clone()),
        wrk_req_per_sec: second.wrk.req_per_sec,
        wrk_p50_ms: second.wrk.p50_ms,
        wrk_p99_ms: second.wrk.p99_ms,
        host_cpu_us: crate::micros(host_cpu) / invocations_under_load.max(1.0),
        others_share: others / (load_secs * cores),
        slowest_scrape: first.slowest_scrape.max(second.slowest_scrape),
    };
    let mix = &results.mix;
    eprintln!(
        "  mix: http {} / queue {} / schedule {} in {load_secs:.1} s under load; scheduler lag \
         p50 {:.3} ms, p99 {:.3} ms over {} starts; ticks {:?}, monitor runs p50 {:.2} ms \
         p99 {:.2} ms; errors {}; slowest /metrics scrape {:.0} ms; other processes used \
         {:.0}% of the CPUs",
        thousands(mix.http as f64),
        thousands(mix.queue as f64),
        thousands(mix.schedule as f64),
        results.lag.p50 * 1e3,
        results.lag.p99 * 1e3,
        thousands(results.lag.count as f64),
        results.ticks.by_outcome,
        results.ticks.run_p50 * 1e3,
        results.ticks.run_p99 * 1e3,
        results.errors(),
        results.slowest_scrape.as_secs_f64() * 1e3,
        results.others_share * 100.0
    );
    if results.others_share > MAX_OTHERS_SHARE {
        eprintln!(
            "  warning: other processes used {:.0}% of the CPUs during the soak; its figures \
             are disturbed, rerun it on a quiet machine",
            results.others_share * 100.0
        );
    }
    drop(host);
    drop(redis);
    Ok(results)
}

/// `hello` on `/hello`, `fixture-processor` on 3 queues, `fixture-monitor` on
/// [`SCHEDULES`] schedules; Redis for kv and queues when `redis_url` is given.
fn manifest_text(paths: &Paths, redis_url: Option<&str>) -> String {
    let wasm = |name: &str| {
        paths
            .wasm
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    };
    let mut m = String::new();
    if let Some(url) = redis_url {
        let _ = writeln!(m, "[redis]\nurl = {url:?}\n");
    }
    let _ = writeln!(
        m,
        "[http]\ninstance_wait = \"1s\"\n\n\
         [dashboard]\nsample_every = \"10s\"\nsamples = 360\n\n\
         [component.hello]\nsource = {:?}\nmemory_limit = \"16MiB\"\ntimeout = \"5s\"\n\
         max_instances = 64\n\n\
         [component.proc]\nsource = {:?}\nmemory_limit = \"16MiB\"\ntimeout = \"5s\"\n\n\
         [component.m0]\nsource = {:?}\nmemory_limit = \"16MiB\"\ntimeout = \"5s\"\n\n\
         [component.m0.config]\naction = \"ok\"\n\n\
         [[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\n",
        wasm("hello"),
        wasm("fixture_processor"),
        wasm("fixture_monitor"),
    );
    for q in QUEUES {
        let _ = writeln!(
            m,
            "[[trigger.queue]]\nqueue = {q:?}\ncomponent = \"proc\"\n\
             concurrency = {QUEUE_CONCURRENCY}\ntimeout = \"5s\"\n"
        );
    }
    for i in 0..SCHEDULES {
        let _ = writeln!(
            m,
            "[[trigger.schedule]]\nname = \"s{i}\"\ncomponent = \"m0\"\n\
             every = \"{SCHEDULE_EVERY_MS}ms\"\ntimeout = \"5s\"\n"
        );
    }
    m
}

/// One load phase: wrk and the enqueuer until the host has counted `target` invocations.
struct Phase {
    before: Scrape,
    after: Scrape,
    cpu_before: Cpu,
    cpu_after: Cpu,
    elapsed: Duration,
    wrk: WrkSummary,
    enqueued: EnqueueStats,
    /// The slowest `/metrics` scrape under load.
    slowest_scrape: Duration,
}

impl Phase {
    fn run(
        host: &Llmchat,
        metrics: &MetricsClient,
        redis: Option<&RedisServer>,
        target: u64,
        poll: Duration,
        s: &Settings,
    ) -> Result<Self> {
        let cpu_before = Cpu::take(host, redis)?;
        let started = Instant::now();
        let before = metrics.scrape()?;
        let mut wrk = Wrk::start(&host.url("/hello"))?;
        let enqueuer = Enqueuer::start(host.url(""), s.queue_rate)?;
        let mut last = (before.invocations(), Instant::now());
        let mut slowest_scrape = Duration::ZERO;
        let result = loop {
            std::thread::sleep(poll);
            let asked = Instant::now();
            // On any error, fall through to stopping wrk and the enqueuer first.
            let now = match metrics.scrape() {
                Ok(m) => m.invocations(),
                Err(e) => break Err(e),
            };
            slowest_scrape = slowest_scrape.max(asked.elapsed());
            if now >= target {
                break Ok(());
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                break Err(anyhow::anyhow!(
                    "the soak stalled at {now} invocations (no progress for {STALL:?})"
                ));
            }
            if let Err(e) = wrk.ensure_running() {
                break Err(e);
            }
        };
        let reached = Instant::now();
        let wrk = wrk.stop();
        let wrk_stopped = reached.elapsed();
        let enqueued = enqueuer.stop();
        let enqueuer_stopped = reached.elapsed();
        result.with_context(|| host.process.log())?;
        let (wrk, enqueued) = (wrk?, enqueued?);
        let after = metrics.scrape()?;
        let elapsed = started.elapsed();
        eprintln!(
            "    load stopped at {} invocations (wrk in {:.0} ms, the enqueuer in {:.0} ms), \
             {} queue jobs pending",
            thousands(after.invocations() as f64),
            wrk_stopped.as_secs_f64() * 1e3,
            enqueuer_stopped.as_secs_f64() * 1e3,
            pending_jobs(&after)
        );
        let cpu_after = Cpu::take(host, redis)?;
        Ok(Self {
            before,
            after,
            cpu_before,
            cpu_after,
            elapsed,
            wrk,
            enqueued,
            slowest_scrape,
        })
    }
}

/// Waits for the queues to drain, then reads the host [`SETTLE_SAMPLES`] times.
fn checkpoint(host: &Llmchat, metrics: &MetricsClient, phase: &Phase) -> Result<Mark> {
    let started = Instant::now();
    let deadline = started + DRAIN_TIMEOUT;
    let invocations = loop {
        let m = metrics.scrape()?;
        // Without every queue's counts (a backend that did not answer), nothing is known.
        let read = m.sum("llmchat_queue_stats_up", &[]) >= QUEUES.len() as f64;
        let pending = pending_jobs(&m);
        if read && pending == 0.0 {
            break m.invocations();
        }
        if Instant::now() > deadline {
            bail!(
                "the queues did not drain within {DRAIN_TIMEOUT:?} after the load stopped \
                 ({pending} jobs pending, counts read: {read})"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut tasks, mut timers) = (Vec::new(), Vec::new());
    for _ in 0..SETTLE_SAMPLES {
        std::thread::sleep(SETTLE_EVERY);
        let m = metrics.scrape()?;
        tasks.push(m.value("llmchat_tokio_alive_tasks")? as u64);
        timers.push(m.value("llmchat_timers_armed")? as u64);
    }
    let spread = |v: &mut Vec<u64>| {
        v.sort_unstable();
        (v[v.len() / 2], (v[0], v[v.len() - 1]))
    };
    let (tasks, tasks_range) = spread(&mut tasks);
    let (timers, timers_range) = spread(&mut timers);
    Ok(Mark {
        invocations,
        backlog: pending_jobs(&phase.after) as u64,
        drained_in: started.elapsed(),
        rss: host.process.rss()?,
        rss_anon: rss_anon(host.process.pid())?,
        tasks,
        tasks_range,
        timers,
        timers_range,
    })
}

/// RssAnon of process `pid`, in bytes.
fn rss_anon(pid: u32) -> Result<u64> {
    let file = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&file).with_context(|| format!("reading `{file}`"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no RssAnon in `{file}`"))?;
    Ok(kib * 1024)
}

/// Queue jobs waiting, running or delayed.
fn pending_jobs(m: &Scrape) -> f64 {
    ["waiting", "in_flight", "delayed"]
        .iter()
        .map(|state| m.sum("llmchat_queue_jobs", &[("state", state)]))
        .sum()
}

/// The cumulative buckets `(le, count)` of histogram `name` (its samples matching `filter`),
/// summed over `phases` as after − before, ascending, `+Inf` last.
fn histogram(phases: &[&Phase], name: &str, filter: &[(&str, &str)]) -> Result<Vec<(f64, f64)>> {
    let bucket = format!("{name}_bucket");
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for p in phases {
        for (m, sign) in [(&p.after, 1.0), (&p.before, -1.0)] {
            for (labels, v) in m.series(&bucket) {
                if !filter
                    .iter()
                    .all(|(k, want)| labels.get(*k).is_some_and(|l| l == want))
                {
                    continue;
                }
                let le = labels
                    .get("le")
                    .with_context(|| format!("a `{bucket}` sample without `le`"))?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()
                        .with_context(|| format!("a `{bucket}` sample with le={le:?}"))?
                };
                buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += sign * v;
            }
        }
    }
    let mut cumulative: Vec<(f64, f64)> = buckets.into_values().collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    if cumulative.last().is_none_or(|(le, _)| le.is_finite()) {
        bail!("/metrics has no `{bucket}{{le=\"+Inf\"}}` matching {filter:?}");
    }
    Ok(cumulative)
}

/// The scheduler lag over `phases`.
fn lag(phases: &[&Phase]) -> Result<Lag> {
    let cumulative = histogram(phases, "llmchat_scheduler_lag_seconds", &[])?;
    let delta = |name: &str| -> Result<f64> {
        phases
            .iter()
            .map(|p| Ok(p.after.value(name)? - p.before.value(name)?))
            .sum()
    };
    let (sum, count) = (
        delta("llmchat_scheduler_lag_seconds_sum")?,
        delta("llmchat_scheduler_lag_seconds_count")?,
    );
    let under = |bound: f64| {
        cumulative
            .iter()
            .find(|(le, _)| (*le - bound).abs() < 1e-12)
            .map_or(0.0, |(_, n)| *n)
    };
    let total = cumulative.last().map_or(0.0, |(_, n)| *n);
    let worst_le = cumulative
        .iter()
        .find(|(_, n)| *n >= total)
        .and_then(|(le, _)| le.is_finite().then_some(*le));
    Ok(Lag {
        count: count as u64,
        p50: quantile(&cumulative, 0.50),
        p99: quantile(&cumulative, 0.99),
        mean: if count > 0.0 { sum / count } else { 0.0 },
        over_5ms: (total - under(0.005)) as u64,
        worst_le,
    })
}

/// `histogram_quantile`: the bucket holding rank `q × total`, linearly within it (from 0 for
/// the first bucket; the highest finite bound when the rank falls in `+Inf`).
fn quantile(cumulative: &[(f64, f64)], q: f64) -> f64 {
    let total = cumulative.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in cumulative {
        if n >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let width = n - lower.1;
            let within = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, n);
    }
    lower.0
}

/// Reads `/metrics` on a fresh connection each time, so that no idle connection of the
/// bench's is among the host's tasks at a checkpoint.
struct MetricsClient {
    client: reqwest::blocking::Client,
    url: String,
}

impl MetricsClient {
    fn new(host: &Llmchat) -> Result<Self> {
        Ok(Self {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .context("building an HTTP client")?,
            url: host.url("/metrics"),
        })
    }

    fn scrape(&self) -> Result<Scrape> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .with_context(|| format!("GET {}", self.url))?;
        let status = response.status();
        let text = response
            .text()
            .with_context(|| format!("reading GET {}", self.url))?;
        if !status.is_success() {
            bail!("GET {} answered {status}: {text}", self.url);
        }
        Ok(Scrape::parse(&text))
    }
}

/// One scrape of the Prometheus text format: (metric name, labels, value) per sample.
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
                    None => (series, BTreeMap::new()),
                };
                Some((name.to_string(), labels, value))
            })
            .collect();
        Self { samples }
    }

    fn series<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, _, _)| n == name)
            .map(|(_, labels, v)| (labels, *v))
    }

    /// The sum of `name` over the samples whose labels include `filter`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.series(name)
            .filter(|(labels, _)| {
                filter
                    .iter()
                    .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// An unlabelled sample that must be there.
    fn value(&self, name: &str) -> Result<f64> {
        self.series(name)
            .next()
            .map(|(_, v)| v)
            .with_context(|| format!("/metrics has no `{name}`"))
    }

    fn invocations(&self) -> u64 {
        self.sum("llmchat_component_invocations_total", &[]) as u64
    }

    fn mix(&self) -> Mix {
        let by = |trigger| {
            self.sum(
                "llmchat_component_invocations_total",
                &[("trigger", trigger)],
            ) as u64
        };
        Mix {
            http: by("http"),
            queue: by("queue"),
            schedule: by("schedule"),
        }
    }
}

/// `a="x",b="y"` (the host's label values never hold quotes or commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// CPU time so far: the machine's busy time, the host's, the bench's own with its reaped
/// children (wrk), and redis-server's.
struct Cpu {
    machine: Duration,
    host: Duration,
    bench: Duration,
    redis: Duration,
}

impl Cpu {
    fn take(host: &Llmchat, redis: Option<&RedisServer>) -> Result<Self> {
        Ok(Self {
            machine: machine_busy()?,
            host: host.process.cpu_time()?,
            bench: own_cpu()?,
            redis: match redis {
                Some(r) => r.process.cpu_time()?,
                None => Duration::ZERO,
            },
        })
    }

    /// Seconds of CPU that processes other than the soak's used between `self` and `later`.
    fn others_until(&self, later: &Cpu) -> f64 {
        let d = |a: Duration, b: Duration| b.as_secs_f64() - a.as_secs_f64();
        (d(self.machine, later.machine)
            - d(self.host, later.host)
            - d(self.bench, later.bench)
            - d(self.redis, later.redis))
        .max(0.0)
    }
}

/// USER_HZ ticks as time (100 per second on every Linux this runs on).
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// Busy time of all CPUs since boot: user, nice, system, irq, softirq and steal.
fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no `cpu` line in /proc/stat")?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Ok(ticks(at(0) + at(1) + at(2) + at(5) + at(6) + at(7)))
}

/// The bench's own CPU time, with that of its children it has waited for.
fn own_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    // After "pid (comm)": utime, stime, cutime, cstime are fields 14 to 17.
    Ok(ticks(
        (11..15).map(|i| fields.get(i).copied().unwrap_or(0)).sum(),
    ))
}

/// `wrk` for as long as it takes, stopped with SIGINT (it then prints its summary).
struct Wrk {
    child: Option<Child>,
}

struct WrkSummary {
    req_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Non-2xx responses and socket errors.
    errors: u64,
}

impl Wrk {
    fn start(url: &str) -> Result<Self> {
        let child = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{WRK_CONNECTIONS}"),
                "-d3600s",
                "--latency",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running wrk (install it with `just setup` or `apt-get install wrk`)")?;
        Ok(Self { child: Some(child) })
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait().context("polling wrk")?
        {
            bail!("wrk exited early with {status}");
        }
        Ok(())
    }

    fn stop(mut self) -> Result<WrkSummary> {
        let mut child = self.child.take().context("wrk was already stopped")?;
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            let _ = child.kill();
        }
        let output = child.wait_with_output().context("waiting for wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        parse_wrk(&stdout).with_context(|| {
            format!(
                "unexpected wrk output ({}):\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The few lines of wrk 4's report the soak needs (see `load.rs` for the full reading).
fn parse_wrk(out: &str) -> Result<WrkSummary> {
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
    };
    let req_per_sec = field("Requests/sec:")
        .context("no `Requests/sec:` line")?
        .parse()
        .context("parsing `Requests/sec:`")?;
    let latency_ms = |line: &str| -> Result<f64> {
        let text = field(line).with_context(|| format!("no `{line}` latency line"))?;
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .with_context(|| format!("latency {text:?} has no unit"))?;
        let (value, unit) = text.split_at(split);
        let value: f64 = value
            .parse()
            .with_context(|| format!("parsing latency {text:?}"))?;
        Ok(match unit {
            "us" => value / 1e3,
            "ms" => value,
            "s" => value * 1e3,
            "m" => value * 60e3,
            _ => bail!("latency {text:?} has an unknown unit"),
        })
    };
    let non_2xx: u64 = match field("Non-2xx or 3xx responses:") {
        Some(n) => n.parse().context("parsing `Non-2xx or 3xx responses:`")?,
        None => 0,
    };
    // "Socket errors: connect 0, read 12, write 0, timeout 0"
    let socket_errors: u64 = field("Socket errors:").map_or(0, |list| {
        list.split(',')
            .filter_map(|kind| kind.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    });
    Ok(WrkSummary {
        req_per_sec,
        p50_ms: latency_ms("50%")?,
        p99_ms: latency_ms("99%")?,
        errors: non_2xx + socket_errors,
    })
}

#[derive(Default)]
struct EnqueueStats {
    /// Jobs the admin API accepted (201).
    sent: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Posts queue jobs to the host's admin API at a steady rate, on its own thread and runtime;
/// dropping the runtime at [`Enqueuer::stop`] closes its connections.
struct Enqueuer {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<Result<EnqueueStats>>,
}

impl Enqueuer {
    fn start(base: String, rate: f64) -> Result<Self> {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("soak-enqueuer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the enqueuer's runtime")?;
                rt.block_on(enqueue_paced(base, rate, token))
            })
            .context("starting the enqueuer thread")?;
        Ok(Self { stop, thread })
    }

    /// Stops posting; requests in flight finish first, so every accepted job is counted.
    fn stop(self) -> Result<EnqueueStats> {
        self.stop.cancel();
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the enqueuer thread panicked"))?
    }
}

async fn enqueue_paced(base: String, rate: f64, stop: CancellationToken) -> Result<EnqueueStats> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(ENQUEUE_IN_FLIGHT)
        .build()
        .context("building the enqueuer's HTTP client")?;
    let token = std::env::var("LLMCHAT_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let next = AtomicU64::new(0);
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_error = std::sync::Mutex::new(None::<String>);
    let started = tokio::time::Instant::now();
    let urls: Vec<String> = QUEUES
        .iter()
        .map(|q| format!("{base}/admin/queues/{q}/jobs"))
        .collect();
    let poster = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let at = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = llmchat_host::timers::sleep_until(at) => {}
            }
            let url = &urls[i as usize % urls.len()];
            let mut request = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(JOB);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let error = match request.send().await {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    // Read to the end so that the connection goes back to the pool.
                    let _ = r.bytes().await;
                    None
                }
                Ok(r) => {
                    let status = r.status();
                    Some(format!(
                        "POST {url}: {status} {}",
                        r.text().await.unwrap_or_default()
                    ))
                }
                Err(e) => Some(format!("POST {url}: {e}")),
            };
            match error {
                None => sent.fetch_add(1, Ordering::Relaxed),
                Some(e) => {
                    first_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert(e);
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    };
    futures::future::join_all((0..ENQUEUE_IN_FLIGHT).map(|_| poster())).await;
    Ok(EnqueueStats {
        sent: sent.into_inner(),
        failed: failed.into_inner(),
        first_error: first_error
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    })
}
