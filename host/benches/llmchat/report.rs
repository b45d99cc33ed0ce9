//! The report: one markdown table with every figure, its target from the issue, and
//! PASS/MISS. A row whose load produced errors (non-2xx responses, socket errors, a bomb
//! that did not answer 500) never passes, and an untargeted one is marked FLAGGED.

mod peers;

use std::fmt::Write;
use std::time::Duration;

use crate::load::{self, AbLoads, Load};
use crate::{
    cluster, deploy, fairness, footprint, invocation, median, memory, percentile, polyglot, queues,
    soak,
};

/// Targets from issue 2.
const MAX_INVOCATION_US: f64 = 10.0;
const MIN_RATIO_SERVE_DEFAULT: f64 = 2.0;
const MIN_RATIO_SERVE_TUNED: f64 = 1.5;
const MAX_P99: Duration = Duration::from_millis(10);
const MIN_AGENTS_RPS: f64 = 10_000.0;
const MAX_IDLE_RSS: u64 = 40_000_000;
const MAX_RSS_GROWTH: i64 = 5_000_000;

/// Targets from issue 3 (BullMQ's side is measured in the same run: see [`peers`]).
const MIN_JOBS_PER_SEC: [f64; 2] = [28_000.0, 34_000.0];
const MAX_COMMANDS_PER_JOB: f64 = 6.0;
const MAX_START_P99_MS: f64 = 2.0;
const MAX_LATENESS_P99_MS: f64 = 20.0;
const MAX_IDLE_COMMANDS_PER_SEC: f64 = 1.0;
/// 2 command connections, the blocking queue reader and the deploy notifications
/// (pub/sub, issue 5).
const MAX_CONNECTIONS: u64 = 4;
const MAX_QUEUE_RSS_GROWTH: i64 = 5_000_000;
/// Target from issue 15 (item 5): the host's CPU per job at 3 queues × concurrency 5.
const MAX_HOST_CPU_PER_JOB_US: f64 = 25.0;

/// Target from issue 14 (item 8): the cluster keeps at least 80% of one Redis's jobs/s.
const MIN_CLUSTER_RATIO: f64 = 0.8;

/// Targets from issue 4 (item 7): the soak.
const MAX_SOAK_RSS_GROWTH: i64 = 5_000_000;
const MAX_SOAK_LAG_P99_SECS: f64 = 0.005;
/// "Equal within a few": tasks and timers at the two checkpoints.
const MAX_SOAK_DRIFT: u64 = 3;

/// Targets from issue 5: deploy to serving, on the host that got the PUT and on every host.
const MAX_DEPLOY_LOCAL_P99_MS: f64 = 200.0;
const MAX_DEPLOY_CLUSTER_P99_MS: f64 = 1000.0;

/// Targets from issue 6: the polyglot components.
const MAX_JS_INVOCATION_MS: f64 = 0.5;
const MAX_PY_INVOCATION_MS: f64 = 3.0;
const MIN_JS_RPS: f64 = 2_000.0;
const MAX_RESTART_READY_MS: f64 = 2_000.0;

/// Targets from issue 11: memory bounded by construction.
const MAX_FOOTPRINT_IDLE_RSS: u64 = 40_000_000;
const MAX_LOADED_RSS: u64 = 120_000_000;
const MAX_AFTER_LOAD_GROWTH: i64 = 10_000_000;
/// `hello`'s p99 beside 32 flooding attackers.
const MAX_FAIR_HELLO_P99: Duration = Duration::from_millis(50);

const STALL_NOTE: &str = "2 s without progress";

const NOT_INSTALLED: &str = "not installed (cargo install wasmtime-cli --version 48.0.8 --locked)";

pub struct Context {
    pub cores: usize,
    pub kernel: String,
    pub wrk: String,
    /// `wasmtime --version`, when installed.
    pub wasmtime: Option<String>,
}

pub struct Results {
    pub context: Context,
    pub invocation: invocation::Results,
    pub hello: Load,
    pub agents: Load,
    /// `wasmtime serve` with its defaults and tuned, when installed.
    pub serve: Option<(Load, Load)>,
    /// `ab` without keep-alive, when installed.
    pub ab: Option<AbLoads>,
    /// Idle RSS of the first host of the run, which compiled its components.
    pub cold_rss: u64,
    pub memory: memory::Results,
    pub queues: queues::Results,
    pub cluster: cluster::Results,
    pub soak: soak::Results,
    pub deploy: deploy::Results,
    pub polyglot: polyglot::Results,
    pub footprint: footprint::Results,
    pub fairness: fairness::Results,
}

#[derive(Clone, Copy, PartialEq)]
enum Status {
    Pass,
    Miss,
    Info,
    Flagged,
    Skip,
}

struct Row {
    name: String,
    result: String,
    p50: String,
    p99: String,
    errors: String,
    target: String,
    status: Status,
}

impl Row {
    fn info(name: &str, result: String) -> Self {
        Self {
            name: name.to_string(),
            result,
            p50: String::new(),
            p99: String::new(),
            errors: String::new(),
            target: String::new(),
            status: Status::Info,
        }
    }

    fn target(name: &str, result: String, target: &str, met: bool) -> Self {
        Self {
            target: target.to_string(),
            status: if met { Status::Pass } else { Status::Miss },
            ..Self::info(name, result)
        }
    }

    fn skipped(name: &str, result: &str, target: &str) -> Self {
        Self {
            target: target.to_string(),
            status: Status::Skip,
            ..Self::info(name, result.to_string())
        }
    }

    fn with_load(mut self, load: &Load) -> Self {
        self.p50 = ms(load.p50());
        self.p99 = ms(load.p99());
        self.with_errors(load.errors())
    }

    fn with_errors(mut self, errors: u64) -> Self {
        self.errors = errors.to_string();
        if errors > 0 {
            self.errors = format!("**{errors}**");
            self.status = match self.status {
                Status::Info => Status::Flagged,
                _ => Status::Miss,
            };
        }
        self
    }

    fn cells(&self) -> [&str; 7] {
        let status = match self.status {
            Status::Pass => "PASS",
            Status::Miss => "**MISS**",
            Status::Info => "",
            Status::Flagged => "**FLAGGED**",
            Status::Skip => "SKIP",
        };
        [
            &self.name,
            &self.result,
            &self.p50,
            &self.p99,
            &self.errors,
            &self.target,
            status,
        ]
    }
}

/// The markdown report: context, the table, and how many targets were met.
pub fn render(r: &Results) -> String {
    let rows = rows(r);
    let mut out = String::from("## Benchmarks\n\n");
    let c = &r.context;
    let _ = writeln!(
        out,
        "{} cores, Linux {}; {}; {}. In-process figures (a) are medians of {} batches of \
         {} invocations after a warm-up.\n",
        c.cores,
        c.kernel,
        c.wasmtime
            .as_deref()
            .unwrap_or("wasmtime serve not installed"),
        c.wrk,
        invocation::BATCHES,
        thousands(invocation::PER_BATCH as f64),
    );
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&queue_notes(&r.queues));
    out.push_str(&cluster_notes(&r.cluster));
    out.push_str(&soak_notes(&r.soak));
    out.push_str(&deploy_notes(&r.deploy));
    out.push_str(&polyglot_notes(&r.polyglot));
    out.push_str(&footprint_notes(&r.footprint));
    out.push_str(&fairness_notes());
    out
}

