//! (q) BullMQ beside llmchat, in the same run: `host/benches/bullmq/bench.mjs` (BullMQ and
//! ioredis pinned exactly by its `package.json` and `package-lock.json`) on a private
//! `redis-server` started like llmchat's ([`RedisServer`]), with llmchat's workload: 3 queues,
//! one Worker each at concurrency 5 or 50, 261-byte jobs enqueued first, then processed.
//!
//! Why here and not a stored table: a ratio against figures from another day on another
//! machine says nothing (the 2-core machine's Redis throughput alone moves ±25% between
//! runs). So every llmchat/BullMQ ratio comes from this run, BullMQ's rounds interleaved
//! with llmchat's ([`crate::interleave`]), never at the same moment.
//!
//! - **Throughput** ([`Arm`]): one `bench.mjs --step` per concurrency and retention, driven a
//!   round at a time over stdin/stdout (its warm-up, then [`Settings::rounds`] rounds); each
//!   round starts with FLUSHALL, so arms and rounds never see each other's keys.
//! - **Enqueue→start** ([`latency`]): 500 jobs/s, each `queue.add` awaited, to the first line
//!   of the processor, after llmchat's latency rows (one after the other).
//! - **Setup** ([`Setup::prepare`]): `npm ci` from the lock file when `node_modules` is
//!   missing or older than it (`just bench` does it first, in its `bench-deps` recipe). With
//!   no `node` or `npm`, or when an arm fails, the rows say "not run" and why, and the rest
//!   of the bench goes on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::interleave;
use crate::process::{ChildGuard, RedisServer};
use crate::queues::Settings;

/// How long one round (FLUSHALL, enqueue, processing) may take before the arm is dropped;
/// bench.mjs itself fails a round after 10 s without progress.
const ROUND_DEADLINE: Duration = Duration::from_secs(120);

/// Why a configuration has no figures ("node not installed", the script's error...).
pub type Outcome<T> = std::result::Result<T, String>;

/// What BullMQ keeps of finished jobs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Retention {
    /// `removeOnComplete: true, removeOnFail: true`: nothing, as llmchat by default.
    Remove,
    /// `{ count: 1000, age: 3600 }` for both, as llmchat's `keep_completed = { count = 1000,
    /// age = "1h" }`.
    Keep,
}

impl Retention {
    pub const ALL: [Retention; 2] = [Retention::Remove, Retention::Keep];

    fn arg(self) -> &'static str {
        match self {
            Self::Remove => "remove",
            Self::Keep => "keep",
        }
    }

    /// BullMQ's setting.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Remove => "removeOnComplete: true",
            Self::Keep => "removeOnComplete: { count: 1000, age: 3600 }",
        }
    }

    /// What both sides keep, in words.
    pub fn keeping(self) -> &'static str {
        match self {
            Self::Remove => "keeping nothing",
            Self::Keep => "keeping 1,000 completed for 1 h",
        }
    }
}

/// `host/benches/bullmq/` with its packages installed.
pub struct Setup {
    dir: PathBuf,
}

impl Setup {
    /// Finds `node`, and runs `npm ci` when the packages are missing or older than the lock
    /// file. `Err`: why BullMQ cannot run here, for the report.
    pub fn prepare(repo: &Path) -> Outcome<Self> {
        let dir = repo.join("host/benches/bullmq");
        if !runs("node") {
            return Err("not run: node not installed (BullMQ's side needs Node.js and npm)".into());
        }
        let stamp = dir.join("node_modules/.package-lock.json");
        let lock = dir.join("package-lock.json");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&stamp).is_none() || modified(&stamp) < modified(&lock) {
            if !runs("npm") {
                return Err(format!(
                    "not run: npm not installed, and `{}` has no up-to-date node_modules",
                    dir.display()
                ));
            }
            eprintln!(
                "  BullMQ: npm ci --prefix {} (its package-lock.json)",
                dir.display()
            );
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
                .args(["--loglevel=error", "--prefix"])
                .arg(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("not run: starting npm ci: {e}"))?;
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim());
                return Err(format!("not run: npm ci failed ({})", out.status));
            }
        }
        Ok(Self { dir })
    }
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One configuration's figures, as bench.mjs prints them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    /// Jobs per second of each measured round.
    pub rounds: Vec<f64>,
    /// Their median.
    pub jobs_per_sec: f64,
    pub failed: u64,
    /// Every command Redis ran over the measured rounds, enqueue and script internals
    /// included (`total_commands_processed`), per job; and per command name.
    pub commands_per_job: f64,
    pub commands_per_job_by_name: BTreeMap<String, f64>,
    /// CPU time per job from the workers' start to the last completion, µs.
    pub cpu_node_us_per_job: f64,
    pub cpu_redis_us_per_job: f64,
    /// The versions that ran: BullMQ's, Node.js's, redis-server's.
    pub bullmq: String,
    pub node: String,
    pub redis_version: String,
}

