//! `just bench`: every benchmark of the llmchat host in one run, printed as one markdown table
//! (stdout and `target/bench-report.md`) with the targets and PASS/MISS per row.
//!
//! Why one run: the HTTP targets are ratios against `wasmtime serve` on the same machine, and
//! a 2-core machine drifts between runs, so every figure that is compared comes from the same
//! process, interleaved round by round.
//!
//! - [`invocation`]: (a) instantiate + call + drop of a trivial component through the host
//!   library, in-process: µs per invocation, invocations/s with 2 tasks, and where the time
//!   goes; the same for the `hello` wasi:http component.
//! - [`load`]: (b, c) `wrk` at 100 connections against the real `llmchat` binary and against
//!   `wasmtime serve` (defaults and tuned pooling) serving the same `hello.wasm`; and
//!   `ab -n 10000 -c 100` (no keep-alive, issue 13) against llmchat and tuned `wasmtime serve`.
//! - [`memory`]: (d) the host's RSS idle, and before and after 200 memory-bomb requests.
//! - [`queues`]: (q) queue throughput on the redis and memory backends, Redis commands per
//!   job, enqueue→start latency, delayed-job lateness, idle cost, and the host's RSS; beside
//!   the redis rounds, interleaved with them ([`interleave`], [`peers`]), BullMQ run in the
//!   same run on its own private Redis ([`bullmq`], `host/benches/bullmq/`), and llmchat
//!   keeping completed jobs.
//! - [`cluster`]: (k) the queue benchmark on one Redis and on a private 3-master Redis
//!   Cluster, rounds alternating: jobs/s and their ratio, Redis commands and CPU per job,
//!   enqueue→start (`LLMCHAT_BENCH_ONLY=cluster` runs it alone).
//! - [`soak`]: (s) 1,000,000 invocations (HTTP, queue jobs and schedule ticks mixed) against
//!   the real binary: RSS, tokio tasks and armed timers at 10k and at 1M, scheduler lag.
//! - [`deploy`]: (v) deploy → serving: how long after a `PUT /admin/components/{name}` the
//!   new version answers, on that host and on a second host sharing its Redis.
//! - [`polyglot`]: (p) the `hello` component in Rust, JS and Python on one host: compile
//!   and cached load times, per-invocation latency, req/s with `wrk`, and the host's RSS.
//! - [`process`]: the child processes (killed on drop, even on error) and small probes;
//!   [`redis_probe`]: what the queue benchmarks read from Redis.
//! - [`report`]: the table and the targets.
//!
//! `LLMCHAT_BENCH_WRK_SECS` shortens the `wrk` runs (default 10 s) and `LLMCHAT_BENCH_QUICK=1`
//! shrinks the queue benchmarks' job counts, for a quick trial; the figures for the README
//! come from the defaults. `LLMCHAT_BENCH_ONLY=queues` runs the queue benchmarks alone, and
//! `LLMCHAT_BENCH_ONLY=soak` the soak alone (`LLMCHAT_BENCH_QUICK=1`: 100k invocations;
//! `LLMCHAT_BENCH_SOAK_BACKEND=redis` puts its kv and queues on a private Redis), and
//! `LLMCHAT_BENCH_ONLY=deploy` the deploy benchmark alone, and `LLMCHAT_BENCH_ONLY=polyglot`
//! the polyglot benchmark alone, and `LLMCHAT_BENCH_ONLY=limits` the rate-limit check;
//! `LLMCHAT_BENCH_ONLY=llm` the LLM call's added latency.
//! `LLMCHAT_BENCH_ONLY=core` runs (a), (b, c) and (q) only: per-invocation cost, HTTP req/s
//! and jobs/s, the figures to compare two builds of the host by, one after the other.
//! - [`limits`]: (l) the cost of a rate-limit check, in memory and on Redis.
//! - [`llm`]: (o) the host's added latency per LLM call, plain and streamed.
//! - [`footprint`]: (m) the memory targets of issue 11: idle RSS after a first start and
//!   after a deploy, RSS under `wrk` load on the TypeScript and Python handlers and after it,
//!   and peak RSS under the `fields-bomb` attack, beside `wasmtime serve`'s
//!   (`LLMCHAT_BENCH_ONLY=memory` runs it alone).
//! - [`fairness`]: (f) `hello`'s latency, one sequential client, beside 32 attackers that
//!   keep log or kv floods running into their timeout, and alone (issue 11;
//!   `LLMCHAT_BENCH_ONLY=fairness` runs it alone, ~75 s).

