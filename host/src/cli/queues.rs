//! `llmchat enqueue`, `llmchat queues` and `llmchat dead`: the queue admin commands.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use llmchat_host::manifest::{Backoff, HumanDuration};

use super::client::AdminClient;
use super::{HostArg, UsageError, table};

/// How much of a dead job's payload and error `llmchat dead` shows.
const CELL_CHARS: usize = 60;

#[derive(clap::Args)]
pub struct EnqueueArgs {
    /// The queue, as named by a `[[trigger.queue]]` of the host's manifest.
    pub queue: String,
    /// The job's payload, as JSON, e.g. '{"conversation_id":"c1"}'.
    pub json: String,
    /// Start the job no sooner than this from now, e.g. 5s or 250ms.
    #[arg(long, value_parser = |s: &str| s.parse::<HumanDuration>())]
    pub delay: Option<HumanDuration>,
    /// Drop the job when another with this key was enqueued within the queue's dedup window.
    #[arg(long, value_name = "KEY")]
    pub dedup: Option<String>,
    /// Attempts before the job is dead-lettered [default: the queue's].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Wait between attempts, "fixed:1s" or "exponential:100ms..30s" [default: the queue's].
    #[arg(long, value_name = "SPEC", value_parser = parse_backoff)]
    pub backoff: Option<String>,
    /// 0 to 9, higher first (a queue with `priorities = true` only) [default: 0].
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// Enqueue this payload at every multiple of this period instead (every host, each tick
    /// once); prints the entry's key, for `llmchat repeats --remove`.
    #[arg(long, value_parser = |s: &str| s.parse::<HumanDuration>(), conflicts_with_all = ["cron", "delay", "dedup", "max_attempts", "backoff", "priority"])]
    pub every: Option<HumanDuration>,
    /// Enqueue this payload at every match of this cron expression (UTC) instead.
    #[arg(long, value_name = "EXPR", conflicts_with_all = ["delay", "dedup", "max_attempts", "backoff", "priority"])]
    pub cron: Option<String>,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(clap::Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("action").multiple(false))]
pub struct DeadArgs {
    /// The queue whose dead letters to list, retry or purge.
    pub queue: String,
    /// Enqueue the dead job with this id again, with fresh attempts.
    #[arg(long, value_name = "ID", group = "action")]
    pub retry: Option<String>,
    /// Enqueue every dead job of the queue again.
    #[arg(long, group = "action")]
    pub retry_all: bool,
    /// Delete every dead job of the queue.
    #[arg(long, group = "action")]
    pub purge: bool,
    /// List at most this many dead jobs (the host caps it at 1000) [default: 100].
    #[arg(long, value_name = "N", conflicts_with = "action")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub host: HostArg,
}

/// Checks the spec here so that a typo exits 2 before any request; the host parses it again.
fn parse_backoff(spec: &str) -> Result<String, String> {
    spec.parse::<Backoff>().map(|_| spec.to_string())
}

#[derive(Serialize)]
struct EnqueueBody<'a> {
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backoff: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
}

#[derive(Deserialize)]
struct Enqueued {
    id: String,
    duplicate: bool,
}

pub async fn enqueue(args: EnqueueArgs) -> Result<()> {
    let payload: Box<RawValue> = serde_json::from_str(&args.json)
        .map_err(|e| UsageError(format!("the job payload is not valid JSON: {e}")))?;
    let client = AdminClient::new(&args.host.url)?;
    if args.every.is_some() || args.cron.is_some() {
        let body = serde_json::json!({
            "every": args.every.map(|e| e.to_string()),
            "cron": args.cron,
            "payload": &payload,
        });
        let path = format!("/admin/queues/{}/repeats", segment(&args.queue));
        let answer: serde_json::Value = client.post(&path, &body).await?;
        println!("{}", answer["key"].as_str().unwrap_or_default());
        return Ok(());
    }
    let body = EnqueueBody {
        payload: &payload,
        delay: args.delay.map(|d| d.to_string()),
        dedup_key: args.dedup.as_deref(),
        max_attempts: args.max_attempts,
        backoff: args.backoff.as_deref(),
        priority: args.priority,
    };
    let path = format!("/admin/queues/{}/jobs", segment(&args.queue));
    let answer: Enqueued = client.post(&path, &body).await?;
    if answer.duplicate {
        println!("{} (duplicate)", answer.id);
    } else {
        println!("{}", answer.id);
    }
    Ok(())
}