/// Enqueue→start at 500 jobs/s, ms.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub jobs: u64,
    pub missing: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The `queue.add` call itself.
    pub call_p50_ms: f64,
    pub call_p99_ms: f64,
}

/// What bench.mjs prints after each round in `--step` mode.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoundLine {
    warm_up: bool,
    jobs: u64,
    seconds: f64,
    jobs_per_sec: f64,
    commands_per_job: f64,
    cpu_node_us_per_job: f64,
    cpu_redis_us_per_job: f64,
    enqueue_per_sec: f64,
}

/// A configuration's outcome.
pub struct Measured {
    pub concurrency: u32,
    pub retention: Retention,
    pub figures: Outcome<Throughput>,
}

/// Every BullMQ figure of the run.
pub struct Results {
    /// Per concurrency and retention.
    pub throughput: Vec<Measured>,
    pub latency: Outcome<Latency>,
}

impl Results {
    pub fn get(&self, concurrency: u32, retention: Retention) -> Outcome<&Throughput> {
        self.throughput
            .iter()
            .find(|m| m.concurrency == concurrency && m.retention == retention)
            .map_or_else(
                || Err("not run".to_string()),
                |m| m.figures.as_ref().map_err(Clone::clone),
            )
    }
}

/// One throughput configuration, a `bench.mjs --step` run a round at a time. A failure
/// never fails the bench: the arm stops and keeps the reason for its rows.
pub struct Arm {
    concurrency: u32,
    retention: Retention,
    state: Outcome<Script>,
}

impl Arm {
    pub fn start(
        setup: &Outcome<Setup>,
        redis: &RedisServer,
        concurrency: u32,
        retention: Retention,
        s: &Settings,
    ) -> Self {
        let state = match setup {
            // Printed once, by whoever found it.
            Err(reason) => Err(reason.clone()),
            Ok(setup) => {
                let mut args = throughput_args(concurrency, retention, s);
                args.push("--step".into());
                Script::spawn(setup, redis, &args)
                    .map_err(|e| stopped(&label(concurrency, retention), format!("not run: {e:#}")))
            }
        };
        Self {
            concurrency,
            retention,
            state,
        }
    }

    /// One round, warm-up or measured; on failure the arm stops for good.
    fn round(&mut self) {
        let Ok(script) = &mut self.state else {
            return;
        };
        let result = script
            .go()
            .and_then(|()| script.next::<RoundLine>(ROUND_DEADLINE));
        match result {
            Ok(r) => eprintln!(
                "    {}{}: {} jobs in {:.3} s = {:.0} jobs/s, {:.2} commands/job with script \
                 internals, CPU/job: node {:.1} µs, redis {:.1} µs; enqueued at {:.0}/s",
                label(self.concurrency, self.retention),
                if r.warm_up { ", warm-up" } else { " round" },
                r.jobs,
                r.seconds,
                r.jobs_per_sec,
                r.commands_per_job,
                r.cpu_node_us_per_job,
                r.cpu_redis_us_per_job,
                r.enqueue_per_sec
            ),
            Err(e) => {
                let why = format!("stopped: {e:#}");
                self.state = Err(stopped(&label(self.concurrency, self.retention), why));
            }
        }
    }

    /// The figures of the measured rounds (bench.mjs prints them after the last one).
    pub fn finish(self) -> Measured {
        let label = label(self.concurrency, self.retention);
        let figures = match self.state {
            Ok(mut script) => script
                .next::<Throughput>(ROUND_DEADLINE)
                .map_err(|e| stopped(&label, format!("stopped: {e:#}"))),
            Err(reason) => Err(reason),
        };
        Measured {
            concurrency: self.concurrency,
            retention: self.retention,
            figures,
        }
    }
}