mod bullmq;
mod cluster;
mod deploy;
mod fairness;
mod footprint;
mod interleave;
mod invocation;
mod limits;
mod llm;
mod load;
mod memory;
mod peers;
mod polyglot;
mod process;
mod queues;
mod redis_probe;
mod report;
mod soak;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use load::{Target, WrkSettings};
use process::{Llmchat, WasmtimeServe};

/// Pooling flags that make `wasmtime serve` fastest here (NOTES-wasmtime.md).
const SERVE_TUNED_FLAGS: &str =
    "pooling-allocator=y,pooling-memory-keep-resident=4194304,pooling-table-keep-resident=1048576";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let paths = Paths::discover()?;
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        eprintln!(
            "warning: RUST_BACKTRACE is set; traps capture host backtraces and skew the figures \
             (run `just bench`, which unsets it)"
        );
    }
    let wrk = WrkSettings::from_env()?;
    let queue_settings = queues::Settings::from_env()?;
    let soak_settings = soak::Settings::from_env()?;
    match std::env::var("LLMCHAT_BENCH_ONLY").as_deref() {
        Ok("queues") => {
            let work = tempfile::tempdir().context("creating a temp folder")?;
            let results =
                queues::measure(&paths, &work.path().join("artifact-cache"), &queue_settings)?;
            return write_report(&paths, &report::render_queues(&results));
        }
        Ok("cluster") => {
            eprintln!(
                "(k) Redis Cluster beside one Redis: {}",
                queue_settings.describe()
            );
            let work = tempfile::tempdir().context("creating a temp folder")?;
            let results =
                cluster::measure(&paths, &work.path().join("artifact-cache"), &queue_settings)?;
            return write_report(&paths, &report::render_cluster(&results));
        }
        Ok("soak") => {
            eprintln!("(s) soak: {}", soak_settings.describe());
            let work = tempfile::tempdir().context("creating a temp folder")?;
            let results =
                soak::measure(&paths, &work.path().join("artifact-cache"), &soak_settings)?;
            return write_report(&paths, &report::render_soak(&results));
        }
        Ok("deploy") => {
            eprintln!("(v) deploy → serving");
            let results = deploy::measure(&paths)?;
            return write_report(&paths, &report::render_deploy(&results));
        }
        Ok("limits") => {
            eprintln!("(l) rate-limit check: memory and Redis");
            let results = limits::measure()?;
            return write_report(&paths, &report::render_limits(&results));
        }
        Ok("llm") => {
            eprintln!("(o) the host's added latency per LLM call");
            let results = llm::measure()?;
            return write_report(&paths, &report::render_llm(&results));
        }
        Ok("memory") => {
            eprintln!("(m) memory targets: idle, deploy, load, attackers");
            let results = footprint::measure(&paths, &default_manifest(&paths)?)?;
            return write_report(&paths, &report::render_footprint(&results));
        }
        Ok("fairness") => {
            eprintln!(
                "(f) hello beside {} flooding attackers",
                fairness::ATTACKERS
            );
            let results = fairness::measure(&paths)?;
            return write_report(&paths, &report::render_fairness(&results));
        }
        Ok("polyglot") => {
            eprintln!("(p) polyglot: hello in Rust, JS and Python on one host");
            let results = polyglot::measure(&paths, &wrk)?;
            return write_report(&paths, &report::render_polyglot(&results));
        }
        _ => {}
    }

    eprintln!("(a) per-invocation overhead, in-process");
    let invocation = invocation::measure(&paths.repo.join("components/llmchat.toml"), &paths.wasm)?;

    let work = tempfile::tempdir().context("creating a temp folder")?;
    let cache = work.path().join("artifact-cache");
    let manifest = default_manifest(&paths)?;

    eprintln!("(b, c) HTTP load: {}", wrk.describe());
    let host = Llmchat::start(&paths.llmchat, &manifest, &cache)?;
    let cold_rss = memory::idle_rss(&host)?;
    let hello = paths.wasm.join("hello.wasm");
    let serve = match &paths.wasmtime {
        Some(w) => Some((
            WasmtimeServe::start(&w.path, &hello, None)?,
            WasmtimeServe::start(&w.path, &hello, Some(SERVE_TUNED_FLAGS))?,
        )),
        None => None,
    };
    let mut targets = vec![
        Target::new("llmchat GET /hello", host.url("/hello")),
        Target::new("llmchat GET /api/agents", host.url("/api/agents")),
    ];
    if let Some((default, tuned)) = &serve {
        targets.push(Target::new("wasmtime serve (defaults)", default.url("/")));
        targets.push(Target::new("wasmtime serve (tuned)", tuned.url("/")));
    }
    let mut loads = load::measure(&targets, &wrk)?.into_iter();
    let mut next = || loads.next().context("a load result per target");
    let (hello_load, agents_load) = (next()?, next()?);
    let serve_loads = match serve {
        Some(_) => Some((next()?, next()?)),
        None => None,
    };
    eprintln!(
        "(b, c) without keep-alive: ab -n {} -c 100, 3 rounds interleaved, medians",
        load::AB_REQUESTS
    );
    let mut ab_targets = vec![
        Target::new("llmchat GET /hello", host.url("/hello")),
        Target::new("llmchat GET /api/agents", host.url("/api/agents")),
    ];
    if let Some((_, tuned)) = &serve {
        ab_targets.push(Target::new("wasmtime serve (tuned)", tuned.url("/")));
    }
    let ab = match load::measure_ab(&ab_targets)? {
        Some(loads) => {
            let mut loads = loads.into_iter();
            let mut next = || loads.next().context("an ab result per target");
            Some(load::AbLoads {
                hello: next()?,
                agents: next()?,
                serve_tuned: serve.as_ref().map(|_| next()).transpose()?,
            })
        }
        None => None,
    };
    drop(serve);
    drop(host);
    if std::env::var("LLMCHAT_BENCH_ONLY").as_deref() == Ok("core") {
        eprintln!("(q) queues: {}", queue_settings.describe());
        let queues = queues::measure(&paths, &cache, &queue_settings)?;
        let serve = serve_loads.as_ref().map(|(_, tuned)| tuned);
        let report = report::render_core(
            &invocation,
            &hello_load,
            &agents_load,
            serve,
            ab.as_ref(),
            &queues,
        );
        return write_report(&paths, &report);
    }

    eprintln!("(d) RSS: idle, and around 200 memory-bomb requests");
    let memory = memory::measure(&paths, &manifest, &cache)?;

    eprintln!("(q) queues: {}", queue_settings.describe());
    let queues = queues::measure(&paths, &cache, &queue_settings)?;

    eprintln!(
        "(k) Redis Cluster beside one Redis: {}",
        queue_settings.describe()
    );
    let cluster = cluster::measure(&paths, &cache, &queue_settings)?;

    eprintln!("(s) soak: {}", soak_settings.describe());
    let soak = soak::measure(&paths, &cache, &soak_settings)?;

    eprintln!("(v) deploy → serving: one host, and two hosts on one Redis");
    let deploy = deploy::measure(&paths)?;

    eprintln!("(p) polyglot: hello in Rust, JS and Python on one host");
    let polyglot = polyglot::measure(&paths, &wrk)?;

    eprintln!("(l) rate-limit check: memory and Redis");
    let limits = limits::measure()?;

    eprintln!("(o) the host's added latency per LLM call");
    let llm = llm::measure()?;

    eprintln!("(m) memory targets: idle, deploy, load, attackers");
    let footprint = footprint::measure(&paths, &manifest)?;

    eprintln!(
        "(f) hello beside {} flooding attackers",
        fairness::ATTACKERS
    );
    let fairness = fairness::measure(&paths)?;

    let mut table = report::render(&report::Results {
        context: report::Context {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            wrk: wrk.describe(),
            wasmtime: paths.wasmtime.as_ref().map(|w| w.version.clone()),
        },
        invocation,
        hello: hello_load,
        agents: agents_load,
        serve: serve_loads,
        ab,
        cold_rss,
        memory,
        queues,
        cluster,
        soak,
        deploy,
        polyglot,
        footprint,
        fairness,
    });
    table.push_str(&report::render_limits(&limits));
    table.push_str(&report::render_llm(&llm));
    write_report(&paths, &table)
}

