//! (b, c) HTTP load with `wrk`: `wrk -t1 -c100 -d10s --latency URL`, 3 rounds, medians; and
//! without keep-alive with `ab -n 10000 -c 100 URL` (issue 13: the post-mortem's own test,
//! a new connection per request), 3 rounds, medians, when `ab` is installed.
//!
//! The targets run interleaved (round 1 of each, then round 2 of each, …) so that a slow
//! moment of the machine lands on all of them rather than on one side of a ratio. Every
//! non-2xx response and socket error is counted, because a server that answers errors
//! quickly would otherwise look fast.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::median;

const CONNECTIONS: u32 = 100;
const ROUNDS: usize = 3;
const DEFAULT_SECS: u64 = 10;
const WARM_UP: Duration = Duration::from_secs(2);
/// `ab -n AB_REQUESTS -c CONNECTIONS`, as the post-mortem ran it.
pub const AB_REQUESTS: u32 = 10_000;

pub struct WrkSettings {
    duration: Duration,
}

impl WrkSettings {
    /// The defaults, or `LLMCHAT_BENCH_WRK_SECS` seconds per run.
    pub fn from_env() -> Result<Self> {
        let secs = match std::env::var("LLMCHAT_BENCH_WRK_SECS") {
            Ok(v) => v.parse().with_context(|| {
                format!("LLMCHAT_BENCH_WRK_SECS must be whole seconds, got {v:?}")
            })?,
            Err(_) => DEFAULT_SECS,
        };
        Ok(Self {
            duration: Duration::from_secs(secs.max(1)),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "wrk -t1 -c{CONNECTIONS} -d{}s --latency, {ROUNDS} rounds interleaved, medians",
            self.duration.as_secs()
        )
    }
}

/// One URL to load.
pub struct Target {
    label: &'static str,
    url: String,
}

impl Target {
    pub fn new(label: &'static str, url: String) -> Self {
        Self { label, url }
    }
}

/// What one `wrk` run reported.
pub struct WrkRun {
    pub req_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub non_2xx: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
}

/// The rounds of one target.
pub struct Load {
    pub runs: Vec<WrkRun>,
}

impl Load {
    pub fn req_per_sec(&self) -> f64 {
        median(self.runs.iter().map(|r| r.req_per_sec).collect())
    }

    pub fn p50(&self) -> Duration {
        Duration::from_secs_f64(median(
            self.runs.iter().map(|r| r.p50.as_secs_f64()).collect(),
        ))
    }

    pub fn p99(&self) -> Duration {
        Duration::from_secs_f64(median(
            self.runs.iter().map(|r| r.p99.as_secs_f64()).collect(),
        ))
    }

    /// Non-2xx responses and socket errors over all rounds.
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.non_2xx + r.socket_errors).sum()
    }
}

/// Loads every target for [`ROUNDS`] rounds after a short warm-up; one [`Load`] per target,
/// in order.
pub fn measure(targets: &[Target], settings: &WrkSettings) -> Result<Vec<Load>> {
    interleaved(
        targets,
        "",
        |url| wrk(url, WARM_UP),
        |url| wrk(url, settings.duration),
    )
}

/// One warm-up with `warm` per target, then [`ROUNDS`] rounds of `run` over the targets in
/// turn (so a drift of the machine hits them alike); one [`Load`] per target, in order.
/// `tool` prefixes the progress lines ("" for wrk, "ab ").
fn interleaved(
    targets: &[Target],
    tool: &str,
    warm: impl Fn(&str) -> Result<WrkRun>,
    run: impl Fn(&str) -> Result<WrkRun>,
) -> Result<Vec<Load>> {
    for t in targets {
        warm(&t.url).with_context(|| format!("warming up {} {tool}", t.label))?;
    }
    let mut loads: Vec<Load> = targets.iter().map(|_| Load { runs: Vec::new() }).collect();
    for round in 1..=ROUNDS {
        for (t, load) in targets.iter().zip(&mut loads) {
            let result = run(&t.url)
                .with_context(|| format!("loading {} {tool}(round {round})", t.label))?;
            eprintln!(
                "  {tool}round {round}/{ROUNDS} {:<26} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                t.label,
                result.req_per_sec,
                result.p50.as_secs_f64() * 1e3,
                result.p99.as_secs_f64() * 1e3,
                result.non_2xx + result.socket_errors
            );
            load.runs.push(result);
        }
    }
    Ok(loads)
}

/// The `ab` loads.
pub struct AbLoads {
    pub hello: Load,
    pub agents: Load,
    /// `wasmtime serve` with tuned pooling, when installed.
    pub serve_tuned: Option<Load>,
}