impl interleave::Arm for Arm {
    fn warm_up(&mut self, _: &Settings) -> Result<()> {
        self.round();
        Ok(())
    }

    fn measured_round(&mut self, _: &Settings) -> Result<()> {
        self.round();
        Ok(())
    }
}

fn label(concurrency: u32, retention: Retention) -> String {
    format!("BullMQ {}, 3 × concurrency {concurrency}", retention.arg())
}

/// Prints why an arm stopped, whole, and returns its first line for the report.
fn stopped(label: &str, reason: String) -> String {
    eprintln!("  {label}: {reason}");
    first_line(&reason)
}

fn throughput_args(concurrency: u32, retention: Retention, s: &Settings) -> Vec<String> {
    [
        "--mode",
        "throughput",
        "--concurrency",
        &concurrency.to_string(),
        "--per-queue",
        &s.per_queue.to_string(),
        "--warm-up-per-queue",
        &s.warm_up_per_queue.to_string(),
        "--rounds",
        &s.rounds.to_string(),
        "--retention",
        retention.arg(),
    ]
    .map(String::from)
    .to_vec()
}

/// Enqueue→start of [`Settings::latency_jobs`] jobs at 500/s, 3 queues × concurrency 5,
/// keeping nothing (llmchat's latency row's configuration).
pub fn latency(setup: &Outcome<Setup>, redis: &RedisServer, s: &Settings) -> Outcome<Latency> {
    let setup = setup.as_ref().map_err(Clone::clone)?;
    let args = [
        "--mode",
        "latency",
        "--concurrency",
        "5",
        "--per-queue",
        "1",
        "--rounds",
        "1",
        "--latency-jobs",
        &s.latency_jobs.to_string(),
    ]
    .map(String::from);
    // 2 ms per job, and time for start-up and the stragglers.
    let deadline = Duration::from_millis(2 * s.latency_jobs as u64) + Duration::from_secs(60);
    let latency = Script::spawn(setup, redis, &args)
        .and_then(|mut script| script.next::<Latency>(deadline))
        .map_err(|e| format!("not run: {e:#}"));
    match &latency {
        Ok(l) => eprintln!(
            "  BullMQ: enqueue→start at 500/s: {} jobs, p50 {:.2} ms, p99 {:.2} ms, {} missing; \
             the add call p50 {:.2} ms, p99 {:.2} ms",
            l.jobs, l.p50_ms, l.p99_ms, l.missing, l.call_p50_ms, l.call_p99_ms
        ),
        Err(reason) => eprintln!("  BullMQ enqueue→start: {reason}"),
    }
    latency.map_err(|reason| first_line(&reason))
}

/// The first line of `text`: what a report cell can hold (the whole is printed to stderr).
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// A running `node bench.mjs`, its stdout read by a thread so that every read has a
/// deadline (a hung script stops its arm, not the bench).
struct Script {
    child: ChildGuard,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Script {
    fn spawn(setup: &Setup, redis: &RedisServer, args: &[String]) -> Result<Self> {
        let mut command = Command::new("node");
        command
            .current_dir(&setup.dir)
            .arg("bench.mjs")
            .arg("--redis")
            .arg(redis.socket_path())
            .args(args);
        let (child, stdin, stdout) = ChildGuard::spawn_piped("node bench.mjs", command)?;
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    /// Lets a `--step` script run its next round.
    fn go(&mut self) -> Result<()> {
        writeln!(self.stdin, "go")
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("bench.mjs is gone\nits stderr:\n{}", self.child.log()))
    }

    /// The next line of stdout, parsed.
    fn next<T: DeserializeOwned>(&mut self, deadline: Duration) -> Result<T> {
        let line = match self.lines.recv_timeout(deadline) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "bench.mjs said nothing for {deadline:?}\nits stderr:\n{}",
                    self.child.log()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let log = self.child.log();
                // bench.mjs prints `bench.mjs: <error stack>` when it fails.
                let why = log
                    .lines()
                    .rfind(|l| l.starts_with("bench.mjs: "))
                    .or_else(|| log.lines().rfind(|l| !l.trim().is_empty()))
                    .unwrap_or("no output");
                bail!("bench.mjs exited: {why}\nits stderr:\n{log}")
            }
        };
        serde_json::from_str(&line).with_context(|| format!("bench.mjs printed {line:?}"))
    }
}