/// Prints the report and writes it to `target/bench-report.md`.
fn write_report(paths: &Paths, table: &str) -> Result<()> {
    println!("{table}");
    let out = paths.target.join("bench-report.md");
    std::fs::write(&out, table).with_context(|| format!("writing `{}`", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Where the benchmark finds what `just build` produced.
pub struct Paths {
    pub repo: PathBuf,
    /// The components' release folder.
    pub wasm: PathBuf,
    /// The `llmchat` binary cargo built for this bench (`target/release/llmchat`).
    pub llmchat: PathBuf,
    /// The cargo target folder, where the report is written.
    pub target: PathBuf,
    pub wasmtime: Option<Wasmtime>,
}

pub struct Wasmtime {
    pub path: PathBuf,
    /// `wasmtime --version`, e.g. `wasmtime 48.0.8 (…)`.
    pub version: String,
}

impl Paths {
    fn discover() -> Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("host/ has a parent folder")?
            .to_path_buf();
        let wasm = repo.join("components/target/wasm32-wasip2/release");
        for name in [
            "fixture_trivial",
            "hello",
            "chat",
            "fixture_memory_bomb",
            "fixture_noop_processor",
            "fixture_processor",
        ] {
            let file = wasm.join(format!("{name}.wasm"));
            if !file.is_file() {
                bail!(
                    "component `{}` is missing; run `just build` first",
                    file.display()
                );
            }
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .context("the cargo tmp folder has a parent")?
            .to_path_buf();
        Ok(Self {
            repo,
            wasm,
            llmchat: PathBuf::from(env!("CARGO_BIN_EXE_llmchat")),
            target,
            wasmtime: find_wasmtime(),
        })
    }
}

/// `wasmtime` from `~/.cargo/bin` or the `PATH`, if it runs.
fn find_wasmtime() -> Option<Wasmtime> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin/wasmtime"))
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("wasmtime"));
    candidates.into_iter().find_map(|path| {
        let out = Command::new(&path).arg("--version").output().ok()?;
        out.status.success().then(|| Wasmtime {
            version: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            path,
        })
    })
}

/// `components/llmchat.toml` with its relative `source` paths made absolute, so that it can
/// be written anywhere.
fn default_manifest(paths: &Paths) -> Result<String> {
    let file = paths.repo.join("components/llmchat.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading `{}`", file.display()))?;
    let relative = "source = \"target/wasm32-wasip2/release/";
    if !text.contains(relative) {
        bail!(
            "`{}` no longer has `{relative}…` sources; update the bench",
            file.display()
        );
    }
    // Every source is under `components/target/` (Rust, and `js/`, `python/` beside it).
    Ok(text.replace(
        "source = \"target/",
        &format!(
            "source = \"{}/target/",
            paths.repo.join("components").display()
        ),
    ))
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The `p`th percentile of `values` (nearest rank); 0 when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `d` in microseconds, as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