#[derive(Deserialize)]
struct QueueList {
    backend: String,
    queues: Vec<QueueRow>,
}

#[derive(Deserialize)]
struct QueueRow {
    queue: String,
    component: String,
    waiting: u64,
    in_flight: u64,
    delayed: u64,
    dead: u64,
    processed: u64,
    failed: u64,
    retried: u64,
}

pub async fn queues(args: QueuesArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let list: QueueList = client.get("/admin/queues").await?;
    println!("backend: {}", list.backend);
    if list.queues.is_empty() {
        println!("no queues: the manifest has no [[trigger.queue]]");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .queues
        .into_iter()
        .map(|q| {
            let counts = [
                q.waiting,
                q.in_flight,
                q.delayed,
                q.dead,
                q.processed,
                q.failed,
                q.retried,
            ];
            [q.queue, q.component]
                .into_iter()
                .chain(counts.map(|n| n.to_string()))
                .collect()
        })
        .collect();
    let headers = [
        "QUEUE",
        "COMPONENT",
        "WAITING",
        "IN-FLIGHT",
        "DELAYED",
        "DEAD",
        "PROCESSED",
        "FAILED",
        "RETRIED",
    ];
    print!("{}", table::render(&headers, &rows));
    Ok(())
}

#[derive(Deserialize)]
struct DeadList {
    jobs: Vec<DeadRow>,
}

#[derive(Deserialize)]
struct DeadRow {
    id: String,
    payload: Box<RawValue>,
    attempt: u32,
    max_attempts: u32,
    error: String,
}

#[derive(Deserialize)]
struct Retried {
    retried: usize,
}

#[derive(Deserialize)]
struct Purged {
    purged: usize,
}

pub async fn dead(args: DeadArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let queue = segment(&args.queue);
    let retry_path = format!("/admin/queues/{queue}/dead/retry");
    if let Some(id) = &args.retry {
        let answer: Retried = client
            .post(&retry_path, &serde_json::json!({ "id": id }))
            .await?;
        println!("retried {}", jobs(answer.retried));
    } else if args.retry_all {
        let answer: Retried = client
            .post(&retry_path, &serde_json::json!({ "all": true }))
            .await?;
        println!("retried {}", jobs(answer.retried));
    } else if args.purge {
        let answer: Purged = client
            .delete(&format!("/admin/queues/{queue}/dead"))
            .await?;
        println!("purged {}", jobs(answer.purged));
    } else {
        let limit = args
            .limit
            .map(|n| format!("?limit={n}"))
            .unwrap_or_default();
        let list: DeadList = client
            .get(&format!("/admin/queues/{queue}/dead{limit}"))
            .await?;
        if list.jobs.is_empty() {
            println!("no dead jobs in queue `{}`", args.queue);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = list
            .jobs
            .into_iter()
            .map(|j| {
                vec![
                    j.id,
                    format!("{}/{}", j.attempt, j.max_attempts),
                    table::truncate(&j.error, CELL_CHARS),
                    table::truncate(j.payload.get(), CELL_CHARS),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(&["ID", "ATTEMPTS", "ERROR", "PAYLOAD"], &rows)
        );
    }
    Ok(())
}

fn jobs(n: usize) -> String {
    if n == 1 {
        "1 job".to_string()
    } else {
        format!("{n} jobs")
    }
}

/// A queue name (or job id) as one URL path segment.
pub(super) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_escaped_as_one_path_segment() {
        assert_eq!(segment("summarize"), "summarize");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn backoff_specs_are_checked_before_sending() {
        assert_eq!(parse_backoff("fixed:1s").unwrap(), "fixed:1s");
        assert!(parse_backoff("linear:1s").is_err());
    }
}
