//! (q) The queue benchmarks of issue 3: 3 queues of trivial jobs, one fresh component
//! instance per job, on the redis and the memory backend.
//!
//! - **Throughput**: 10,000 jobs per queue are enqueued first, then processed; the clock runs
//!   from the moment processing may start until every job is acknowledged (the queues'
//!   `processed` counters, polled every 5 ms). Each configuration runs a warm-up round, then
//!   [`Settings::rounds`] measured rounds; the figure is their median.
//!   - **redis**: the real `llmchat up` binary on a private `redis-server` (unix socket). The
//!     host is started on empty queues, then for each round it is frozen with `SIGSTOP`, the
//!     jobs are enqueued through the host library (`Queues::enqueue`, 256 in flight), and the
//!     clock starts at `SIGCONT`. So start-up is never inside the measurement, and several
//!     rounds run on one host.
//!   - **memory**: in-process, because the memory backend cannot be fed from outside the
//!     process before it starts (the admin API would race the worker): the same engine,
//!     registry, services and `QueueWorker` as `llmchat up`, on a 2-worker tokio runtime,
//!     with a fresh `MemoryQueue` filled before the worker starts.
//! - **Redis commands per job**, enqueue included: exactly, with `MONITOR` over a separate
//!   small round (the bench talks to Redis over TCP and everyone else over the unix socket,
//!   and `MONITOR` tags commands run by scripts `[0 lua]`); and, with script internals,
//!   `total_commands_processed` over the measured rounds.
//! - **Latency**: `fixture-processor` jobs `{"action":"record"}`, whose first act is a kv
//!   `INCRBY` of `runs:{job id}`. A keyspace-notification subscriber timestamps each one, so a
//!   job's latency is from just before its enqueue call to that write (start + instantiate +
//!   one kv round trip). Immediate jobs are enqueued at 500/s through the library; delayed
//!   ones (1 s) through the host's admin API, as components and operators enqueue them, so
//!   the host's promotion timer knows about them.
//! - **Idle**: `total_commands_processed` (script internals included, the bench's own `INFO`
//!   taken out) and `MONITOR` over a quiet window, and the unix-socket connections.
//! - **RSS** of the redis host: idle after start-up, after the warm-up, and after at least
//!   [`Settings::rss_jobs`] jobs.
//! - **Peers** ([`peers`]): the redis rounds of each concurrency are interleaved with BullMQ's
//!   (keeping nothing, and keeping 1,000 completed jobs) and with a second llmchat host's
//!   that keeps completed jobs, all in this run; BullMQ's enqueue→start follows llmchat's.

use std::borrow::BorrowMut;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use llmchat_host::capabilities::Services;
use llmchat_host::engine::{CompilerOptions, PoolSizing};
use llmchat_host::kv::MemoryKv;
use llmchat_host::llm::EchoProvider;
use llmchat_host::manifest::Manifest;
use llmchat_host::queue::memory::MemoryQueue;
use llmchat_host::queue::redis::RedisQueue;
use llmchat_host::queue::{EnqueueRequest, Queues};
use llmchat_host::redis::RedisPool;
use llmchat_host::registry::Registry;
use llmchat_host::runtime::ComponentEngine;
use llmchat_host::triggers::Trigger;
use llmchat_host::triggers::queue::QueueWorker;

use crate::interleave;
use crate::peers::{self, Peers};
use crate::process::{Llmchat, RedisCluster, RedisServer, pause};
use crate::redis_probe::{Counters, KeyspaceEvents, Monitor, Probes, Seen};
use crate::report::thousands;
use crate::{Paths, median};

pub const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
/// The two concurrencies per queue the issue asks for.
pub const CONCURRENCIES: [u32; 2] = [5, 50];
/// How often the bench reads the queues' counters during a round.
const POLL: Duration = Duration::from_millis(5);
/// A round that makes no progress for this long is stalled: it is reported as such, and
/// what is left of it is dropped so that the next round starts clean.
const STALL: Duration = Duration::from_secs(2);
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// Enqueue calls in flight while filling the queues.
pub const ENQUEUE_IN_FLIGHT: usize = 256;
/// Time for a freshly started host to finish its start-up traffic before "idle" begins.
const SETTLE: Duration = Duration::from_secs(2);
/// Immediate jobs are enqueued every 2 ms (500/s), delayed ones every 5 ms.
const LATENCY_PACE: Duration = Duration::from_millis(2);
const DELAYED_PACE: Duration = Duration::from_millis(5);
pub const DELAY: Duration = Duration::from_secs(1);
/// The processor's first kv write for each job.
const RECORD: &str = r#"{"action":"record"}"#;
const EVENT_KEYS: &str = "llmchat:kv:proc:runs:*";

pub struct Settings {
    pub quick: bool,
    pub per_queue: usize,
    pub rounds: usize,
    pub warm_up_per_queue: usize,
    monitor_per_queue: usize,
    pub rss_jobs: u64,
    pub idle: Duration,
    pub latency_jobs: usize,
    pub delayed_jobs: usize,
}

impl Settings {
    /// The issue's figures, or smaller ones with `LLMCHAT_BENCH_QUICK=1` for trial runs.
    pub fn from_env() -> Result<Self> {
        let quick = match std::env::var("LLMCHAT_BENCH_QUICK").as_deref() {
            Err(_) | Ok("" | "0" | "false") => false,
            Ok("1" | "true") => true,
            Ok(v) => bail!("LLMCHAT_BENCH_QUICK must be 1 or 0, got {v:?}"),
        };
        Ok(if quick {
            Self {
                quick,
                per_queue: 1_000,
                rounds: 1,
                warm_up_per_queue: 300,
                monitor_per_queue: 300,
                rss_jobs: 10_000,
                idle: Duration::from_secs(5),
                latency_jobs: 1_000,
                delayed_jobs: 200,
            }
        } else {
            Self {
                quick,
                per_queue: 10_000,
                rounds: 3,
                warm_up_per_queue: 1_000,
                monitor_per_queue: 1_000,
                rss_jobs: 100_000,
                idle: Duration::from_secs(30),
                latency_jobs: 5_000,
                delayed_jobs: 1_000,
            }
        })
    }

