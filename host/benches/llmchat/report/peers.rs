//! The (q) rows and notes that compare llmchat with BullMQ run in the same bench run
//! (issue 15, item 5): jobs/s ratios keeping nothing and keeping 1,000 completed jobs,
//! Redis commands per job, enqueue→start, CPU per job. Every BullMQ figure here was measured
//! in this run; none is stored.

use std::fmt::Write;

use super::{Row, thousands};
use crate::bullmq::{Outcome, Retention, Throughput as Peer};
use crate::queues::{self, CONCURRENCIES};

/// Targets from issue 15 (item 5): llmchat against BullMQ on the same machine, same run.
const MIN_RATIO: f64 = 3.0;
const MIN_KEEP_RATIO: f64 = 2.0;

/// One llmchat/BullMQ jobs/s row: the ratio against `min`, or SKIP with why a side is missing.
fn ratio_row(
    name: &str,
    ours: Outcome<&queues::Throughput>,
    peer: Outcome<&Peer>,
    min: f64,
) -> Row {
    let target = format!("≥ {min}× BullMQ");
    match (ours, peer) {
        (Ok(ours), Ok(peer)) => {
            let ratio = ours.jobs_per_sec() / peer.jobs_per_sec.max(f64::MIN_POSITIVE);
            Row::target(
                name,
                format!(
                    "{ratio:.2}× ({} / {} jobs/s, rounds interleaved)",
                    thousands(ours.jobs_per_sec()),
                    thousands(peer.jobs_per_sec)
                ),
                &target,
                ratio >= min,
            )
        }
        (Err(reason), _) | (_, Err(reason)) => Row::skipped(name, &cell(&reason), &target),
    }
}

/// BullMQ's jobs/s, commands and CPU per job for one configuration.
fn peer_row(c: u32, retention: Retention, peer: Outcome<&Peer>) -> Row {
    let name = format!(
        "(q) BullMQ jobs/s, 3 queues × concurrency {c}, {}",
        retention.describe()
    );
    match peer {
        Ok(p) => {
            let rounds: Vec<String> = p.rounds.iter().map(|r| thousands(*r)).collect();
            Row::info(
                &name,
                format!(
                    "{} jobs/s (rounds {}); {:.2} commands/job with script internals; CPU/job \
                     node {:.1} µs + redis-server {:.1} µs",
                    thousands(p.jobs_per_sec),
                    rounds.join(" / "),
                    p.commands_per_job,
                    p.cpu_node_us_per_job,
                    p.cpu_redis_us_per_job
                ),
            )
            .with_errors(p.failed)
        }
        Err(reason) => Row::skipped(&name, &cell(&reason), ""),
    }
}