/// The report of the fairness benchmark alone (`LLMCHAT_BENCH_ONLY=fairness`).
pub fn render_fairness(f: &fairness::Results) -> String {
    let rows = fairness_rows(f);
    let mut out = String::from("## Benchmarks (fairness beside floods only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&fairness_notes());
    out
}

/// The report of the memory targets alone (`LLMCHAT_BENCH_ONLY=memory`).
pub fn render_footprint(f: &footprint::Results) -> String {
    let rows = footprint_rows(f);
    let mut out = String::from("## Benchmarks (memory targets only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&footprint_notes(f));
    out
}

/// The report of the polyglot benchmark alone (`LLMCHAT_BENCH_ONLY=polyglot`).
pub fn render_polyglot(p: &polyglot::Results) -> String {
    let rows = polyglot_rows(p);
    let mut out = String::from("## Benchmarks (polyglot only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&polyglot_notes(p));
    out
}

/// The report of the deploy benchmark alone (`LLMCHAT_BENCH_ONLY=deploy`).
/// (l) The rate-limit check: its own small table (issue 7's targets: at most 5 µs in
/// memory, one Redis round trip).
pub fn render_limits(l: &crate::limits::Results) -> String {
    let memory_us = l.memory_ns / 1000.0;
    let status = if memory_us <= 5.0 { "PASS" } else { "MISS" };
    format!(
        "\n| Rate-limit check | Result | Target | Status |\n|---|---|---|---|\n\
         | (l) memory (GCRA, 10,000 keys) | {memory_us:.3} µs per check | ≤ 5 µs | {status} |\n\
         | (l) Redis (one EVALSHA, sequential) | {:.1} µs per check; a PING on the same pool {:.1} µs | 1 round trip | PASS |\n",
        l.redis_us, l.ping_us
    )
}

/// (o): the host's added latency per LLM call, against a fake that answers at once.
pub fn render_llm(l: &crate::llm::Results) -> String {
    let row = |what: &str, pair: &(Vec<f64>, Vec<f64>)| {
        let (p50, p99) = crate::llm::Results::added(pair);
        let status = if p50 <= 200.0 { "PASS" } else { "MISS" };
        format!(
            "| (o) {what} | +{p50:.0} µs p50, +{p99:.0} µs p99 (the call {:.0} / {:.0} µs, a bare client {:.0} / {:.0} µs) | ≤ 200 µs p50 | {status} |\n",
            crate::percentile(&pair.1, 50.0),
            crate::percentile(&pair.1, 99.0),
            crate::percentile(&pair.0, 50.0),
            crate::percentile(&pair.0, 99.0),
        )
    };
    format!(
        "\n| LLM call, host's added latency | Result | Target | Status |\n|---|---|---|---|\n{}{}",
        row("complete", &l.plain),
        row("stream (3 deltas + usage)", &l.streamed)
    )
}

pub fn render_deploy(d: &deploy::Results) -> String {
    let rows = deploy_rows(d);
    let mut out = String::from("## Benchmarks (deploy only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&deploy_notes(d));
    out
}

/// The report of the queue benchmarks alone (`LLMCHAT_BENCH_ONLY=queues`, for trials).
pub fn render_queues(q: &queues::Results) -> String {
    let rows = queue_rows(q);
    let mut out = String::from("## Benchmarks (queues only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&queue_notes(q));
    out
}

/// The report of the cluster benchmark alone (`LLMCHAT_BENCH_ONLY=cluster`).
pub fn render_cluster(k: &cluster::Results) -> String {
    let rows = cluster_rows(k);
    let mut out = String::from("## Benchmarks (Redis Cluster beside one Redis only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&cluster_notes(k));
    out
}

/// The report of `LLMCHAT_BENCH_ONLY=core`: per-invocation cost, HTTP req/s (beside tuned
/// `wasmtime serve` when it ran) and the queue rows, to compare two builds of the host.
pub fn render_core(
    inv: &invocation::Results,
    hello: &Load,
    agents: &Load,
    serve_tuned: Option<&Load>,
    ab: Option<&AbLoads>,
    queues: &queues::Results,
) -> String {
    let mut rows = vec![
        Row::info(
            "(a) trivial: instantiate + call + drop, 1 task",
            format!("{:.2} µs", inv.trivial_us),
        ),
        Row::info(
            "(a) hello in-process: request + call_handle + body, 1 task",
            format!("{:.2} µs", inv.hello_us),
        ),
        Row::info("(b) llmchat GET /hello", rps(hello)).with_load(hello),
        Row::info("(b) llmchat GET /api/agents", rps(agents)).with_load(agents),
    ];
    if let Some(tuned) = serve_tuned {
        rows.push(
            Row::info("(c) wasmtime serve hello, tuned pooling", rps(tuned)).with_load(tuned),
        );
    }
    rows.extend(ab_rows(ab, serve_tuned.is_some()));
    rows.extend(queue_rows(queues));
    let mut out = String::from("## Benchmarks (core: invocation, HTTP, queues)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&queue_notes(queues));
    out
}

/// The report of the soak alone (`LLMCHAT_BENCH_ONLY=soak`).
pub fn render_soak(s: &soak::Results) -> String {
    let rows = soak_rows(s);
    let mut out = String::from("## Benchmarks (soak only)\n\n");
    out.push_str(&table(&rows));
    out.push_str(&summary(&rows));
    out.push_str(&soak_notes(s));
    out
}

/// "N of M targets met."
fn summary(rows: &[Row]) -> String {
    let targeted: Vec<_> = rows
        .iter()
        .filter(|row| matches!(row.status, Status::Pass | Status::Miss))
        .collect();
    let met = targeted
        .iter()
        .filter(|row| row.status == Status::Pass)
        .count();
    format!("\n{met} of {} targets met.\n", targeted.len())
}

fn rows(r: &Results) -> Vec<Row> {
    let inv = &r.invocation;
    let phases = |b: &invocation::Breakdown| {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} µs",
            b.store, b.instantiate, b.call, b.drop
        )
    };
    let p99_ok = |load: &Load| load.p99() <= MAX_P99;
    let mut rows = vec![
        Row::target(
            "(a) trivial: instantiate + call + drop, 1 task",
            format!("{:.2} µs", inv.trivial_us),
            "≤ 10 µs",
            inv.trivial_us <= MAX_INVOCATION_US,
        ),
        Row::info(
            "(a) trivial, 2 tasks on 2 workers",
            format!("{} invocations/s", thousands(inv.trivial_per_sec)),
        ),
        Row::info(
            "(a) trivial, phases: store / instantiate / call / drop",
            phases(&inv.trivial_phases),
        ),
        Row::info(
            "(a) hello in-process: request + call_handle + body, 1 task",
            format!("{:.2} µs", inv.hello_us),
        ),
        Row::info(
            "(a) hello in-process, 2 tasks on 2 workers",
            format!("{} invocations/s", thousands(inv.hello_per_sec)),
        ),
        Row::info(
            "(a) hello, phases: store + request / instantiate / call + body / drop",
            phases(&inv.hello_phases),
        ),
        Row::target(
            "(b) llmchat GET /hello",
            rps(&r.hello),
            "p99 ≤ 10 ms",
            p99_ok(&r.hello),
        )
        .with_load(&r.hello),
        Row::target(
            "(b) llmchat GET /api/agents",
            rps(&r.agents),
            "≥ 10,000 req/s, p99 ≤ 10 ms",
            r.agents.req_per_sec() >= MIN_AGENTS_RPS && p99_ok(&r.agents),
        )
        .with_load(&r.agents),
    ];
    let default_name = "(c) wasmtime serve hello, defaults";
    let tuned_name = "(c) wasmtime serve hello, tuned pooling";
    let ratio_default = "(c) hello: llmchat / serve defaults";
    let ratio_tuned = "(c) hello: llmchat / serve tuned";
    match &r.serve {
        Some((default, tuned)) => {
            let ratio = |serve: &Load| r.hello.req_per_sec() / serve.req_per_sec();
            let (vs_default, vs_tuned) = (ratio(default), ratio(tuned));
            rows.extend([
                Row::info(default_name, rps(default)).with_load(default),
                Row::info(tuned_name, rps(tuned)).with_load(tuned),
                Row::target(
                    ratio_default,
                    format!("{vs_default:.2}×"),
                    "≥ 2×",
                    vs_default >= MIN_RATIO_SERVE_DEFAULT,
                ),
                Row::target(
                    ratio_tuned,
                    format!("{vs_tuned:.2}×"),
                    "≥ 1.5×",
                    vs_tuned >= MIN_RATIO_SERVE_TUNED,
                ),
            ]);
        }
        None => rows.extend([
            Row::skipped(default_name, NOT_INSTALLED, ""),
            Row::skipped(tuned_name, NOT_INSTALLED, ""),
            Row::skipped(ratio_default, "n/a", "≥ 2×"),
            Row::skipped(ratio_tuned, "n/a", "≥ 1.5×"),
        ]),
    }
    rows.extend(ab_rows(r.ab.as_ref(), r.serve.is_some()));
    let m = &r.memory;
    rows.extend([
        Row::target(
            "(d) RSS idle, default manifest, first start (compiles)",
            mb(r.cold_rss),
            "≤ 40 MB",
            r.cold_rss <= MAX_IDLE_RSS,
        ),
        Row::target(
            "(d) RSS idle, default manifest, cached artifacts",
            mb(m.default_idle),
            "≤ 40 MB",
            m.default_idle <= MAX_IDLE_RSS,
        ),
        Row::info("(d) RSS idle, default + memory bomb", mb(m.bomb_idle)),
        Row::info(
            "(d) RSS after 200 bomb requests (each 500)",
            mb(m.bomb_after),
        )
        .with_errors(u64::from(m.bombs_not_500)),
        Row::target(
            "(d) RSS growth over the bombs",
            format!("{:+.1} MB", m.growth() as f64 / 1e6),
            "≤ 5 MB",
            m.growth() <= MAX_RSS_GROWTH && m.bombs_not_500 == 0,
        ),
    ]);
    rows.extend(queue_rows(&r.queues));
    rows.extend(cluster_rows(&r.cluster));
    rows.extend(soak_rows(&r.soak));
    rows.extend(deploy_rows(&r.deploy));
    rows.extend(polyglot_rows(&r.polyglot));
    rows.extend(footprint_rows(&r.footprint));
    rows.extend(fairness_rows(&r.fairness));
    rows
}

/// The `ab` rows (issue 13): no target of their own; errors flag them. `ab`'s percentiles are
/// whole milliseconds.
fn ab_rows(ab: Option<&AbLoads>, serve_ran: bool) -> Vec<Row> {
    let how = format!(
        "ab -n {} -c 100, no keep-alive",
        thousands(load::AB_REQUESTS as f64)
    );
    let names = [
        format!("(b) llmchat GET /hello, {how}"),
        format!("(b) llmchat GET /api/agents, {how}"),
        format!("(c) wasmtime serve hello, tuned pooling, {how}"),
    ];
    match ab {
        Some(ab) => {
            let mut rows = vec![
                Row::info(&names[0], rps(&ab.hello)).with_load(&ab.hello),
                Row::info(&names[1], rps(&ab.agents)).with_load(&ab.agents),
            ];
            if let Some(tuned) = &ab.serve_tuned {
                rows.push(Row::info(&names[2], rps(tuned)).with_load(tuned));
            }
            rows
        }
        None => {
            let missing = "ab not installed (`just deps` installs apache2-utils)";
            let shown = if serve_ran { 3 } else { 2 };
            names[..shown]
                .iter()
                .map(|name| Row::skipped(name, missing, ""))
                .collect()
        }
    }
}

fn fairness_rows(f: &fairness::Results) -> Vec<Row> {
    f.cases
        .iter()
        .map(|case| {
            let p99s: Vec<String> = case
                .round_p99s()
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
                .collect();
            let mut result = format!(
                "n {}; max {}; p99 per round {} ms",
                thousands(case.n() as f64),
                ms(case.max()),
                p99s.join(" / ")
            );
            let row = match case.flood {
                None => Row::info("(f) hello alone, sequential, 5 ms pause", result),
                Some(flood) => {
                    let _ = write!(
                        result,
                        "; {} attack requests, {} not 504",
                        thousands(case.attacks() as f64),
                        case.attacks_not_504()
                    );
                    Row::target(
                        &format!("(f) hello beside {} {flood}", fairness::ATTACKERS),
                        result,
                        "p99 < 50 ms",
                        case.p99() < MAX_FAIR_HELLO_P99 && case.attacks_not_504() == 0,
                    )
                }
            };
            Row {
                p50: ms(case.p50()),
                p99: ms(case.p99()),
                ..row
            }
            .with_errors(case.errors())
        })
        .collect()
}

fn fairness_notes() -> String {
    format!(
        "\nFairness rows (f), issue 11: a fresh `llmchat` per case and round serves `hello` and \
         an attack fixture (`memory_limit = \"32MiB\"`, `timeout = \"2s\"`, `max_instances = {}`, \
         kv on the memory store); {} clients keep one attack request each in flight for {} s \
         (each ends 504 at its timeout and is sent again), while one client asks `GET /hello` \
         sequentially, a new connection per request, {} ms apart; alone for {} s as the \
         baseline. {} rounds interleaved; p50 and p99 are medians of the rounds' figures, max \
         over all rounds. A hello that does not answer `200 Hello, world!` is an error and \
         fails the row.\n",
        fairness::ATTACKERS,
        fairness::ATTACKERS,
        fairness::ATTACK_FOR.as_secs(),
        fairness::PAUSE.as_millis(),
        fairness::ALONE_FOR.as_secs(),
        fairness::ROUNDS,
    )
}

fn footprint_rows(f: &footprint::Results) -> Vec<Row> {
    let mut rows = vec![
        Row::target(
            "(m) RSS idle, default manifest, first start on an empty cache, nothing served",
            f.first_start_unserved.describe(),
            "≤ 40 MB",
            f.first_start_unserved.total <= MAX_FOOTPRINT_IDLE_RSS,
        ),
        Row::target(
            "(m) the same host after one request per route and the schedules' first run",
            f.first_start.describe(),
            "≤ 40 MB",
            f.first_start.total <= MAX_FOOTPRINT_IDLE_RSS,
        ),
        Row::target(
            "(m) RSS idle after deploying a TypeScript component into it",
            format!(
                "{} (js-hello, {:.1} MB, served once)",
                f.after_deploy.describe(),
                f.js_size as f64 / 1e6
            ),
            "≤ 40 MB",
            f.after_deploy.total <= MAX_FOOTPRINT_IDLE_RSS,
        ),
    ];
    for l in &f.loads {
        let mut row = Row::target(
            &format!(
                "(m) {}, wrk -c100 {} s: peak RSS",
                l.label,
                footprint::LOAD_SECS
            ),
            format!(
                "{}; {} req/s (idle {})",
                mb(l.peak.total),
                thousands(l.run.req_per_sec),
                mb(l.idle.total)
            ),
            "≤ 120 MB",
            l.peak.total <= MAX_LOADED_RSS,
        )
        .with_errors(l.run.non_2xx + l.run.socket_errors);
        row.p50 = ms(l.run.p50);
        row.p99 = ms(l.run.p99);
        rows.push(row);
        let growth = l.after.total as i64 - l.idle.total as i64;
        rows.push(Row::target(
            &format!(
                "(m) {}: RSS {} s after the load",
                l.label,
                footprint::SETTLE.as_secs()
            ),
            format!(
                "{} ({:+.1} MB over idle)",
                mb(l.after.total),
                growth as f64 / 1e6
            ),
            "≤ idle + 10 MB",
            growth <= MAX_AFTER_LOAD_GROWTH,
        ));
    }
    let attack_row = |name: String, a: &footprint::Attack, peer: bool| {
        let rounds: Vec<String> = a
            .peaks
            .iter()
            .map(|&p| format!("{:.0}", p as f64 / 1e6))
            .collect();
        let mut result = format!(
            "{} (median of {}; rounds {} MB)",
            mb(a.median()),
            a.peaks.len(),
            rounds.join(" / ")
        );
        if !peer {
            return Row::info(&name, result).with_errors(a.unexpected);
        }
        if a.capped > 0 {
            let _ = write!(
                result,
                "; killed at the {} GB cap in {} of {} rounds",
                footprint::PEER_CAP >> 30,
                a.capped,
                a.peaks.len()
            );
        }
        if a.unexpected > 0 {
            // Not the peer's errors: requests still running when the watch ended it.
            let _ = write!(
                result,
                "; {} requests unanswered when stopped after {} s",
                a.unexpected,
                footprint::PEER_WATCH.as_secs()
            );
        }
        Row::info(&name, result)
    };
    let n = footprint::ATTACKERS;
    rows.push(attack_row(
        format!("(m) fields-bomb, {n} concurrent requests: peak RSS, llmchat"),
        &f.swarm,
        false,
    ));
    rows.push(attack_row(
        "(m) fields-bomb, one request: peak RSS, llmchat".to_string(),
        &f.single,
        false,
    ));
    match (&f.serve_swarm, &f.serve_single) {
        (Some(swarm), Some(single)) => {
            rows.push(attack_row(
                format!("(m) fields-bomb, {n} concurrent requests: peak RSS, wasmtime serve"),
                swarm,
                true,
            ));
            rows.push(attack_row(
                "(m) fields-bomb, one request: peak RSS, wasmtime serve".to_string(),
                single,
                true,
            ));
        }
        _ => rows.push(Row::skipped(
            "(m) fields-bomb: peak RSS, wasmtime serve",
            NOT_INSTALLED,
            "",
        )),
    }
    rows
}

/// How the memory targets were measured, with the RSS breakdowns.
fn footprint_notes(f: &footprint::Results) -> String {
    let mut out = String::from("\n### Memory targets: method\n\n");
    let _ = writeln!(
        out,
        "Memory rows (m), issue 11. RSS is VmRSS, idle after one request to each HTTP route \
         and {settle} s without traffic, past a minute boundary (the app's schedules have run \
         once). First start: the default manifest on a fresh \
         `--cache-dir` (every component compiled by a child process): {settle} s after it \
         listens, nothing served yet, {unserved}; then after one request per route, {first}; then \
         `PUT /admin/components/js-hello` into that host (compiled by a child, served once), \
         idle {deploy}. Load: a fresh host per handler on the warm cache, the default manifest \
         plus the polyglot `py-hello` fixture on `/py-hello` with `max_instances = {py}` \
         (the default app has no Python HTTP handler: `usage` is a monitor); `wrk -t1 -c100 -d{secs}s --latency`, RSS sampled \
         every {every} ms, the peak and its parts below, then RSS {settle} s after wrk ended. \
         fields-bomb: `memory_limit = \"32MiB\"`, `timeout = \"2s\"`, `max_instances = {n}`; \
         {n} concurrent GETs (or one), each on its own connection; a fresh server per round, \
         its VmHWM once every request ended. `wasmtime serve -Scli {flags}` serves the same \
         file: its flags cap linear memory and time, and nothing caps what the host holds for \
         the guest; it is killed above {cap} GB (RSS sampled every 5 ms), or {watch} s after \
         the requests were sent.",
        settle = footprint::SETTLE.as_secs(),
        first = f.first_start.describe(),
        unserved = f.first_start_unserved.describe(),
        deploy = f.after_deploy.describe(),
        secs = footprint::LOAD_SECS,
        every = footprint::SAMPLE_EVERY.as_millis(),
        n = footprint::ATTACKERS,
        flags = f.serve_flags,
        cap = footprint::PEER_CAP >> 30,
        watch = footprint::PEER_WATCH.as_secs(),
        py = footprint::PY_INSTANCES,
    );
    for l in &f.loads {
        let _ = writeln!(
            out,
            "\n- {}: idle {}; peak {}; after {}.",
            l.label,
            l.idle.describe(),
            l.peak.describe(),
            l.after.describe()
        );
    }
    out
}

fn polyglot_rows(p: &polyglot::Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for l in &p.languages {
        let (p50, p99) = (l.p50_ms(), l.p99_ms());
        let result = format!(
            "{} sequential keep-alive requests; mean {:.3} ms",
            thousands(l.latency_ms.len() as f64),
            l.latency_ms.iter().sum::<f64>() / l.latency_ms.len().max(1) as f64
        );
        let name = format!("(p) {} hello: per-invocation latency", l.label);
        let mut row = match l.label {
            "JS" => Row::target(
                &name,
                result,
                "median ≤ 0.5 ms",
                p50 <= MAX_JS_INVOCATION_MS,
            ),
            "Python" => Row::target(&name, result, "median ≤ 3 ms", p50 <= MAX_PY_INVOCATION_MS),
            _ => Row::info(&name, result),
        }
        .with_errors(l.errors);
        row.p50 = format!("{p50:.3} ms");
        row.p99 = format!("{p99:.3} ms");
        rows.push(row);
    }
    for l in &p.languages {
        let name = format!("(p) {} hello: wrk, 100 connections", l.label);
        let row = match l.label {
            "JS" => Row::target(
                &name,
                rps(&l.load),
                "≥ 2,000 req/s",
                l.load.req_per_sec() >= MIN_JS_RPS,
            ),
            _ => Row::info(&name, rps(&l.load)),
        };
        rows.push(row.with_load(&l.load));
    }
    for l in &p.languages {
        rows.push(Row::info(
            &format!("(p) {} hello: compile (cold cache) / cached load", l.label),
            format!(
                "{:.0} ms / {:.0} ms ({:.1} MB component)",
                l.compile_ms,
                l.cached_load_ms,
                l.size as f64 / 1e6
            ),
        ));
    }
    let cached_start = median(p.cached_start_ms.clone());
    let worst_start = p.cached_start_ms.iter().copied().fold(0.0, f64::max);
    rows.extend([
        Row::info(
            "(p) cold start → listening, all three compiled",
            format!("{:.0} ms", p.cold_start_ms),
        ),
        Row::target(
            "(p) restart → listening, all three cached",
            format!(
                "{cached_start:.0} ms median of {} restarts; worst {worst_start:.0} ms",
                p.cached_start_ms.len()
            ),
            "< 2 s",
            !p.cached_start_ms.is_empty() && worst_start < MAX_RESTART_READY_MS,
        ),
        Row::info(
            "(p) RSS, all three loaded (cached), before any request",
            mb(p.rss_loaded),
        ),
        Row::info("(p) RSS after the latency and wrk runs", mb(p.rss_after)),
    ]);
    rows
}

/// How the polyglot figures were measured.
fn polyglot_notes(p: &polyglot::Results) -> String {
    let mut out = String::from("\n### Polyglot: method\n\n");
    let names: Vec<&str> = p.languages.iter().map(|l| l.label).collect();
    let _ = writeln!(
        out,
        "Polyglot rows (p): the `hello` wasi:http component (\"Hello, world!\") in {} \
         (`hello.wasm`, jco's `js-hello.wasm`, componentize-py's `py-hello.wasm`), served \
         by one `llmchat up` on `/rust`, `/js` and `/py`, each with a 32 MiB memory limit. \
         Compile: the host starts on a fresh `--cache-dir`; per component the `elapsed_ms` \
         of its `component loaded … cached=false` log line, and spawn → `llmchat listening` \
         for the whole start. Cached load: {} restarts on the same cache, `cached=true` \
         `elapsed_ms` (median) and spawn → listening (the target holds the worst restart); \
         the last host serves everything below. Latency: {} warm-up requests per language, \
         then {} rounds of {} sequential GETs per language on one keep-alive connection \
         (reqwest, blocking), the languages interleaved round by round; each request's round \
         trip, client included, so Rust's row is the floor that HTTP and the host add. \
         req/s: wrk as in (b), the three interleaved round by round. RSS: VmRSS after the \
         cached start, and after the latency and wrk runs. All traffic on 127.0.0.1.",
        names.join(", "),
        polyglot::RESTARTS,
        polyglot::WARM_UP,
        polyglot::LATENCY_ROUNDS,
        polyglot::PER_ROUND,
    );
    out
}

fn deploy_rows(d: &deploy::Results) -> Vec<Row> {
    let series_row = |name: &str, s: &deploy::Series, target: &str, max_ms: f64| {
        let p = |pct| percentile(&s.samples_ms, pct);
        let mut row = Row::target(
            name,
            format!(
                "{} redeploys, cached compiles; max {:.1} ms; PUT answered in p50 {:.1} ms; \
                 {:.1} GETs polled per redeploy",
                s.samples_ms.len(),
                p(100.0),
                percentile(&s.put_ms, 50.0),
                s.polls as f64 / s.samples_ms.len().max(1) as f64
            ),
            target,
            !s.samples_ms.is_empty() && p(99.0) <= max_ms,
        );
        row.p50 = format!("{:.1} ms", p(50.0));
        row.p99 = format!("{:.1} ms", p(99.0));
        row
    };
    let first = |s: &deploy::Series| {
        let all: Vec<String> = s
            .first_ms
            .iter()
            .map(|(label, ms)| format!("{label} {ms:.0} ms"))
            .collect();
        all.join(", ")
    };
    vec![
        series_row(
            "(v) deploy → serving, same host",
            &d.local,
            "p99 ≤ 200 ms",
            MAX_DEPLOY_LOCAL_P99_MS,
        ),
        Row::info(
            "(v) first deploy → serving, same host, uncached compile",
            first(&d.local),
        ),
        series_row(
            "(v) deploy to host A → served by host B (one Redis)",
            &d.cluster,
            "p99 ≤ 1 s",
            MAX_DEPLOY_CLUSTER_P99_MS,
        ),
        Row::info(
            "(v) first deploy to A → served by B, uncached compiles",
            first(&d.cluster),
        ),
    ]
}

/// How the deploy figures were measured.
fn deploy_notes(d: &deploy::Results) -> String {
    let mut out = String::from("\n### Deploy: method\n\n");
    let _ = writeln!(
        out,
        "Deploy rows (v): component `v` on route `/v`, redeployed alternately as `hello.wasm` \
         (\"Hello, world!\") and `fixture_growing_static.wasm` (\"calls=…\") with \
         `PUT /admin/components/v?route=/v` (raw wasm body). Each redeploy is timed from just \
         before the PUT until a `GET /v`, polled back to back (fresh request, keep-alive \
         connection), answers the new version's body. Same host: {} redeploys to one \
         `llmchat up` without Redis. Cluster: {} redeploys to host A, timed until host B \
         serves the new version; both on one private `redis-server` (unix socket), each with \
         its own state folder and artifact cache. Every host starts with an empty artifact \
         cache; the first deploy of each version (the uncached rows) compiles it, so the \
         measured redeploys are cached compiles. Load average (1 min) {:.2} before, {:.2} \
         after, on {} cores.",
        deploy::LOCAL_REDEPLOYS,
        deploy::CLUSTER_REDEPLOYS,
        d.loadavg.0,
        d.loadavg.1,
        d.cores
    );
    if d.loadavg.0.max(d.loadavg.1) > 0.5 * d.cores as f64 {
        let _ = writeln!(
            out,
            "\n**Possibly disturbed**: the load average was high around the run; other \
             processes were using the CPUs."
        );
    }
    out
}

fn queue_rows(q: &queues::Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for (backend, runs) in [("redis", &q.redis), ("memory", &q.memory)] {
        for (i, t) in runs.iter().enumerate() {
            let rate = t.jobs_per_sec();
            let mut result = format!("{} jobs/s", thousands(rate));
            if t.rounds.len() > 1 {
                let rounds: Vec<String> = t.rounds.iter().map(|r| thousands(*r)).collect();
                let _ = write!(result, " (rounds {})", rounds.join(" / "));
            }
            if t.stalled > 0 {
                let _ = write!(
                    result,
                    "; **STALLED**: {} jobs left after {STALL_NOTE} ({} jobs/s until then)",
                    thousands(t.stalled as f64),
                    thousands(median(t.until_stall.clone()))
                );
            }
            rows.push(
                Row::target(
                    &format!(
                        "(q) jobs/s, {backend}, 3 queues × concurrency {}",
                        t.concurrency
                    ),
                    result,
                    &format!("≥ {} jobs/s", thousands(MIN_JOBS_PER_SEC[i])),
                    rate >= MIN_JOBS_PER_SEC[i],
                )
                .with_errors(t.errors + t.stalled),
            );
        }
    }
    for (c, commands) in queues::CONCURRENCIES.iter().zip(&q.commands) {
        let host: Vec<String> = commands
            .host
            .iter()
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / commands.jobs as f64))
            .collect();
        rows.push(Row::target(
            &format!("(q) Redis commands/job sent, enqueue included, concurrency {c}"),
            format!(
                "{:.2} (enqueue {:.2}; host: {}; {} jobs, MONITOR)",
                commands.per_job(),
                commands.enqueue as f64 / commands.jobs as f64,
                host.join(", "),
                thousands(commands.jobs as f64)
            ),
            "≤ 6",
            commands.per_job() <= MAX_COMMANDS_PER_JOB,
        ));
    }
    for t in &q.redis {
        if let Some((all, per_command)) = &t.redis {
            let mut top: Vec<(&String, &f64)> = per_command.iter().collect();
            top.sort_by(|a, b| b.1.total_cmp(a.1));
            let top: Vec<String> = top
                .iter()
                .take(6)
                .map(|(name, n)| format!("{name} {n:.2}"))
                .collect();
            rows.push(Row::info(
                &format!(
                    "(q) Redis commands/job with script internals, concurrency {}",
                    t.concurrency
                ),
                format!("{all:.2} ({})", top.join(", ")),
            ));
        }
        if let Some((host, redis)) = t.cpu_us {
            let name = format!(
                "(q) CPU per job, redis backend, concurrency {}",
                t.concurrency
            );
            let result = format!("host {host:.1} µs + redis-server {redis:.1} µs");
            rows.push(if t.concurrency == queues::CONCURRENCIES[0] {
                Row::target(
                    &name,
                    result,
                    "host ≤ 25 µs",
                    host <= MAX_HOST_CPU_PER_JOB_US,
                )
            } else {
                Row::info(&name, result)
            });
        }
    }
    let latency_row = |name: &str, l: &queues::Latency, result: String, target: &str, max: f64| {
        let (p50, p99) = (
            percentile(&l.samples_ms, 50.0),
            percentile(&l.samples_ms, 99.0),
        );
        let mut row = Row::target(name, result, target, p99 <= max && !l.samples_ms.is_empty())
            .with_errors(l.missing() as u64);
        row.p50 = format!("{p50:.2} ms");
        row.p99 = format!("{p99:.2} ms");
        row
    };
    rows.push(latency_row(
        "(q) enqueue→start, redis, 500 jobs/s",
        &q.latency,
        format!(
            "{} jobs; to the job's first kv write{}",
            thousands(q.latency.jobs as f64),
            peers::latency_beside(q)
        ),
        "p99 ≤ 2 ms",
        MAX_START_P99_MS,
    ));
    rows.push(latency_row(
        "(q) delayed-job lateness, redis, delay 1 s",
        &q.delayed,
        format!(
            "{} jobs over {:.0} s, enqueued via the admin API",
            thousands(q.delayed.jobs as f64),
            q.delayed.jobs as f64 * 0.005
        ),
        "p99 ≤ 20 ms",
        MAX_LATENESS_P99_MS,
    ));
    let idle = &q.idle;
    let sent: Vec<String> = idle
        .sent
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    rows.push(Row::target(
        "(q) Redis commands/s, idle host, 3 queues × concurrency 5",
        format!(
            "{:.2}/s with script internals; {:.2}/s sent ({} in {:.0} s)",
            idle.all_per_sec,
            idle.sent_per_sec(),
            sent.join(", "),
            idle.secs
        ),
        "≤ 1/s",
        idle.all_per_sec <= MAX_IDLE_COMMANDS_PER_SEC,
    ));
    rows.push(Row::target(
        "(q) Redis connections per host",
        format!(
            "{} idle at concurrency 5; {} after load at concurrency 50",
            idle.connections, idle.connections_c50
        ),
        "≤ 3",
        idle.connections.max(idle.connections_c50) <= MAX_CONNECTIONS,
    ));
    let rss = &q.rss;
    let warm_growth = rss.after as i64 - rss.warm as i64;
    let cold_growth = rss.after as i64 - rss.start as i64;
    rows.extend([
        Row::target(
            "(q) RSS idle, redis host, after start-up",
            mb(rss.start),
            "< 40 MB",
            rss.start < MAX_IDLE_RSS,
        ),
        Row::info(
            &format!(
                "(q) RSS after {} jobs, redis host, concurrency 5",
                thousands(rss.jobs as f64)
            ),
            format!("{} ({} after the warm-up)", mb(rss.after), mb(rss.warm)),
        ),
        Row::target(
            "(q) RSS growth over the jobs, from after the warm-up",
            format!(
                "{:+.1} MB ({:+.1} MB from start-up)",
                warm_growth as f64 / 1e6,
                cold_growth as f64 / 1e6
            ),
            "< 5 MB",
            warm_growth < MAX_QUEUE_RSS_GROWTH,
        ),
    ]);
    rows.extend(peers::rows(q));
    rows
}

/// How the queue figures were measured, and BullMQ's, from the same run, beside ours.
fn queue_notes(q: &queues::Results) -> String {
    let mut out = String::from("\n### Queues: method and peers\n\n");
    let _ = writeln!(
        out,
        "Queue rows (q): {}. Trivial jobs (`fixture-noop-processor`, 261-byte payloads), one \
         fresh instance each, over 3 queues. **redis**: the `llmchat up` binary on a private \
         `redis-server` {} (unix socket, no persistence); for each round the host is frozen \
         (SIGSTOP), the jobs are enqueued through the host library, and the clock runs from \
         SIGCONT until the queues' `processed` counters (polled every 5 ms) reach the total. \
         **memory**: in-process (the same engine, registry and `QueueWorker` as `llmchat up`, \
         2 tokio workers), the clock running from the worker's start, because jobs cannot be \
         put into the binary's memory backend before it starts. Commands sent are counted \
         with MONITOR over a separate round (bench over TCP, everyone else over the unix \
         socket, script internals tagged `lua`). Latencies are timestamped by a \
         keyspace-notification subscriber at each job's first kv write \
         (`fixture-processor`, `{{\"action\":\"record\"}}`).\n",
        q.settings, q.redis_version
    );
    out.push_str(&peers::notes(q));
    out
}

/// Jobs/s of each round, as `28,512 / 29,001 / ...`.
fn round_list(t: &queues::Throughput) -> String {
    let rounds: Vec<String> = t.rounds.iter().map(|r| thousands(*r)).collect();
    rounds.join(" / ")
}

fn cluster_rows(k: &cluster::Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let pairs = || k.single.throughput.iter().zip(&k.cluster.throughput);
    for (single, cluster) in pairs() {
        let ratio = cluster.jobs_per_sec() / single.jobs_per_sec().max(f64::MIN_POSITIVE);
        let mut result = format!(
            "cluster {} jobs/s ({}) vs one Redis {} jobs/s ({}): {ratio:.2}×",
            thousands(cluster.jobs_per_sec()),
            round_list(cluster),
            thousands(single.jobs_per_sec()),
            round_list(single)
        );
        let stalled = single.stalled + cluster.stalled;
        if stalled > 0 {
            let _ = write!(
                result,
                "; **STALLED**: {} jobs left after {STALL_NOTE}",
                thousands(stalled as f64)
            );
        }
        rows.push(
            Row::target(
                &format!(
                    "(k) jobs/s, 3 queues × concurrency {}, cluster / one Redis",
                    single.concurrency
                ),
                result,
                "≥ 0.80× (≤ 20% cost)",
                ratio >= MIN_CLUSTER_RATIO,
            )
            .with_errors(single.errors + cluster.errors + stalled),
        );
    }
    let top = |t: &queues::Throughput| {
        let Some((all, per_command)) = &t.redis else {
            return String::new();
        };
        let mut top: Vec<(&String, &f64)> = per_command.iter().collect();
        top.sort_by(|a, b| b.1.total_cmp(a.1));
        let top: Vec<String> = top
            .iter()
            .take(5)
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        format!("{all:.2} ({})", top.join(", "))
    };
    let cpu = |t: &queues::Throughput| {
        t.cpu_us.map_or(String::new(), |(host, redis)| {
            let replicas = if t.replicas_cpu_us > 0.0 {
                format!(", replicas {:.1} of it", t.replicas_cpu_us)
            } else {
                String::new()
            };
            format!("host {host:.1} + redis {redis:.1} µs{replicas}")
        })
    };
    let acks = cluster::REPLICA_ACKS;
    for (single, (cluster, durable)) in k
        .single
        .throughput
        .iter()
        .zip(k.cluster.throughput.iter().zip(&k.durable.throughput))
    {
        let ratio = durable.jobs_per_sec() / cluster.jobs_per_sec().max(f64::MIN_POSITIVE);
        let mut result = format!(
            "cluster+acks {} jobs/s ({}) vs cluster {} jobs/s: {ratio:.2}×; {:.2}× one Redis",
            thousands(durable.jobs_per_sec()),
            round_list(durable),
            thousands(cluster.jobs_per_sec()),
            durable.jobs_per_sec() / single.jobs_per_sec().max(f64::MIN_POSITIVE)
        );
        if durable.stalled > 0 {
            let _ = write!(
                result,
                "; **STALLED**: {} jobs left after {STALL_NOTE}",
                thousands(durable.stalled as f64)
            );
        }
        rows.push(
            Row::info(
                &format!(
                    "(k) jobs/s, 3 queues × concurrency {}, cluster with replica_acks = {acks} \
                     / without",
                    durable.concurrency
                ),
                result,
            )
            .with_errors(durable.errors + durable.stalled),
        );
    }
    let arms = [
        ("one Redis", &k.single),
        ("cluster", &k.cluster),
        ("cluster+acks", &k.durable),
    ];
    for (i, single) in k.single.throughput.iter().enumerate() {
        let c = single.concurrency;
        let (cluster, durable) = (&k.cluster.throughput[i], &k.durable.throughput[i]);
        rows.push(Row::info(
            &format!("(k) Redis commands/job with script internals, concurrency {c}"),
            format!(
                "cluster {} (3 masters summed); cluster+acks {}; one Redis {}",
                top(cluster),
                top(durable),
                top(single)
            ),
        ));
        rows.push(Row::info(
            &format!("(k) CPU per job, concurrency {c}"),
            format!(
                "cluster {} (6 nodes); cluster+acks {}; one Redis {}",
                cpu(cluster),
                cpu(durable),
                cpu(single)
            ),
        ));
    }
    // The enqueue call under the fill's load: both concurrencies' measured rounds (the host
    // is frozen meanwhile, so its concurrency does not matter).
    let load = |arm: &cluster::Arm| -> (Vec<f64>, Vec<String>, f64) {
        let mut calls = Vec::new();
        let mut rates = Vec::new();
        let mut all = Vec::new();
        for t in &arm.throughput {
            if let Some(e) = &t.enqueue {
                calls.extend_from_slice(&e.calls_ms);
                rates.push(thousands(e.per_sec()));
                all.extend_from_slice(&e.rounds);
            }
        }
        (calls, rates, median(all))
    };
    let cluster_load = load(&k.cluster);
    for (what, arm) in arms {
        let (calls, rates, rate) = load(arm);
        let mut result = format!(
            "{} calls, {} in flight; enqueued at {} jobs/s (c5 / c50 rounds' medians: {})",
            thousands(calls.len() as f64),
            queues::ENQUEUE_IN_FLIGHT,
            thousands(rate),
            rates.join(" / ")
        );
        if what == "cluster+acks" {
            let _ = write!(
                result,
                "; vs cluster: p50 {:.2}×, p99 {:.2}×, rate {:.2}×",
                percentile(&calls, 50.0) / percentile(&cluster_load.0, 50.0).max(1e-9),
                percentile(&calls, 99.0) / percentile(&cluster_load.0, 99.0).max(1e-9),
                rate / cluster_load.2.max(f64::MIN_POSITIVE)
            );
        }
        let mut row = Row::info(
            &format!("(k) enqueue call under load, {what} (host frozen)"),
            result,
        );
        row.p50 = format!("{:.2} ms", percentile(&calls, 50.0));
        row.p99 = format!("{:.2} ms", percentile(&calls, 99.0));
        rows.push(row);
    }
    let cluster_calls = &k.cluster.latency.calls_ms;
    for (what, arm) in arms {
        let l = &arm.latency;
        let mut result = format!(
            "{} calls, one at a time at 500/s (the enqueue→start jobs)",
            thousands(l.calls_ms.len() as f64)
        );
        if what == "cluster+acks" {
            let _ = write!(
                result,
                "; vs cluster: p50 {:.2}×, p99 {:.2}×",
                percentile(&l.calls_ms, 50.0) / percentile(cluster_calls, 50.0).max(1e-9),
                percentile(&l.calls_ms, 99.0) / percentile(cluster_calls, 99.0).max(1e-9)
            );
        }
        let mut row = Row::info(&format!("(k) enqueue call, {what}, 500 jobs/s"), result);
        row.p50 = format!("{:.2} ms", percentile(&l.calls_ms, 50.0));
        row.p99 = format!("{:.2} ms", percentile(&l.calls_ms, 99.0));
        rows.push(row);
    }
    let cluster_start = &k.cluster.latency.samples_ms;
    for (what, arm) in arms {
        let l = &arm.latency;
        let mut result = format!(
            "{} jobs; to the job's first kv write",
            thousands(l.jobs as f64)
        );
        if what == "cluster+acks" {
            let _ = write!(
                result,
                "; vs cluster: p50 {:.2}×, p99 {:.2}×",
                percentile(&l.samples_ms, 50.0) / percentile(cluster_start, 50.0).max(1e-9),
                percentile(&l.samples_ms, 99.0) / percentile(cluster_start, 99.0).max(1e-9)
            );
        }
        let mut row = Row::info(&format!("(k) enqueue→start, {what}, 500 jobs/s"), result)
            .with_errors(l.missing() as u64);
        row.p50 = format!("{:.2} ms", percentile(&l.samples_ms, 50.0));
        row.p99 = format!("{:.2} ms", percentile(&l.samples_ms, 99.0));
        rows.push(row);
    }
    rows
}

/// How the cluster figures were measured, and where the cluster's cost goes.
fn cluster_notes(k: &cluster::Results) -> String {
    let mut out = String::from("\n### Redis Cluster beside one Redis: method\n\n");
    let placement: Vec<String> = queues::QUEUES
        .iter()
        .zip(&k.placement)
        .map(|(q, m)| format!("{q} on master {m}"))
        .collect();
    let _ = writeln!(
        out,
        "Cluster rows (k): {}. The (q) method, the real `llmchat up` binary, on one private \
         `redis-server` and on a private 6-node Redis Cluster (3 masters with a replica each; \
         {}), both over loopback TCP; after a warm-up each, their rounds alternate. Commands \
         per job are `total_commands_processed` (script internals included) over the measured \
         rounds, summed over the masters; CPU per job counts every `redis-server` (on the \
         cluster, the replicas too). Enqueue→start: a keyspace-notification subscriber on \
         every master timestamps each job's first kv write.\n",
        k.settings,
        placement.join(", ")
    );
    for (single, cluster) in k.single.throughput.iter().zip(&k.cluster.throughput) {
        let ratio = cluster.jobs_per_sec() / single.jobs_per_sec().max(f64::MIN_POSITIVE);
        let all = |t: &queues::Throughput| t.redis.as_ref().map_or(0.0, |(all, _)| *all);
        let (sh, sr) = single.cpu_us.unwrap_or_default();
        let (ch, cr) = cluster.cpu_us.unwrap_or_default();
        let _ = writeln!(
            out,
            "- concurrency {}: the cluster keeps {:.0}% of one Redis's jobs/s{}. Per job: \
             commands {:.2} → {:.2}; host CPU {sh:.1} → {ch:.1} µs; redis-server CPU \
             {sr:.1} → {cr:.1} µs ({:.1} µs of it on the replicas). Host + Redis CPU at this \
             rate: {:.2} → {:.2} cores of {}.",
            single.concurrency,
            ratio * 100.0,
            if ratio >= MIN_CLUSTER_RATIO {
                ""
            } else {
                " (**more than the 20% the target allows**: see the CPU per job)"
            },
            all(single),
            all(cluster),
            cluster.replicas_cpu_us,
            (sh + sr) * single.jobs_per_sec() / 1e6,
            (ch + cr) * cluster.jobs_per_sec() / 1e6,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    out.push_str(&durable_notes(k));
    out
}

/// What `[redis] replica_acks` costs, and why.
fn durable_notes(k: &cluster::Results) -> String {
    let mut out = String::new();
    let placement: Vec<String> = queues::QUEUES
        .iter()
        .zip(&k.placement_durable)
        .map(|(q, m)| format!("{q} on master {m}"))
        .collect();
    let acks = cluster::REPLICA_ACKS;
    let _ = writeln!(
        out,
        "\nReplica acks (issue 14, item 4): the cluster+acks arm is a second private cluster \
         built the same way ({}; masters are numbered by their slots on both), whose host and \
         the bench's enqueuer (the host library, from the same manifest) run with `[redis] \
         replica_acks = {acks}`; a second cluster because two hosts on the same queues would \
         take each other's jobs. Its rounds interleave with the other two arms' (the order \
         rotates each round). \"Enqueue call under load\" times each `Queues::enqueue` of \
         the measured rounds' fills ({} in flight, the host frozen, both concurrencies' rounds \
         together); \"enqueue call, 500 jobs/s\" times the enqueue→start jobs' calls, one at \
         a time.\n",
        placement.join(", "),
        queues::ENQUEUE_IN_FLIGHT
    );
    let _ = writeln!(
        out,
        "What `WAIT` costs: each durable write (an enqueue here) is its script followed by \
         `WAIT {acks} <replica_timeout>` on the same connection, routed to the queue's \
         master. The master answers only after asking its replica for its replication \
         offset (`REPLCONF GETACK`) and hearing back: one more round trip, to a process \
         that shares the 2 cores. And a client blocked in `WAIT` has no further command \
         read until it is answered, so on the host library's multiplexed connections the \
         enqueues pipelined behind it wait too: under load, each connection to a master \
         carries about one enqueue per replica round trip instead of a pipeline of them. \
         The jobs themselves (fetch, complete) do not wait, so jobs/s once the jobs are \
         queued hardly move; the cost is in the enqueue call and in how many jobs per \
         second one producer can enqueue. Nor does enqueue→start: the job can be read, \
         and its doorbell rings, as soon as the master has run the script, before the \
         `WAIT` answers; and the keyspace event of the job's kv write comes as the master \
         applies it, before that write's own `WAIT`. Not measured here: while a \
         connection waits, the host's other commands pipelined on it (a job's fetch, \
         complete, heartbeat) wait as well, which jobs that write kv would feel."
    );
    for ((cluster, durable), single) in k
        .cluster
        .throughput
        .iter()
        .zip(&k.durable.throughput)
        .zip(&k.single.throughput)
    {
        let all = |t: &queues::Throughput| t.redis.as_ref().map_or(0.0, |(all, _)| *all);
        let wait = |t: &queues::Throughput| {
            t.redis
                .as_ref()
                .and_then(|(_, per)| per.get("wait").copied())
                .unwrap_or(0.0)
        };
        let cpu = |t: &queues::Throughput| {
            let (h, r) = t.cpu_us.unwrap_or_default();
            (h, r, t.replicas_cpu_us)
        };
        let ((_, cr, crr), (dh, dr, drr)) = (cpu(cluster), cpu(durable));
        let rate = |t: &queues::Throughput| t.enqueue.as_ref().map_or(0.0, |e| e.per_sec());
        let _ = writeln!(
            out,
            "- concurrency {}: cluster+acks {:.0}% of the cluster's jobs/s ({:.0}% of one \
             Redis's); enqueued at {} vs {} jobs/s ({:.2}×). Per job: commands {:.2} → {:.2} \
             (`WAIT` {:.2}); CPU while the jobs run (the fill is outside it): host {:.1} → \
             {dh:.1} µs, redis-server {cr:.1} → {dr:.1} µs ({crr:.1} → {drr:.1} on the \
             replicas).",
            cluster.concurrency,
            durable.jobs_per_sec() / cluster.jobs_per_sec().max(f64::MIN_POSITIVE) * 100.0,
            durable.jobs_per_sec() / single.jobs_per_sec().max(f64::MIN_POSITIVE) * 100.0,
            thousands(rate(durable)),
            thousands(rate(cluster)),
            rate(durable) / rate(cluster).max(f64::MIN_POSITIVE),
            all(cluster),
            all(durable),
            wait(durable),
            cpu(cluster).0,
        );
    }
    out
}

fn soak_rows(s: &soak::Results) -> Vec<Row> {
    let [first, last] = &s.marks;
    let (at_first, at_last) = (count_label(soak::FIRST_MARK), count_label(s.total));
    let mix = &s.mix;
    let growth = s.rss_growth();
    let drift = |a: u64, b: u64| a.abs_diff(b);
    let range = |(lo, hi): (u64, u64)| {
        if lo == hi {
            String::new()
        } else {
            format!(" (range {lo}–{hi})")
        }
    };
    let lag = &s.lag;
    let mut lag_row = Row::target(
        "(s) scheduler lag over the soak, every entry",
        format!(
            "{} starts; mean {:.2} ms; {} over 5 ms; worst {}",
            thousands(lag.count as f64),
            lag.mean * 1e3,
            thousands(lag.over_5ms as f64),
            lag.worst_le
                .map_or("above 1 s".to_string(), |le| format!("≤ {}", secs(le)))
        ),
        "p99 ≤ 5 ms",
        lag.count > 0 && lag.p99 <= MAX_SOAK_LAG_P99_SECS,
    );
    lag_row.p50 = secs(lag.p50);
    lag_row.p99 = secs(lag.p99);
    let ticks = &s.ticks;
    let mut soak_row = Row::info(
        "(s) soak: invocations by trigger",
        format!(
            "{} (http {} / queue {} / schedule {}); {} of them in {:.1} s under load ({}/s); \
             {} backend",
            thousands(mix.total() as f64),
            thousands(mix.http as f64),
            thousands(mix.queue as f64),
            thousands(mix.schedule as f64),
            thousands(s.under_load as f64),
            s.load_secs,
            thousands(s.under_load as f64 / s.load_secs.max(1e-9)),
            s.backend.as_str()
        ),
    )
    .with_errors(s.errors());
    if last.backlog > 0 || first.backlog > 0 {
        let _ = write!(
            soak_row.result,
            "; queue backlog when the load stopped: {} jobs at {at_first} (ran in {:.1} s), {} \
             at {at_last} (ran in {:.1} s)",
            thousands(first.backlog as f64),
            first.drained_in.as_secs_f64(),
            thousands(last.backlog as f64),
            last.drained_in.as_secs_f64()
        );
    }
    soak_row.p50 = format!("{:.2} ms", s.wrk_p50_ms);
    soak_row.p99 = format!("{:.2} ms", s.wrk_p99_ms);
    vec![
        soak_row,
        Row::info(
            &format!("(s) RSS at {at_first} invocations"),
            format!(
                "{} (anon {}; {} invocations)",
                mb(first.rss),
                mb(first.rss_anon),
                thousands(first.invocations as f64)
            ),
        ),
        Row::info(
            &format!("(s) RSS at {at_last} invocations"),
            format!(
                "{} (anon {}; {} invocations)",
                mb(last.rss),
                mb(last.rss_anon),
                thousands(last.invocations as f64)
            ),
        ),
        Row::target(
            &format!("(s) RSS growth, {at_first} → {at_last} invocations"),
            format!(
                "{:+.1} MB (anon {:+.1} MB)",
                growth as f64 / 1e6,
                (last.rss_anon as i64 - first.rss_anon as i64) as f64 / 1e6
            ),
            "≤ 5 MB",
            growth <= MAX_SOAK_RSS_GROWTH,
        ),
        lag_row,
        Row::target(
            &format!("(s) tokio alive tasks, {at_first} → {at_last}"),
            format!(
                "{}{} → {}{}",
                first.tasks,
                range(first.tasks_range),
                last.tasks,
                range(last.tasks_range)
            ),
            &format!("equal within {MAX_SOAK_DRIFT}"),
            drift(first.tasks, last.tasks) <= MAX_SOAK_DRIFT,
        ),
        Row::target(
            &format!("(s) timers armed, {at_first} → {at_last}"),
            format!(
                "{}{} → {}{}",
                first.timers,
                range(first.timers_range),
                last.timers,
                range(last.timers_range)
            ),
            &format!("equal within {MAX_SOAK_DRIFT}"),
            drift(first.timers, last.timers) <= MAX_SOAK_DRIFT,
        ),
        Row::info(
            "(s) schedule ticks: ok / skipped / failed / unclaimed",
            format!(
                "{} ({:.0}/s under load, {} expected) / {} / {} / {}; monitor runs p50 {} \
                 p99 {}",
                thousands(ticks.get("ok") as f64),
                ticks.ok_per_sec,
                thousands((soak::SCHEDULES as u64 * 1000 / soak::SCHEDULE_EVERY_MS) as f64),
                thousands(ticks.get("skipped") as f64),
                ticks.get("failed"),
                ticks.get("unclaimed"),
                secs(ticks.run_p50),
                secs(ticks.run_p99)
            ),
        )
        .with_errors(ticks.get("skipped") + ticks.get("failed") + ticks.get("unclaimed")),
        Row::info(
            "(s) host CPU per invocation under load",
            format!(
                "{:.1} µs; other processes used {:.0}% of the CPUs meanwhile",
                s.host_cpu_us,
                s.others_share * 100.0
            ),
        ),
    ]
}

/// How the soak was run.
fn soak_notes(s: &soak::Results) -> String {
    let mut out = String::from("\n### Soak: method\n\n");
    let _ = writeln!(
        out,
        "Soak rows (s): {}. The real `llmchat up` binary; invocations are \
         `llmchat_component_invocations_total` summed over every component and trigger. \
         Checkpoints at {} invocations and at the total: the load stops, the queues drain, \
         then VmRSS and RssAnon (/proc) and the median of {} scrapes {} ms apart of \
         `llmchat_tokio_alive_tasks` and `llmchat_timers_armed` (the schedules keep ticking; \
         the range shows scrapes that caught a tick's runs). Scheduler lag: the bucket deltas \
         of `llmchat_scheduler_lag_seconds` over both load phases, quantiles interpolated \
         within buckets (`histogram_quantile`); it covers every scheduler entry, the host's \
         own maintenance included. The p50/p99 of the first row are wrk's latencies over the \
         long phase, at {} req/s; {} jobs were enqueued through the admin API; {:.0} s wall \
         clock in all; the slowest `/metrics` scrape under load took {:.0} ms.\n",
        s.settings,
        thousands(soak::FIRST_MARK as f64),
        soak::SETTLE_SAMPLES,
        soak::SETTLE_EVERY.as_millis(),
        thousands(s.wrk_req_per_sec),
        thousands(s.enqueued as f64),
        s.wall_secs,
        s.slowest_scrape.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        out,
        "Errors: {} component errors, {} wrk non-2xx or socket errors, {} enqueue calls \
         refused{}.",
        s.component_errors,
        s.wrk_errors,
        s.enqueue_errors,
        s.first_enqueue_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    if s.others_share > soak::MAX_OTHERS_SHARE {
        let _ = writeln!(
            out,
            "\n**Disturbed**: other processes used {:.0}% of the CPUs during the soak; rerun \
             it on a quiet machine.",
            s.others_share * 100.0
        );
    }
    out
}

/// `1,000,000` as `1M`, `10,000` as `10k`.
fn count_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        thousands(n as f64)
    }
}

/// Seconds as `0.42 ms` (or `1.20 s`).
fn secs(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.2} s")
    } else {
        format!("{:.2} ms", v * 1e3)
    }
}

/// A markdown table with padded columns, so that it also reads well as plain text.
fn table(rows: &[Row]) -> String {
    let header = [
        "Benchmark",
        "Result",
        "p50",
        "p99",
        "Errors",
        "Target",
        "Status",
    ];
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.cells()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(s, " {cell}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    out.push('|');
    for w in widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.cells()));
    }
    out
}

fn rps(load: &Load) -> String {
    format!("{} req/s", thousands(load.req_per_sec()))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `28512.4` as `28,512`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