    pub fn describe(&self) -> String {
        let quick = if self.quick {
            " (LLMCHAT_BENCH_QUICK: reduced counts, not for the README)"
        } else {
            ""
        };
        format!(
            "{} jobs per round ({} per queue), median of {} round(s) after a warm-up{quick}",
            thousands((self.per_queue * QUEUES.len()) as f64),
            thousands(self.per_queue as f64),
            self.rounds
        )
    }
}

/// One configuration's throughput.
pub struct Throughput {
    pub concurrency: u32,
    /// Jobs per second of each measured round.
    pub rounds: Vec<f64>,
    /// Failed or retried attempts over every round (each should be 0).
    pub errors: u64,
    /// Jobs left unprocessed by rounds that stalled (see [`STALL`]).
    pub stalled: u64,
    /// For stalled rounds: jobs per second until their last progress.
    pub until_stall: Vec<f64>,
    /// Redis only: every command Redis ran over the measured rounds, script internals
    /// included, per job; and per command name.
    pub redis: Option<(f64, BTreeMap<String, f64>)>,
    /// Redis only: CPU time per job over the measured rounds, µs: (host, redis-server).
    pub cpu_us: Option<(f64, f64)>,
    /// Cluster only: the part of the redis-server CPU per job spent by the replicas, µs.
    pub replicas_cpu_us: f64,
    /// Redis only: the enqueue calls that filled the measured rounds.
    pub enqueue: Option<EnqueueLoad>,
}

/// The enqueue calls of a configuration's measured rounds: [`ENQUEUE_IN_FLIGHT`] at a
/// time through the host library, while the host is frozen (so only the enqueuer talks
/// to Redis).
pub struct EnqueueLoad {
    /// Jobs enqueued per second, per round.
    pub rounds: Vec<f64>,
    /// How long each enqueue call took, from its first poll to its answer, in ms.
    pub calls_ms: Vec<f64>,
}

impl EnqueueLoad {
    pub fn per_sec(&self) -> f64 {
        median(self.rounds.clone())
    }
}

impl Throughput {
    pub fn jobs_per_sec(&self) -> f64 {
        median(self.rounds.clone())
    }
}

/// Watches a round's progress: done, or stalled (no progress for [`STALL`], or longer than
/// [`ROUND_TIMEOUT`] in all).
struct Progress {
    jobs: u64,
    started: Instant,
    last: (u64, Instant),
}

enum Step {
    Running,
    Done,
    Stalled,
}

impl Progress {
    fn new(jobs: u64) -> Self {
        let now = Instant::now();
        Self {
            jobs,
            started: now,
            last: (0, now),
        }
    }

    /// `finished`: jobs of this round processed or failed so far.
    fn step(&mut self, finished: u64) -> Step {
        let now = Instant::now();
        if finished >= self.jobs {
            Step::Done
        } else if finished != self.last.0 {
            self.last = (finished, now);
            Step::Running
        } else if now - self.last.1 > STALL || now - self.started > ROUND_TIMEOUT {
            Step::Stalled
        } else {
            Step::Running
        }
    }

    /// Jobs per second from the start to the last progress.
    fn rate_until_last_progress(&self) -> f64 {
        self.last.0 as f64 / (self.last.1 - self.started).as_secs_f64().max(1e-6)
    }
}

/// What clients sent during a `MONITOR`ed round.
pub struct Commands {
    pub jobs: u64,
    /// Sent by the enqueuer.
    pub enqueue: u64,
    /// Sent by the host, by command.
    pub host: BTreeMap<String, u64>,
    /// Run inside scripts (not sent).
    pub lua: u64,
}

impl Commands {
    pub fn per_job(&self) -> f64 {
        (self.enqueue + self.host.values().sum::<u64>()) as f64 / self.jobs as f64
    }
}

/// Per-job delays, in ms.
pub struct Latency {
    pub jobs: usize,
    pub samples_ms: Vec<f64>,
    /// Enqueue→start only: how long each enqueue call itself took, in ms (one at a time).
    pub calls_ms: Vec<f64>,
}

impl Latency {
    pub fn missing(&self) -> usize {
        self.jobs - self.samples_ms.len()
    }
}

pub struct Idle {
    pub secs: f64,
    /// Every command per second, script internals included.
    pub all_per_sec: f64,
    /// Commands per second the host sent (`MONITOR`), by command.
    pub sent: BTreeMap<String, u64>,
    /// Unix-socket connections while idle (3 × concurrency 5).
    pub connections: u64,
    /// The same on the concurrency-50 host after its rounds.
    pub connections_c50: u64,
}

impl Idle {
    pub fn sent_per_sec(&self) -> f64 {
        self.sent.values().sum::<u64>() as f64 / self.secs
    }
}

pub struct Rss {
    pub start: u64,
    pub warm: u64,
    pub after: u64,
    pub jobs: u64,
}

pub struct Results {
    pub settings: String,
    /// `redis_version` of the server the redis figures come from.
    pub redis_version: String,
    /// Indexed like [`CONCURRENCIES`].
    pub redis: Vec<Throughput>,
    pub memory: Vec<Throughput>,
    pub commands: Vec<Commands>,
    pub latency: Latency,
    pub delayed: Latency,
    pub idle: Idle,
    pub rss: Rss,
    /// BullMQ, and llmchat keeping completed jobs, measured beside the redis rows.
    pub peers: peers::Results,
}