/// `ab`'s rounds: one [`Load`] per target, in order, interleaved as [`measure`]'s, after one
/// warm-up run each; `None` when `ab` is not installed (the rows say so).
pub fn measure_ab(targets: &[Target]) -> Result<Option<Vec<Load>>> {
    let installed = Command::new("ab")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("  ab is not installed (`just deps` installs apache2-utils): no ab rows");
        return Ok(None);
    }
    interleaved(targets, "ab ", ab, ab).map(Some)
}

/// One `ab -n 10000 -c 100 URL` (HTTP/1.0, no keep-alive: a new connection per request).
fn ab(url: &str) -> Result<WrkRun> {
    let mut command = Command::new("ab");
    command.args(["-q", "-n", &AB_REQUESTS.to_string()]).args([
        "-c",
        &CONNECTIONS.to_string(),
        url,
    ]);
    let stdout = stdout_of(command, "ab", "running ab")?;
    parse_ab(&stdout).with_context(|| format!("unexpected ab output:\n{stdout}"))
}

/// Runs `command` (`tool` names it in errors, `context` says how to get it) and returns its
/// stdout, or the whole output when it failed.
fn stdout_of(mut command: Command, tool: &str, context: &'static str) -> Result<String> {
    let output = command.output().context(context)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{tool} failed with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Reads `Requests per second:`, the 50% and 99% lines of "Percentage of the requests served
/// within a certain time (ms)" (whole milliseconds), `Failed requests:` (connect, receive,
/// length and exception failures) and `Non-2xx responses:` from ab 2.3's report.
fn parse_ab(out: &str) -> Result<WrkRun> {
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let number = |prefix: &str| -> Result<f64> {
        field(prefix)
            .with_context(|| format!("no `{prefix}` line"))?
            .parse()
            .with_context(|| format!("parsing `{prefix}`"))
    };
    let count = |prefix: &str| -> Result<u64> {
        field(prefix).map_or(Ok(0), |n| {
            n.parse().with_context(|| format!("parsing `{prefix}`"))
        })
    };
    Ok(WrkRun {
        req_per_sec: number("Requests per second:")?,
        p50: Duration::from_secs_f64(number("50%")? / 1e3),
        p99: Duration::from_secs_f64(number("99%")? / 1e3),
        non_2xx: count("Non-2xx responses:")?,
        socket_errors: count("Failed requests:")?,
    })
}

/// One `wrk -t1 -c100 --latency` run of `duration` against `url`.
pub fn wrk(url: &str, duration: Duration) -> Result<WrkRun> {
    let mut command = Command::new("wrk");
    command
        .args(["-t1", &format!("-c{CONNECTIONS}")])
        .arg(format!("-d{}s", duration.as_secs()))
        .args(["--latency", url]);
    let stdout = stdout_of(
        command,
        "wrk",
        "running wrk (install it with `just setup` or `apt-get install wrk`)",
    )?;
    parse(&stdout).with_context(|| format!("unexpected wrk output:\n{stdout}"))
}

/// Reads `Requests/sec`, the 50% and 99% lines of `Latency Distribution`, `Non-2xx or 3xx
/// responses` and `Socket errors` from wrk 4's report.
fn parse(out: &str) -> Result<WrkRun> {
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
    };
    let req_per_sec = field("Requests/sec:")
        .context("no `Requests/sec:` line")?
        .parse()
        .context("parsing `Requests/sec:`")?;
    let p50 = parse_latency(field("50%").context("no `50%` latency line")?)?;
    let p99 = parse_latency(field("99%").context("no `99%` latency line")?)?;
    let non_2xx = match field("Non-2xx or 3xx responses:") {
        Some(n) => n.parse().context("parsing `Non-2xx or 3xx responses:`")?,
        None => 0,
    };
    // "Socket errors: connect 0, read 12, write 0, timeout 0"
    let socket_errors = match field("Socket errors:") {
        Some(list) => list
            .split(',')
            .map(|kind| {
                kind.split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .with_context(|| format!("parsing socket errors {list:?}"))
            })
            .sum::<Result<u64>>()?,
        None => 0,
    };
    Ok(WrkRun {
        req_per_sec,
        p50,
        p99,
        non_2xx,
        socket_errors,
    })
}

/// wrk prints latencies as e.g. `912.00us`, `3.10ms`, `1.02s` or `1.50m`.
fn parse_latency(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency {text:?} has no unit"))?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value
        .parse()
        .with_context(|| format!("parsing latency {text:?}"))?;
    let secs = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("latency {text:?} has an unknown unit"),
    };
    Ok(Duration::from_secs_f64(secs))
}
