//! The report: one markdown table with every figure, its target from the issue, and
//! PASS/MISS. A row whose load produced errors (non-2xx responses, socket errors, a bomb
//! that did not answer 500) never passes, and an untargeted one is marked FLAGGED.

use std::fmt::Write;
use std::time::Duration;

use crate::load::Load;
use crate::{invocation, memory};

/// Targets from issue 2.
const MAX_INVOCATION_US: f64 = 10.0;
const MIN_RATIO_SERVE_DEFAULT: f64 = 2.0;
const MIN_RATIO_SERVE_TUNED: f64 = 1.5;
const MAX_P99: Duration = Duration::from_millis(10);
const MIN_AGENTS_RPS: f64 = 10_000.0;
const MAX_IDLE_RSS: u64 = 40_000_000;
const MAX_RSS_GROWTH: i64 = 5_000_000;

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
    /// Idle RSS of the first host of the run, which compiled its components.
    pub cold_rss: u64,
    pub memory: memory::Results,
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
    let targeted: Vec<_> = rows
        .iter()
        .filter(|row| matches!(row.status, Status::Pass | Status::Miss))
        .collect();
    let met = targeted
        .iter()
        .filter(|row| row.status == Status::Pass)
        .count();
    let _ = writeln!(out, "\n{met} of {} targets met.", targeted.len());
    out
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
    rows
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
fn thousands(value: f64) -> String {
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