pub(super) fn rows(q: &queues::Results) -> Vec<Row> {
    let b = &q.peers.bullmq;
    let mut rows = Vec::new();
    for (i, c) in CONCURRENCIES.into_iter().enumerate() {
        let ours = q.redis.get(i).ok_or_else(|| "not run".to_string());
        rows.push(peer_row(c, Retention::Remove, b.get(c, Retention::Remove)));
        rows.push(ratio_row(
            &format!("(q) jobs/s llmchat / BullMQ, 3 × concurrency {c}, keeping nothing"),
            ours,
            b.get(c, Retention::Remove),
            MIN_RATIO,
        ));
    }
    for (i, c) in CONCURRENCIES.into_iter().enumerate() {
        let ours = match &q.peers.keep_completed {
            Ok(t) => t.get(i).ok_or_else(|| "not run".to_string()),
            Err(reason) => Err(reason.clone()),
        };
        rows.push(peer_row(c, Retention::Keep, b.get(c, Retention::Keep)));
        rows.push(ratio_row(
            &format!(
                "(q) jobs/s llmchat / BullMQ, 3 × concurrency {c}, both keeping 1,000 completed for 1 h"
            ),
            ours,
            b.get(c, Retention::Keep),
            MIN_KEEP_RATIO,
        ));
    }
    for (i, c) in CONCURRENCIES.into_iter().enumerate() {
        let name = format!(
            "(q) Redis commands/job with script internals, concurrency {c}: llmchat vs BullMQ"
        );
        let ours = q.redis.get(i).and_then(|t| t.redis.as_ref());
        rows.push(match (ours, b.get(c, Retention::Remove)) {
            (Some((ours, _)), Ok(peer)) => Row::target(
                &name,
                format!(
                    "{ours:.2} vs {:.2} (BullMQ: {})",
                    peer.commands_per_job,
                    top(peer)
                ),
                "≤ BullMQ's",
                *ours <= peer.commands_per_job,
            ),
            (None, _) => Row::skipped(&name, "not run", "≤ BullMQ's"),
            (_, Err(reason)) => Row::skipped(&name, &cell(&reason), "≤ BullMQ's"),
        });
    }
    let name = "(q) enqueue→start, BullMQ, 500 jobs/s, 3 × concurrency 5";
    rows.push(match &b.latency {
        Ok(l) => {
            let mut row = Row::info(
                name,
                format!(
                    "{} jobs; to the processor's first line (llmchat's row: to the job's \
                     first kv write); the add call p50 {:.2} / p99 {:.2} ms",
                    thousands(l.jobs as f64),
                    l.call_p50_ms,
                    l.call_p99_ms
                ),
            )
            .with_errors(l.missing);
            row.p50 = format!("{:.2} ms", l.p50_ms);
            row.p99 = format!("{:.2} ms", l.p99_ms);
            row
        }
        Err(reason) => Row::skipped(name, &cell(reason), ""),
    });
    rows
}

/// BullMQ's enqueue→start in this run, for llmchat's row: "; BullMQ p50 … / p99 … ms".
pub(super) fn latency_beside(q: &queues::Results) -> String {
    match &q.peers.bullmq.latency {
        Ok(l) => format!(
            "; BullMQ in this run: p50 {:.2} / p99 {:.2} ms",
            l.p50_ms, l.p99_ms
        ),
        Err(_) => String::new(),
    }
}

/// A reason as a table cell can hold it: one line, no column separator.
fn cell(reason: &str) -> String {
    reason.replace('\n', " ").replace('|', "\\|")
}

/// BullMQ's six most frequent commands per job.
fn top(p: &Peer) -> String {
    let mut by_name: Vec<(&String, &f64)> = p.commands_per_job_by_name.iter().collect();
    by_name.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = by_name
        .iter()
        .take(6)
        .map(|(name, n)| format!("{name} {n:.2}"))
        .collect();
    top.join(", ")
}