pub fn measure(paths: &Paths, cache: &Path, s: &Settings) -> Result<Results> {
    let noop = paths.wasm.join("fixture_noop_processor.wasm");
    let processor = paths.wasm.join("fixture_processor.wasm");
    prime_cache(paths, cache, &noop, &processor)?;

    let mut memory = Vec::new();
    for c in CONCURRENCIES {
        let t = memory_throughput(&noop, cache, c, s)?;
        eprintln!(
            "  memory, in-process, 3 × concurrency {c}: {:.0} jobs/s ({})",
            t.jobs_per_sec(),
            list(&t.rounds)
        );
        memory.push(t);
    }

    let mut peers = Peers::start(paths, &noop)?;
    let mut redis = Vec::new();
    let mut commands = Vec::new();
    let mut rig = RedisRig::start(Nodes::unix()?, paths, cache, &noop, CONCURRENCIES[0], false)?;
    std::thread::sleep(SETTLE);
    let rss_start = rig.host.process.rss()?;
    eprintln!(
        "  redis, 3 × concurrency 5: idle RSS {:.1} MB; idle for {:?}",
        rss_start as f64 / 1e6,
        s.idle
    );
    let mut idle = rig.idle(s.idle)?;
    eprintln!(
        "  idle: {:.2} commands/s with script internals, {:.2}/s sent ({:?}), {} connections",
        idle.all_per_sec,
        idle.sent_per_sec(),
        idle.sent,
        idle.connections
    );
    let mut beside = peers.at(paths, cache, &noop, CONCURRENCIES[0], s)?;
    let (t, c) = rig.throughput(s, &mut beside.arms())?;
    peers.collect(beside);
    let rss_warm = rig.rss_warm;
    redis.push(t);
    commands.push(c);
    // Top up to `rss_jobs` (a few rounds when stalled ones dropped jobs).
    for _ in 0..5 {
        let done = rig.counters()?.processed;
        if done >= s.rss_jobs {
            break;
        }
        let per_queue = (s.rss_jobs - done).div_ceil(QUEUES.len() as u64) as usize;
        rig.round(per_queue, None)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = Rss {
        start: rss_start,
        warm: rss_warm,
        after: rig.host.process.rss()?,
        jobs: rig.counters()?.processed,
    };
    eprintln!(
        "  RSS: {:.1} MB idle, {:.1} MB after warm-up, {:.1} MB after {} jobs",
        rss.start as f64 / 1e6,
        rss.warm as f64 / 1e6,
        rss.after as f64 / 1e6,
        rss.jobs
    );
    drop(rig);

    let mut rig = RedisRig::start(Nodes::unix()?, paths, cache, &noop, CONCURRENCIES[1], false)?;
    let mut beside = peers.at(paths, cache, &noop, CONCURRENCIES[1], s)?;
    let (t, c) = rig.throughput(s, &mut beside.arms())?;
    peers.collect(beside);
    redis.push(t);
    commands.push(c);
    rig.enqueuer = None;
    std::thread::sleep(Duration::from_millis(300));
    idle.connections_c50 = rig.probes.first().unix_clients()?;
    drop(rig);

    let mut rig = RedisRig::start(
        Nodes::unix()?,
        paths,
        cache,
        &processor,
        CONCURRENCIES[0],
        true,
    )?;
    let redis_version = rig.probes.first().server_version()?;
    let (latency, delayed) = rig.latencies(s)?;
    let peers = peers.finish(s);
    Ok(Results {
        settings: s.describe(),
        redis_version,
        redis,
        memory,
        commands,
        latency,
        delayed,
        idle,
        rss,
        peers,
    })
}

/// Starts a memory-backend host with both processors once, so that their compiled artifacts
/// are in the cache before anything is measured.
pub fn prime_cache(paths: &Paths, cache: &Path, noop: &Path, processor: &Path) -> Result<()> {
    let mut m = manifest_text(None, "noop", noop, 5, false);
    m.push_str(&format!(
        "[component.proc]\nsource = {:?}\n\n[[trigger.queue]]\nqueue = \"prime\"\ncomponent = \"proc\"\n",
        processor.display().to_string()
    ));
    drop(Llmchat::start(&paths.llmchat, &m, cache)?);
    Ok(())
}

/// A manifest with the 3 queues, all processed by `component` at `concurrency`; enough pool
/// slots for every job that may run at once (the default 32 is fewer than 3 × 50). `redis`:
/// the URL and `[redis] replica_acks` (0, the default, leaves it out). `keep_completed`:
/// each queue keeps its finished jobs as [`peers::KEEP_COMPLETED`] says.
fn manifest_text(
    redis: Option<(&str, u32)>,
    component: &str,
    wasm: &Path,
    concurrency: u32,
    keep_completed: bool,
) -> String {
    let mut m = String::new();
    if let Some((url, replica_acks)) = redis {
        let _ = writeln!(m, "[redis]\nurl = {url:?}");
        if replica_acks > 0 {
            let _ = writeln!(m, "replica_acks = {replica_acks}");
        }
        m.push('\n');
    }
    let instances = (QUEUES.len() as u32 * concurrency).max(32);
    let _ = writeln!(
        m,
        "[component.{component}]\nsource = {:?}\nmax_instances = {instances}\n",
        wasm.display().to_string()
    );
    for q in QUEUES {
        let _ = writeln!(
            m,
            "[[trigger.queue]]\nqueue = {q:?}\ncomponent = {component:?}\nconcurrency = {concurrency}"
        );
        if keep_completed {
            let _ = writeln!(m, "{}", peers::KEEP_COMPLETED);
        }
        m.push('\n');
    }
    m
}

/// Whether this host's manifest accepts [`peers::KEEP_COMPLETED`] in `[[trigger.queue]]`:
/// `Err` with the manifest's complaint when it does not (yet).
pub fn accepts_keep_completed(wasm: &Path) -> std::result::Result<(), String> {
    let text = manifest_text(Some(("redis://127.0.0.1:6379", 0)), "noop", wasm, 5, true);
    tempfile::tempdir()
        .context("creating a temp folder")
        .and_then(|dir| load_manifest(dir.path(), &text))
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

fn load_manifest(dir: &Path, text: &str) -> Result<Manifest> {
    let file = dir.join("llmchat.toml");
    std::fs::write(&file, text).with_context(|| format!("writing `{}`", file.display()))?;
    Manifest::load(&file)
}

/// A trivial job of 261 bytes, the size of BullMQ's in the peer figures.
fn trivial_payload(i: usize) -> String {
    format!(r#"{{"n":"{i:08}","pad":"{}"}}"#, "x".repeat(236))
}

/// `per_queue` jobs on each queue, interleaved, [`ENQUEUE_IN_FLIGHT`] at a time; how long
/// each enqueue call took, in ms, from its first poll to its answer.
async fn fill(queues: &Queues, per_queue: usize, payload: fn(usize) -> String) -> Result<Vec<f64>> {
    let n = QUEUES.len();
    let results: Vec<_> = stream::iter(0..per_queue * n)
        .map(|i| async move {
            let started = Instant::now();
            let r = queues
                .enqueue(QUEUES[i % n], payload(i), EnqueueRequest::default())
                .await;
            (r, started.elapsed())
        })
        .buffer_unordered(ENQUEUE_IN_FLIGHT)
        .collect()
        .await;
    let mut calls_ms = Vec::with_capacity(results.len());
    for (r, took) in results {
        r.context("enqueueing a benchmark job")?;
        calls_ms.push(took.as_secs_f64() * 1e3);
    }
    Ok(calls_ms)
}

fn memory_throughput(
    wasm: &Path,
    cache: &Path,
    concurrency: u32,
    s: &Settings,
) -> Result<Throughput> {
    let dir = tempfile::tempdir().context("creating a temp folder")?;
    let manifest = load_manifest(
        dir.path(),
        &manifest_text(None, "noop", wasm, concurrency, false),
    )?;
    let engine = Arc::new(ComponentEngine::new(
        PoolSizing::from_manifest(&manifest),
        Some(cache.to_path_buf()),
        CompilerOptions::with_program(env!("CARGO_BIN_EXE_llmchat")),
        llmchat_host::runtime::link,
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let registry = rt.block_on(Registry::load(&engine, &manifest))?;
    let mut rounds = Vec::new();
    let (mut errors, mut stalled) = (0, 0);
    let mut until_stall = Vec::new();
    for round in 0..=s.rounds {
        let per_queue = if round == 0 {
            s.warm_up_per_queue
        } else {
            s.per_queue
        };
        let jobs = (per_queue * QUEUES.len()) as u64;
        let queues = Arc::new(Queues::new(
            Arc::new(MemoryQueue::new()),
            &manifest.triggers.queue,
        ));
        let services = Arc::new(Services {
            kv: Arc::new(MemoryKv::new(1_000, 1 << 20, 64 << 10)),
            llm: Arc::new(EchoProvider::new("echo", None)),
            queues: queues.clone(),
            redis: None,
            llm_gate: Arc::new(llmchat_host::limits::llm::LlmGate::new(
                &Default::default(),
                Default::default(),
                Default::default(),
                Arc::new(llmchat_host::limits::local::LocalRateLimiter::new(1_000)),
            )),
        });
        rt.block_on(fill(&queues, per_queue, trivial_payload))?;
        let metrics = Arc::new(llmchat_host::metrics::Metrics::new(queues.clone(), None));
        let worker = Arc::new(QueueWorker::new(
            queues.clone(),
            engine.clone(),
            services,
            metrics,
            Arc::new(llmchat_host::limits::local::LocalRateLimiter::new(1_000)),
        ));
        worker.apply(&manifest.triggers.queue, &registry)?;
        let shutdown = CancellationToken::new();
        let mut progress = Progress::new(jobs);
        let running = {
            let (worker, shutdown) = (worker.clone(), shutdown.clone());
            rt.spawn(async move { worker.run(shutdown, Duration::from_secs(5)).await })
        };
        let (counters, done) = rt.block_on(async {
            loop {
                let mut c = Counters::default();
                for q in QUEUES {
                    let stats = queues.backend().stats(q).await?;
                    c.processed += stats.processed;
                    c.failed += stats.failed;
                    c.retried += stats.retried;
                }
                match progress.step(c.processed + c.failed) {
                    Step::Running => llmchat_host::timers::sleep(POLL).await,
                    Step::Done => return anyhow::Ok((c, true)),
                    Step::Stalled => return anyhow::Ok((c, false)),
                }
            }
        })?;
        let elapsed = progress.started.elapsed();
        shutdown.cancel();
        rt.block_on(running).context("the queue worker panicked")?;
        let left = jobs - counters.processed - counters.failed;
        if !done {
            eprintln!(
                "  memory, 3 × concurrency {concurrency}: STALLED with {left} of {jobs} jobs left \
                 ({} done in {:.3} s, then nothing for {STALL:?})",
                counters.processed,
                elapsed.as_secs_f64()
            );
        }
        if round > 0 {
            rounds.push(counters.processed as f64 / elapsed.as_secs_f64());
            errors += counters.failed + counters.retried;
            stalled += left;
            if !done {
                until_stall.push(progress.rate_until_last_progress());
            }
        }
    }
    Ok(Throughput {
        concurrency,
        rounds,
        errors,
        stalled,
        until_stall,
        redis: None,
        cpu_us: None,
        replicas_cpu_us: 0.0,
        enqueue: None,
    })
}

/// Enqueues through the host library on the Redis the host uses, as a component would.
struct Enqueuer {
    rt: tokio::runtime::Runtime,
    queues: Queues,
}

impl Enqueuer {
    fn connect(manifest: &Manifest, url: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the enqueuer's runtime")?;
        let names: Vec<String> = QUEUES.iter().map(|q| q.to_string()).collect();
        let queues = rt.block_on(async {
            let pool = Arc::new(RedisPool::new(&manifest.redis, url)?);
            let backend = RedisQueue::connect(pool, &names).await?;
            anyhow::Ok(Queues::new(Arc::new(backend), &manifest.triggers.queue))
        })?;
        Ok(Self { rt, queues })
    }

    /// [`fill`], and how long it took in all.
    fn fill(&self, per_queue: usize, payload: fn(usize) -> String) -> Result<(Vec<f64>, Duration)> {
        let started = Instant::now();
        let calls_ms = self.rt.block_on(fill(&self.queues, per_queue, payload))?;
        Ok((calls_ms, started.elapsed()))
    }

    /// One enqueue: the job's id, and how long the call took.
    fn one(&self, queue: &str, payload: &str) -> Result<(String, Duration)> {
        let started = Instant::now();
        let enqueued = self.rt.block_on(self.queues.enqueue(
            queue,
            payload.to_string(),
            EnqueueRequest::default(),
        ))?;
        Ok((enqueued.id().to_string(), started.elapsed()))
    }
}

/// What one round on the redis host measured.
struct Round {
    /// CPU time the host and redis-server used from the resume to the end (on a cluster,
    /// every node, and the replicas among them).
    cpu_host: Duration,
    cpu_redis: Duration,
    cpu_replicas: Duration,
    /// For a stalled round: jobs per second until its last progress.
    until_stall: Option<f64>,
    /// Jobs left when the round stalled (0 when it completed).
    stalled: u64,
    elapsed: Duration,
    counters: Counters,
    /// Every command Redis ran, script internals included, the bench's own taken out.
    all_commands: u64,
    calls: BTreeMap<String, u64>,
    /// Each enqueue call's time, ms, and the whole fill's.
    enqueue_ms: Vec<f64>,
    enqueue_elapsed: Duration,
}

/// The measured rounds of one configuration, added up.
#[derive(Default)]
pub struct Tally {
    rounds: Vec<f64>,
    errors: u64,
    stalled: u64,
    jobs: u64,
    all: u64,
    cpu_host: Duration,
    cpu_redis: Duration,
    cpu_replicas: Duration,
    until_stall: Vec<f64>,
    calls: BTreeMap<String, u64>,
    enqueue_rounds: Vec<f64>,
    enqueue_ms: Vec<f64>,
}

impl Tally {
    pub fn finish(self, concurrency: u32) -> Throughput {
        let jobs = self.jobs.max(1) as f64;
        Throughput {
            concurrency,
            rounds: self.rounds,
            errors: self.errors,
            stalled: self.stalled,
            until_stall: self.until_stall,
            redis: Some((
                self.all as f64 / jobs,
                self.calls
                    .into_iter()
                    .map(|(name, n)| (name, n as f64 / jobs))
                    .collect(),
            )),
            cpu_us: Some((
                crate::micros(self.cpu_host) / jobs,
                crate::micros(self.cpu_redis) / jobs,
            )),
            replicas_cpu_us: crate::micros(self.cpu_replicas) / jobs,
            enqueue: Some(EnqueueLoad {
                rounds: self.enqueue_rounds,
                calls_ms: self.enqueue_ms,
            }),
        }
    }
}

/// A [`RedisRig`] (owned or borrowed) as an arm of an interleaved comparison, its measured
/// rounds added up in a [`Tally`].
pub struct RigArm<R: BorrowMut<RedisRig>> {
    rig: R,
    tally: Tally,
}

impl<R: BorrowMut<RedisRig>> RigArm<R> {
    pub fn new(rig: R) -> Self {
        Self {
            rig,
            tally: Tally::default(),
        }
    }

    /// The measured rounds' figures.
    pub fn finish(self, concurrency: u32) -> Throughput {
        self.tally.finish(concurrency)
    }
}

impl<R: BorrowMut<RedisRig>> interleave::Arm for RigArm<R> {
    fn warm_up(&mut self, s: &Settings) -> Result<()> {
        self.rig.borrow_mut().warm_up(s)
    }

    fn measured_round(&mut self, s: &Settings) -> Result<()> {
        self.rig.borrow_mut().measured_round(s, &mut self.tally)
    }
}

/// Where a [`RedisRig`]'s Redis runs.
pub enum Nodes {
    /// One private `redis-server`; the host and the enqueuer reach it over its unix socket
    /// (`unix`, the (q) figures) or, like a cluster, over loopback TCP.
    Single { server: RedisServer, unix: bool },
    /// The private 3-master cluster, over loopback TCP (a cluster has no unix sockets).
    Cluster(RedisCluster),
}

impl Nodes {
    /// One `redis-server` on a unix socket, as the (q) benchmarks use.
    pub fn unix() -> Result<Self> {
        Ok(Self::Single {
            server: RedisServer::start()?,
            unix: true,
        })
    }

    /// What the host and the enqueuer connect to.
    fn url(&self) -> String {
        match self {
            Self::Single { server, unix: true } => server.unix_url(),
            Self::Single { server, .. } => format!("redis://{}", server.tcp_addr()),
            Self::Cluster(cluster) => cluster.seeds(),
        }
    }

    fn probes(&self) -> Result<Probes> {
        match self {
            Self::Single { server, .. } => Probes::single(server.tcp_addr()),
            Self::Cluster(cluster) => Probes::cluster(&cluster.masters()?, &QUEUES),
        }
    }

    /// CPU time of every `redis-server`, and of the replicas among them (on a cluster).
    fn cpu_time(&self) -> Result<(Duration, Duration)> {
        match self {
            Self::Single { server, .. } => Ok((server.process.cpu_time()?, Duration::ZERO)),
            Self::Cluster(cluster) => cluster.cpu_time(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Single { .. } => "redis",
            Self::Cluster(_) => "cluster",
        }
    }
}

/// A `llmchat up` on a private Redis, with the bench's probes and enqueuer.
pub struct RedisRig {
    // Dropped in this order: the host before its Redis.
    pub host: Llmchat,
    enqueuer: Option<Enqueuer>,
    pub probes: Probes,
    manifest: Manifest,
    url: String,
    rss_warm: u64,
    redis: Nodes,
    /// `[redis] replica_acks` of the host and the enqueuer.
    replica_acks: u32,
    keep_completed: bool,
    _dir: tempfile::TempDir,
}

/// How a [`RedisRig`]'s host is set up beyond its queues and their concurrency.
#[derive(Clone, Copy, Default)]
pub struct RigOptions {
    /// Keyspace notifications on, and `fixture-processor` as the component: the latency
    /// benchmarks.
    pub keyspace_events: bool,
    /// `[redis] replica_acks` (0 leaves it out).
    pub replica_acks: u32,
    /// Each queue keeps its finished jobs ([`peers::KEEP_COMPLETED`]).
    pub keep_completed: bool,
}

impl RedisRig {
    /// Starts `llmchat up` on `redis` with `wasm` processing the 3 queues at `concurrency`;
    /// `keyspace_events` turns on the notifications the latency benchmarks read.
    pub fn start(
        redis: Nodes,
        paths: &Paths,
        cache: &Path,
        wasm: &Path,
        concurrency: u32,
        keyspace_events: bool,
    ) -> Result<Self> {
        Self::start_with_acks(redis, paths, cache, wasm, concurrency, keyspace_events, 0)
    }

    /// [`RedisRig::start`] with `[redis] replica_acks` set in the host's manifest, which the
    /// bench's enqueuer (the host library, from the same manifest) uses too.
    pub fn start_with_acks(
        redis: Nodes,
        paths: &Paths,
        cache: &Path,
        wasm: &Path,
        concurrency: u32,
        keyspace_events: bool,
        replica_acks: u32,
    ) -> Result<Self> {
        let options = RigOptions {
            keyspace_events,
            replica_acks,
            keep_completed: false,
        };
        Self::start_with(redis, paths, cache, wasm, concurrency, options)
    }

    /// [`RedisRig::start`] with every option.
    pub fn start_with(
        redis: Nodes,
        paths: &Paths,
        cache: &Path,
        wasm: &Path,
        concurrency: u32,
        options: RigOptions,
    ) -> Result<Self> {
        let RigOptions {
            keyspace_events,
            replica_acks,
            keep_completed,
        } = options;
        let mut probes = redis.probes()?;
        if keyspace_events {
            probes.config_set("notify-keyspace-events", "K$")?;
        }
        let url = redis.url();
        // `proc` for the processor that records, whose kv keys the latency events match.
        let component = if keyspace_events { "proc" } else { "noop" };
        let text = manifest_text(
            Some((&url, replica_acks)),
            component,
            wasm,
            concurrency,
            keep_completed,
        );
        let dir = tempfile::tempdir().context("creating a temp folder")?;
        let manifest = load_manifest(dir.path(), &text)?;
        let host = Llmchat::start_with_env(&paths.llmchat, &text, cache, &[], &["REDIS_URL"])?;
        Ok(Self {
            host,
            enqueuer: None,
            probes,
            manifest,
            url,
            rss_warm: 0,
            redis,
            replica_acks,
            keep_completed,
            _dir: dir,
        })
    }

    /// Stops the host and hands its Redis back, with whatever the host left in it (the
    /// counters are read as differences, so the next rig may share it).
    pub fn stop(self) -> Nodes {
        let Self {
            host,
            enqueuer,
            redis,
            ..
        } = self;
        drop(enqueuer);
        drop(host);
        redis
    }

    pub fn label(&self) -> &'static str {
        match (self.redis.label(), self.replica_acks, self.keep_completed) {
            (_, 0, true) => "redis+keep_completed",
            (label, 0, false) => label,
            ("cluster", _, _) => "cluster+acks",
            _ => "redis+acks",
        }
    }

    pub fn concurrency(&self) -> u32 {
        self.manifest.triggers.queue[0].concurrency
    }

    fn enqueuer(&mut self) -> Result<&Enqueuer> {
        if self.enqueuer.is_none() {
            self.enqueuer = Some(Enqueuer::connect(&self.manifest, &self.url)?);
        }
        self.enqueuer.as_ref().context("the enqueuer was just made")
    }

    fn counters(&mut self) -> Result<Counters> {
        self.probes.counters(&QUEUES.map(String::from))
    }

    /// After a stalled round: deletes the jobs still waiting in the streams, then waits
    /// until the jobs the host already holds are finished.
    fn drop_waiting(&mut self) -> Result<()> {
        self.probes.trim_streams(&QUEUES.map(String::from))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.counters()?.processed;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.counters()?.processed;
            if now == last {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the host kept finishing jobs after their streams were emptied");
            }
            last = now;
        }
    }

    /// Freezes the host, enqueues `per_queue` trivial jobs per queue, resumes it and waits
    /// until all are processed. With `monitor`, returns what it saw before the resume and at
    /// the end.
    fn round(
        &mut self,
        per_queue: usize,
        mut monitor: Option<&mut Monitor>,
    ) -> Result<(Round, Option<[Seen; 3]>)> {
        let jobs = (per_queue * QUEUES.len()) as u64;
        let before = self.counters()?;
        pause(&self.host.process, true)?;
        let seen_start = match monitor.as_deref_mut() {
            Some(m) => Some(m.sync(self.probes.first())?),
            None => None,
        };
        let stats_before = self.probes.stats()?;
        let (enqueue_ms, enqueue_elapsed) = self.enqueuer()?.fill(per_queue, trivial_payload)?;
        let seen_enqueued = match monitor.as_deref_mut() {
            Some(m) => Some(m.sync(self.probes.first())?),
            None => None,
        };
        let cpu_before = (self.host.process.cpu_time()?, self.redis.cpu_time()?);
        let mut progress = Progress::new(jobs);
        pause(&self.host.process, false)?;
        let (after, done) = loop {
            let c = self.counters()?;
            match progress.step(c.processed + c.failed - before.processed - before.failed) {
                Step::Running => std::thread::sleep(POLL),
                Step::Done => break (c, true),
                Step::Stalled => break (c, false),
            }
        };
        let elapsed = progress.started.elapsed();
        let cpu_host = self.host.process.cpu_time()? - cpu_before.0;
        let redis_after = self.redis.cpu_time()?;
        let cpu_redis = redis_after.0 - cpu_before.1.0;
        let cpu_replicas = redis_after.1 - cpu_before.1.1;
        let left = jobs - (after.processed + after.failed - before.processed - before.failed);
        if !done {
            eprintln!(
                "  {}: STALLED with {left} of {jobs} jobs left ({} done in {:.3} s, then \
                 nothing for {STALL:?}); dropping them",
                self.label(),
                after.processed - before.processed,
                elapsed.as_secs_f64()
            );
            self.drop_waiting()?;
        }
        let stats_after = self.probes.stats()?;
        let seen_done = match monitor {
            Some(m) => Some(m.sync(self.probes.first())?),
            None => None,
        };
        let seen = match (seen_start, seen_enqueued, seen_done) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        };
        let mut calls = stats_before.calls_since(&stats_after);
        // The bench's own: one INFO, and one HMGET per queue per poll.
        for own in ["info", "hmget", "echo"] {
            calls.remove(own);
        }
        Ok((
            Round {
                cpu_host,
                cpu_redis,
                cpu_replicas,
                stalled: left,
                until_stall: (!done).then(|| progress.rate_until_last_progress()),
                elapsed,
                counters: Counters {
                    processed: after.processed - before.processed,
                    failed: after.failed - before.failed,
                    retried: after.retried - before.retried,
                },
                all_commands: stats_before.others_since(&stats_after),
                calls,
                enqueue_ms,
                enqueue_elapsed,
            },
            seen,
        ))
    }

    /// Warm-up, a `MONITOR`ed round, then the measured rounds, interleaved with those of
    /// `peers` (BullMQ, llmchat keeping completed jobs), who warm up after this rig.
    fn throughput(
        &mut self,
        s: &Settings,
        peers: &mut [&mut dyn interleave::Arm],
    ) -> Result<(Throughput, Commands)> {
        let concurrency = self.concurrency();
        self.warm_up(s)?;
        for peer in peers.iter_mut() {
            peer.warm_up(s)?;
        }

        let mut monitor = Monitor::start(self.probes.addrs()[0])?;
        let (round, seen) = self.round(s.monitor_per_queue, Some(&mut monitor))?;
        drop(monitor);
        let [start, enqueued, done] = seen.context("the monitored round saw nothing")?;
        let mut enqueue = 0;
        let mut host = done.clients_since(&start);
        for (name, n) in enqueued.clients_since(&start) {
            // While the host is frozen only the enqueuer sends (its scripts run by SHA; a
            // read the host had already blocked on may be served meanwhile and is the host's).
            if matches!(name.as_str(), "evalsha" | "eval" | "script|load" | "script") {
                enqueue += n;
                if let Some(h) = host.get_mut(&name) {
                    *h -= n;
                }
            }
        }
        host.retain(|_, n| *n > 0);
        let commands = Commands {
            jobs: round.counters.processed.max(1),
            enqueue,
            host,
            lua: done.lua - start.lua,
        };
        eprintln!(
            "  redis, 3 × concurrency {concurrency}: {:.2} commands/job sent (enqueue {}, host {:?}, {} inside scripts)",
            commands.per_job(),
            commands.enqueue,
            commands.host,
            commands.lua
        );

        let mut own = RigArm::new(self);
        let mut arms: Vec<&mut dyn interleave::Arm> = vec![&mut own];
        arms.extend(
            peers
                .iter_mut()
                .map(|p| &mut **p as &mut dyn interleave::Arm),
        );
        interleave::rounds(&mut arms, s)?;
        Ok((own.finish(concurrency), commands))
    }

    /// The warm-up round, and the host's RSS after it.
    pub fn warm_up(&mut self, s: &Settings) -> Result<()> {
        self.round(s.warm_up_per_queue, None)?;
        self.rss_warm = self.host.process.rss()?;
        Ok(())
    }

    /// One measured round of [`Settings::per_queue`] jobs per queue, added to `tally`.
    pub fn measured_round(&mut self, s: &Settings, tally: &mut Tally) -> Result<()> {
        let (r, _) = self.round(s.per_queue, None)?;
        let rate = r.counters.processed as f64 / r.elapsed.as_secs_f64();
        let n = r.counters.processed.max(1) as f64;
        eprintln!(
            "    {} round: {} jobs in {:.3} s = {rate:.0} jobs/s, {:.2} commands/job with script \
             internals, CPU/job: host {:.1} µs, redis {:.1} µs (replicas {:.1}); enqueued at \
             {:.0}/s, call p50 {:.2} ms, p99 {:.2} ms",
            self.label(),
            r.counters.processed,
            r.elapsed.as_secs_f64(),
            r.all_commands as f64 / n,
            crate::micros(r.cpu_host) / n,
            crate::micros(r.cpu_redis) / n,
            crate::micros(r.cpu_replicas) / n,
            r.enqueue_ms.len() as f64 / r.enqueue_elapsed.as_secs_f64().max(1e-9),
            crate::percentile(&r.enqueue_ms, 50.0),
            crate::percentile(&r.enqueue_ms, 99.0)
        );
        tally.rounds.push(rate);
        tally.errors += r.counters.failed + r.counters.retried;
        tally.stalled += r.stalled;
        tally.until_stall.extend(r.until_stall);
        tally.cpu_host += r.cpu_host;
        tally.cpu_redis += r.cpu_redis;
        tally.cpu_replicas += r.cpu_replicas;
        tally.jobs += r.counters.processed;
        tally.all += r.all_commands;
        tally
            .enqueue_rounds
            .push(r.enqueue_ms.len() as f64 / r.enqueue_elapsed.as_secs_f64().max(1e-9));
        tally.enqueue_ms.extend(r.enqueue_ms);
        for (name, n) in r.calls {
            *tally.calls.entry(name).or_default() += n;
        }
        Ok(())
    }

    /// Commands and connections over a quiet `window`.
    fn idle(&mut self, window: Duration) -> Result<Idle> {
        let mut monitor = Monitor::start(self.probes.addrs()[0])?;
        let seen_start = monitor.sync(self.probes.first())?;
        let stats_start = self.probes.stats()?;
        let started = Instant::now();
        std::thread::sleep(window);
        let stats_end = self.probes.stats()?;
        let secs = started.elapsed().as_secs_f64();
        let seen_end = monitor.sync(self.probes.first())?;
        Ok(Idle {
            secs,
            all_per_sec: stats_start.others_since(&stats_end) as f64 / secs,
            sent: seen_end.clients_since(&seen_start),
            connections: self.probes.first().unix_clients()?,
            connections_c50: 0,
        })
    }

    /// Keyspace notifications of the processor's kv writes, from every server (on a
    /// cluster, each master notifies of its own keys only).
    pub fn events(&self) -> Result<KeyspaceEvents> {
        KeyspaceEvents::start(self.probes.addrs(), EVENT_KEYS)
    }

    /// Enqueue→start at 500 jobs/s (after 30 warm-up jobs), read from `events`.
    pub fn start_latency(&mut self, s: &Settings, events: &KeyspaceEvents) -> Result<Latency> {
        let warm_up = 30;
        self.enqueuer()?
            .fill(warm_up / QUEUES.len(), |_| RECORD.to_string())?;
        if events.wait_for(warm_up, Duration::from_secs(30))? < warm_up {
            bail!(
                "the warm-up jobs never wrote to kv:\n{}",
                self.host.process.log()
            );
        }
        events.take();

        let enqueuer = self.enqueuer()?;
        let mut sent = Vec::with_capacity(s.latency_jobs);
        let mut calls_ms = Vec::with_capacity(s.latency_jobs);
        let started = Instant::now();
        for i in 0..s.latency_jobs {
            sleep_until(started + LATENCY_PACE * i as u32);
            let at = Instant::now();
            let (id, took) = enqueuer.one(QUEUES[i % QUEUES.len()], RECORD)?;
            sent.push((id, at));
            calls_ms.push(took.as_secs_f64() * 1e3);
        }
        events.wait_for(s.latency_jobs, Duration::from_secs(10))?;
        let mut latency = match_events(&sent, events.take());
        latency.calls_ms = calls_ms;
        eprintln!(
            "  {}: enqueue→start at 500/s: {} jobs, p50 {:.2} ms, p99 {:.2} ms, {} missing; \
             the enqueue call p50 {:.2} ms, p99 {:.2} ms",
            self.label(),
            latency.jobs,
            crate::percentile(&latency.samples_ms, 50.0),
            crate::percentile(&latency.samples_ms, 99.0),
            latency.missing(),
            crate::percentile(&latency.calls_ms, 50.0),
            crate::percentile(&latency.calls_ms, 99.0)
        );
        Ok(latency)
    }

    /// Enqueue→start at 500 jobs/s, then the lateness of delayed jobs.
    fn latencies(mut self, s: &Settings) -> Result<(Latency, Latency)> {
        let events = self.events()?;
        let latency = self.start_latency(s, &events)?;
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building an HTTP client")?;
        let token = std::env::var("LLMCHAT_ADMIN_TOKEN").ok();
        let body = serde_json::json!({ "payload": { "action": "record" }, "delay": "1s" });
        let mut due = Vec::with_capacity(s.delayed_jobs);
        let started = Instant::now();
        for i in 0..s.delayed_jobs {
            sleep_until(started + DELAYED_PACE * i as u32);
            let url = self
                .host
                .url(&format!("/admin/queues/{}/jobs", QUEUES[i % QUEUES.len()]));
            let at = Instant::now();
            let mut request = client.post(&url).json(&body);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request.send().with_context(|| {
                format!("POST {url}; the host's log:\n{}", self.host.process.log())
            })?;
            let status = response.status();
            let text = response.text().unwrap_or_default();
            if !status.is_success() {
                bail!("POST {url} answered {status}: {text}");
            }
            let reply: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("POST {url} answered {text:?}"))?;
            let id = reply["id"]
                .as_str()
                .with_context(|| format!("no job id in {text:?}"))?;
            due.push((id.to_string(), at + DELAY));
        }
        events.wait_for(s.delayed_jobs, DELAY + Duration::from_secs(10))?;
        let delayed = match_events(&due, events.take());
        eprintln!(
            "  delayed-job lateness: {} jobs, p50 {:.2} ms, p99 {:.2} ms, {} missing",
            delayed.jobs,
            crate::percentile(&delayed.samples_ms, 50.0),
            crate::percentile(&delayed.samples_ms, 99.0),
            delayed.missing()
        );
        Ok((latency, delayed))
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// For each (job id, reference instant), the ms from the reference to the job's first kv
/// write (negative when it came earlier).
fn match_events(sent: &[(String, Instant)], events: Vec<(String, Instant)>) -> Latency {
    let mut first: HashMap<String, Instant> = HashMap::new();
    for (key, at) in events {
        if let Some((_, id)) = key.rsplit_once("runs:") {
            first.entry(id.to_string()).or_insert(at);
        }
    }
    let samples_ms = sent
        .iter()
        .filter_map(|(id, reference)| {
            let at = *first.get(id)?;
            Some(if at >= *reference {
                (at - *reference).as_secs_f64() * 1e3
            } else {
                -((*reference - at).as_secs_f64() * 1e3)
            })
        })
        .collect();
    Latency {
        jobs: sent.len(),
        samples_ms,
        calls_ms: Vec::new(),
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}
