//! `llmchat job`, `llmchat jobs`, `llmchat pause` and `llmchat resume`: one job, jobs by
//! state, and stopping or restarting a queue on every host.

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use super::client::AdminClient;
use super::queues::segment;
use super::{HostArg, UsageError, table};

/// How much of a payload, result or error `llmchat jobs` shows.
const CELL_CHARS: usize = 50;

#[derive(clap::Args)]
pub struct JobArgs {
    /// The queue, as named by a `[[trigger.queue]]` of the host's manifest.
    pub queue: String,
    /// The job id, as `llmchat enqueue` printed it.
    pub id: String,
    /// Remove the job instead (a waiting, delayed or failed one).
    #[arg(long)]
    pub remove: bool,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(clap::Args)]
pub struct JobsArgs {
    pub queue: String,
    /// Which jobs: waiting, delayed, active, completed, failed or dead.
    #[arg(long, value_parser = parse_state)]
    pub state: String,
    /// List at most this many (the host caps it at 1000) [default: 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(clap::Args)]
pub struct PauseArgs {
    /// The queue to pause or resume on every host sharing the backend.
    pub queue: String,
    #[command(flatten)]
    pub host: HostArg,
}

/// Checks the state here so that a typo exits 2 before any request.
fn parse_state(state: &str) -> Result<String, String> {
    state
        .parse::<llmchat_host::queue::JobState>()
        .map(|s| s.to_string())
}

/// Prints the job as the host returns it (JSON), or removes it.
pub async fn job(args: JobArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let path = format!(
        "/admin/queues/{}/jobs/{}",
        segment(&args.queue),
        segment(&args.id)
    );
    if args.remove {
        let answer: Value = client.delete(&path).await?;
        let state = answer["state"].as_str().unwrap_or("?");
        println!("removed {} ({state})", args.id);
        return Ok(());
    }
    let job: Value = client.get(&path).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

#[derive(Deserialize)]
struct JobList {
    jobs: Vec<JobRow>,
}

#[derive(Deserialize)]
struct JobRow {
    id: String,
    attempt: u32,
    max_attempts: u32,
    payload: Value,
    result: Option<String>,
    error: Option<String>,
    progress: Option<Value>,
}

pub async fn jobs(args: JobsArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let limit = args
        .limit
        .map(|n| format!("&limit={n}"))
        .unwrap_or_default();
    let path = format!(
        "/admin/queues/{}/jobs?state={}{limit}",
        segment(&args.queue),
        args.state
    );
    let list: JobList = client.get(&path).await?;
    if list.jobs.is_empty() {
        println!("no {} jobs in queue `{}`", args.state, args.queue);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .jobs
        .into_iter()
        .map(|j| {
            let outcome = j
                .result
                .or(j.error)
                .or_else(|| j.progress.filter(|p| !p.is_null()).map(|p| p.to_string()))
                .unwrap_or_default();
            vec![
                j.id,
                format!("{}/{}", j.attempt, j.max_attempts),
                table::truncate(&outcome, CELL_CHARS),
                table::truncate(&j.payload.to_string(), CELL_CHARS),
            ]
        })
        .collect();
    let headers = ["ID", "ATTEMPT", "RESULT / ERROR / PROGRESS", "PAYLOAD"];
    print!("{}", table::render(&headers, &rows));
    Ok(())
}

pub async fn pause(args: PauseArgs, paused: bool) -> Result<()> {
    if args.queue.is_empty() {
        return Err(UsageError("give the queue to pause or resume".into()).into());
    }
    let client = AdminClient::new(&args.host.url)?;
    let action = if paused { "pause" } else { "resume" };
    let path = format!("/admin/queues/{}/{action}", segment(&args.queue));
    let _: Value = client.post_empty(&path).await?;
    println!(
        "queue `{}` {}",
        args.queue,
        if paused {
            "paused on every host: jobs wait until `llmchat resume`"
        } else {
            "resumed"
        }
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct RepeatsArgs {
    pub queue: String,
    /// Remove the run-time entry with this key (as `llmchat enqueue --every` printed it).
    #[arg(long, value_name = "KEY")]
    pub remove: Option<String>,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(Deserialize)]
struct RepeatList {
    repeats: Vec<RepeatRow>,
}

#[derive(Deserialize)]
struct RepeatRow {
    key: String,
    origin: String,
    schedule: String,
    payload: Value,
}

/// Lists a queue's repeat entries (the manifest's and the run-time ones), or removes one.
pub async fn repeats(args: RepeatsArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let path = format!("/admin/queues/{}/repeats", segment(&args.queue));
    if let Some(key) = &args.remove {
        let _: Value = client.delete(&format!("{path}/{}", segment(key))).await?;
        println!("removed {key}");
        return Ok(());
    }
    let list: RepeatList = client.get(&path).await?;
    if list.repeats.is_empty() {
        println!("no repeat entries on queue `{}`", args.queue);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .repeats
        .into_iter()
        .map(|r| {
            vec![
                r.key,
                r.origin,
                r.schedule,
                table::truncate(&r.payload.to_string(), CELL_CHARS),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["KEY", "ORIGIN", "SCHEDULE", "PAYLOAD"], &rows)
    );
    Ok(())
}