/// How BullMQ was run, and its figures beside llmchat's.
pub(super) fn notes(q: &queues::Results) -> String {
    let b = &q.peers.bullmq;
    let mut out = String::new();
    let versions = CONCURRENCIES
        .into_iter()
        .find_map(|c| b.get(c, Retention::Remove).ok())
        .map_or_else(
            || "BullMQ".to_string(),
            |p| {
                format!(
                    "BullMQ {} (Node.js {}, redis-server {})",
                    p.bullmq, p.node, p.redis_version
                )
            },
        );
    let _ = writeln!(
        out,
        "{versions}, in this run: `host/benches/bullmq/bench.mjs` (BullMQ and ioredis pinned by \
         its package-lock.json) on a private `redis-server` of its own, started as llmchat's \
         (unix socket, no persistence). Same workload: 3 queues, one Worker each at the \
         concurrency, 261-byte jobs, a processor that does nothing. Each round starts with \
         FLUSHALL, makes the queues and workers, enqueues the jobs with `addBulk` (chunks of \
         1,000), and the clock runs from the workers' `run()` until the last `completed` \
         event; a warm-up round, then the rounds interleaved with llmchat's redis rounds, the \
         order rotating; medians. Commands per job: `total_commands_processed` over enqueue \
         and processing, script internals included, the bench's own INFO taken out (the \
         method of llmchat's row). CPU per job: utime + stime of node and redis-server over \
         the processing (llmchat's: the host and its redis-server). Enqueue→start: `queue.add` \
         awaited, one every 2 ms, to the processor's first line. Keeping 1,000 completed for \
         1 h: BullMQ's `removeOnComplete` and `removeOnFail` `{{ count: 1000, age: 3600 }}`, \
         and a second llmchat host on its own Redis with `{}` on its queues, its rounds \
         interleaved with the others.\n",
        crate::peers::KEEP_COMPLETED
    );
    let _ = writeln!(out, "| | BullMQ | llmchat (redis) | llmchat / BullMQ |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut line = |what: String, peer: String, ours: String, ratio: String| {
        let _ = writeln!(out, "| {what} | {peer} | {ours} | {ratio} |");
    };
    for retention in Retention::ALL {
        for (i, c) in CONCURRENCIES.into_iter().enumerate() {
            let ours = match retention {
                Retention::Remove => Ok(q.redis.get(i)),
                Retention::Keep => q.peers.keep_completed.as_ref().map(|t| t.get(i)),
            };
            let ours = match ours {
                Ok(Some(t)) => Ok(t.jobs_per_sec()),
                Ok(None) => Err("not run".to_string()),
                Err(reason) => Err(reason.clone()),
            };
            let peer = b.get(c, retention).map(|p| p.jobs_per_sec);
            line(
                format!("jobs/s, 3 × concurrency {c}, {}", retention.keeping()),
                peer.as_ref().map_or_else(|r| cell(r), |r| thousands(*r)),
                ours.as_ref().map_or_else(|r| cell(r), |r| thousands(*r)),
                match (&ours, &peer) {
                    (Ok(o), Ok(p)) => format!("{:.2}×", o / p.max(f64::MIN_POSITIVE)),
                    _ => String::new(),
                },
            );
        }
    }
    for retention in Retention::ALL {
        for (i, c) in CONCURRENCIES.into_iter().enumerate() {
            let ours = match retention {
                Retention::Remove => q.redis.get(i),
                Retention::Keep => q.peers.keep_completed.as_ref().ok().and_then(|t| t.get(i)),
            };
            let (Some(ours), Ok(peer)) = (ours, b.get(c, retention)) else {
                continue;
            };
            let keeping = retention.keeping();
            let all = ours.redis.as_ref().map_or(0.0, |(all, _)| *all);
            line(
                format!("Redis commands/job with script internals, concurrency {c}, {keeping}"),
                format!("{:.2}", peer.commands_per_job),
                format!("{all:.2}"),
                format!("{:.2}×", all / peer.commands_per_job.max(f64::MIN_POSITIVE)),
            );
            if let Some((host, redis)) = ours.cpu_us {
                let peer_cpu = peer.cpu_node_us_per_job + peer.cpu_redis_us_per_job;
                line(
                    format!("CPU/job, concurrency {c}, {keeping}: worker + redis-server"),
                    format!(
                        "{:.1} + {:.1} µs",
                        peer.cpu_node_us_per_job, peer.cpu_redis_us_per_job
                    ),
                    format!("{host:.1} + {redis:.1} µs"),
                    format!("{:.2}×", (host + redis) / peer_cpu.max(f64::MIN_POSITIVE)),
                );
            }
        }
    }
    if let Ok(l) = &b.latency {
        let p = |pct: f64| crate::percentile(&q.latency.samples_ms, pct);
        line(
            "enqueue→start at 500/s, p50 / p99".to_string(),
            format!("{:.2} / {:.2} ms", l.p50_ms, l.p99_ms),
            format!("{:.2} / {:.2} ms", p(50.0), p(99.0)),
            format!("p99 {:.2}×", p(99.0) / l.p99_ms.max(1e-3)),
        );
    }
    out
}
