//! `llmchat`: the command line of the llmchat runtime.
//!
//! `llmchat up` loads the manifest, builds every host service once (engine, components,
//! kv, llm, metrics, HTTP server), serves until SIGTERM or SIGINT, then drains and exits 0.
//! The other commands ([`cli`]) talk to a running host through its admin API, except
//! `compile`, which the server also runs as its compiler child.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use llmchat_host::admin::{AdminApi, AdminAuth};
use llmchat_host::capabilities::Services;
use llmchat_host::dashboard::Dashboard;
use llmchat_host::deploy::{Deployer, LiveParts};
use llmchat_host::engine::{CompilerOptions, PoolSizing};
use llmchat_host::http::{HttpServer, Tls};
use llmchat_host::kv::{KvStore, MemoryKv, RedisKv};
use llmchat_host::limits::RateLimiter;
use llmchat_host::limits::llm::LlmGate;
use llmchat_host::limits::local::{DEFAULT_MAX_KEYS, LocalRateLimiter};
use llmchat_host::limits::redis::RedisLimiter;
use llmchat_host::manifest::{ByteSize, HumanDuration, Manifest, TlsFiles};
use llmchat_host::metrics::{Metrics, PoolSource};
use llmchat_host::queue::memory::MemoryQueue;
use llmchat_host::queue::redis::RedisQueue;
use llmchat_host::queue::{QueueBackend, Queues};
use llmchat_host::redis::RedisPool;
use llmchat_host::registry::Registry;
use llmchat_host::runtime::ComponentEngine;
use llmchat_host::scheduler::Scheduler;
use llmchat_host::telemetry::{self, Telemetry};
use llmchat_host::triggers::TriggerSet;
use llmchat_host::triggers::http::LiveRoutes;
use llmchat_host::triggers::queue::QueueWorker;
use llmchat_host::triggers::schedule::{LocalClaims, RedisClaims, Schedules, TickClaims};

/// How long the runtime may take to cancel what is left after the grace period.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "llmchat",
    version,
    about = "Run an LLM chat backend made of WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object per line (level, target, fields, spans).
    #[arg(long, global = true, env = "LLMCHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load the manifest's components and serve them.
    Up(UpArgs),
    /// Enqueue a job on a running host's queue; prints the job id.
    Enqueue(cli::queues::EnqueueArgs),
    /// Show a running host's queues: waiting, in-flight, delayed, dead and processed counts.
    Queues(cli::queues::QueuesArgs),
    /// List a queue's dead jobs, or retry or purge them.
    Dead(cli::queues::DeadArgs),
    /// Show one job: state, attempts, times, result or error, progress (or `--remove` it).
    Job(cli::jobs::JobArgs),
    /// List a queue's jobs in one state.
    Jobs(cli::jobs::JobsArgs),
    /// Pause a queue on every host: its jobs wait (running ones finish).
    Pause(cli::jobs::PauseArgs),
    /// Resume a paused queue.
    Resume(cli::jobs::PauseArgs),
    /// List a queue's repeat entries, or `--remove` one added with `enqueue --every/--cron`.
    Repeats(cli::jobs::RepeatsArgs),
    /// Deploy (create or replace) a component on a running host from a .wasm file.
    Deploy(cli::components::DeployArgs),
    /// List a running host's components: version, origin, exports, triggers, invocations.
    Components(cli::components::ComponentsArgs),
    /// Return a deployed component to its previous version.
    Rollback(cli::components::RollbackArgs),
    /// Scaffold a component folder (source, build script, test, README) to deploy.
    New(cli::new::NewArgs),
    /// Compile a manifest's components into the artifact cache, so that `up` starts at once.
    Compile(cli::compile::CompileArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// The manifest to run.
    #[arg(
        short = 'f',
        long = "file",
        env = "LLMCHAT_MANIFEST",
        default_value = "components/llmchat.toml"
    )]
    manifest: PathBuf,
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "LLMCHAT_LISTEN", default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// Folder for compiled components [default: $XDG_CACHE_HOME/llmchat or ~/.cache/llmchat].
    #[arg(long, env = "LLMCHAT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Folder for deployments, kept across restarts [default: $XDG_STATE_HOME/llmchat or
    /// ~/.local/state/llmchat].
    #[arg(long, env = "LLMCHAT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Compile every component at start-up instead of using the artifact cache.
    #[arg(long)]
    no_cache: bool,
    /// Kill a compiler child (one per component to compile) that runs longer than this.
    #[arg(long, env = "LLMCHAT_COMPILE_TIMEOUT", default_value = "10m")]
    compile_timeout: HumanDuration,
    /// Cap on a compiler child's memory (its `RLIMIT_DATA`), e.g. `2GiB` [default: none].
    #[arg(long, env = "LLMCHAT_COMPILE_MEMORY_LIMIT")]
    compile_memory_limit: Option<ByteSize>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); overrides `[http] tls`.
    /// SIGHUP reloads both files.
    #[arg(long, env = "LLMCHAT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert: PKCS#8, RSA (PKCS#1) or EC (SEC1).
    #[arg(long, env = "LLMCHAT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Log lines to stderr, filtered by `RUST_LOG` (default `info`); with `telemetry`, the
/// OpenTelemetry layer beside them, which sees only the spans meant for it (and the log
/// lines never show those; JSON lines carry their `trace_id` and `span_id`).
fn init_logging(format: LogFormat, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry, filter};
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_spans = filter::filter_fn(|meta| meta.target() != telemetry::spans::TARGET);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter::FilterExt::and(env, not_spans))
            .boxed(),
        LogFormat::Json if telemetry.is_some() => lines
            .json()
            .with_current_span(true)
            .map_event_format(telemetry::log_ids::WithTraceIds)
            .with_filter(filter::FilterExt::and(env, not_spans))
            .boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_filter(filter::FilterExt::and(env, not_spans))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(telemetry.map(Telemetry::layer))
        .init();
}

fn main() -> ExitCode {
    llmchat_host::engine::pin_allocator_thresholds();
    let cli = Cli::parse();
    // Only a serving host traces; the CLI commands talk to one.
    let telemetry = match &cli.command {
        Command::Up(_) => match Telemetry::from_env() {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    init_logging(cli.log_format, telemetry.as_ref());
    // The compiler needs no runtime, and must not start threads before its memory limit.
    let command = match cli.command {
        Command::Compile(args) => return cli::compile::run(args),
        command => command,
    };
    // The engine (and its epoch ticker) must outlive the runtime: a guest still running when
    // the runtime shuts down only gives its worker back at its next epoch tick.
    let engine_keepalive = OnceLock::new();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| {
            let result = rt.block_on(async {
                match command {
                    Command::Up(args) => up(args, telemetry, &engine_keepalive).await,
                    Command::Enqueue(args) => cli::queues::enqueue(args).await,
                    Command::Queues(args) => cli::queues::queues(args).await,
                    Command::Dead(args) => cli::queues::dead(args).await,
                    Command::Job(args) => cli::jobs::job(args).await,
                    Command::Jobs(args) => cli::jobs::jobs(args).await,
                    Command::Pause(args) => cli::jobs::pause(args, true).await,
                    Command::Resume(args) => cli::jobs::pause(args, false).await,
                    Command::Repeats(args) => cli::jobs::repeats(args).await,
                    Command::Deploy(args) => cli::components::deploy(args).await,
                    Command::Components(args) => cli::components::components(args).await,
                    Command::Rollback(args) => cli::components::rollback(args).await,
                    Command::New(args) => cli::new::scaffold(args),
                    Command::Compile(_) => unreachable!("`compile` returned before the runtime"),
                }
            });
            rt.shutdown_timeout(RUNTIME_SHUTDOWN);
            result
        });
    drop(engine_keepalive);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<cli::UsageError>() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Unmaps the code of idle components every second (see `engine::release_idle_code`).
fn schedule_code_release(scheduler: &Scheduler) {
    let every = llmchat_host::engine::CODE_RELEASE_EVERY;
    scheduler.add(
        "code release",
        tokio::time::Instant::now() + every,
        Box::new(move |due| {
            Box::pin(async move {
                let released = llmchat_host::engine::release_idle_code();
                if released > 0 {
                    tracing::debug!(released, "unmapped the code of idle components");
                }
                Some((due + every).max(tokio::time::Instant::now()))
            })
        }),
    );
}

/// Serves until SIGTERM/SIGINT, then reports the tasks left once every service is dropped
/// (0 is the invariant: no task outlives shutdown).
async fn up(
    args: UpArgs,
    telemetry: Option<Telemetry>,
    engine_keepalive: &OnceLock<Arc<ComponentEngine>>,
) -> Result<()> {
    // The exporter runs beside the host and stops after it, so the last spans are sent.
    let stop_export = CancellationToken::new();
    let export = async {
        if let Some(telemetry) = telemetry {
            tracing::info!("exporting traces over OTLP/HTTP");
            telemetry.run(stop_export.clone()).await;
        }
    };
    let serve = async {
        let served = serve(args, engine_keepalive).await;
        stop_export.cancel();
        served
    };
    let (served, ()) = tokio::join!(serve, export);
    served?;
    let tasks_left = settle_tasks().await;
    tracing::info!(tasks_left, "llmchat stopped");
    Ok(())
}

/// The runtime's alive tasks once the ones ending by themselves (connection drivers of the
/// Redis client, which stop when their last handle drops) are gone; waits at most 1 s.
async fn settle_tasks() -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while metrics.num_alive_tasks() > 0 && tokio::time::Instant::now() < deadline {
        llmchat_host::timers::sleep(Duration::from_millis(10)).await;
    }
    metrics.num_alive_tasks()
}

async fn serve(args: UpArgs, engine_keepalive: &OnceLock<Arc<ComponentEngine>>) -> Result<()> {
    let mut manifest = Manifest::load(&args.manifest)?;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        manifest.http.tls = Some(TlsFiles { cert, key });
    }
    // Before anything slow, so that a wrong file stops start-up at once.
    let tls = manifest.http.tls.as_ref().map(Tls::load).transpose()?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .or_else(llmchat_host::engine::default_cache_dir)
    };
    let mut compiler = CompilerOptions::this_program()?;
    compiler.timeout = args.compile_timeout.0;
    compiler.memory_limit = args.compile_memory_limit.map(ByteSize::bytes);
    let engine = Arc::new(ComponentEngine::new(
        PoolSizing::from_manifest(&manifest),
        cache_dir,
        compiler,
        llmchat_host::runtime::link,
    )?);
    let _ = engine_keepalive.set(engine.clone());
    let in_manifest = || format!("in manifest `{}`", manifest.path.display());
    let registry = Registry::load(&engine, &manifest)
        .await
        .with_context(in_manifest)?;
    // Reading and mapping leaves freed buffers in the allocator's per-thread heaps.
    llmchat_host::engine::return_freed_memory();
    let (kv, queue_backend, redis) = storage(&manifest).await.with_context(in_manifest)?;
    let queues = Arc::new(Queues::new(queue_backend, &manifest.triggers.queue));
    // Redis may be down at start-up: the deploy watcher reads the paused queues again on
    // subscribing.
    if let Err(e) = queues.refresh_paused().await {
        tracing::warn!("reading the paused queues failed: {e}");
    }
    let pool = redis.clone().map(|pool| pool as Arc<dyn PoolSource>);
    let metrics = Arc::new(Metrics::new(queues.clone(), pool));
    // Rate limits live in Redis when there is one (shared by every host), else here.
    let limiter: Arc<dyn RateLimiter> = match &redis {
        Some(pool) => Arc::new(RedisLimiter::new(pool.clone())),
        None => Arc::new(LocalRateLimiter::new(DEFAULT_MAX_KEYS)),
    };
    let services = Arc::new(Services {
        kv,
        llm: llmchat_host::llm::from_config(&manifest.llm, metrics.llm())
            .with_context(in_manifest)?,
        queues: queues.clone(),
        redis: redis.clone(),
        llm_gate: Arc::new(LlmGate::new(
            &manifest.quotas,
            metrics.llm_tokens(),
            metrics.llm_agent_tokens(),
            limiter.clone(),
        )),
    });
    let worker = Arc::new(QueueWorker::new(
        queues.clone(),
        engine.clone(),
        services.clone(),
        metrics.clone(),
        limiter.clone(),
    ));
    // The one owner of time: every periodic duty of every module is an entry here.
    let scheduler = Scheduler::new(metrics.scheduler().clone());
    let claims: Arc<dyn TickClaims> = match &redis {
        Some(pool) => Arc::new(RedisClaims::new(pool.clone())),
        None => Arc::new(LocalClaims),
    };
    let repeats = Arc::new(llmchat_host::triggers::repeat::Repeats::new(
        queues.clone(),
        claims.clone(),
        scheduler.handle(),
    ));
    repeats.schedule_refresh();
    worker.repeat_with(repeats);
    let schedules = Arc::new(Schedules::new(
        engine.clone(),
        services.clone(),
        metrics.clone(),
        claims,
        scheduler.handle(),
    ));
    let dashboard = Arc::new(Dashboard::new(
        &manifest.dashboard,
        metrics.clone(),
        queues.clone(),
        redis.clone(),
    ));
    worker.schedule_maintenance(&scheduler);
    dashboard.schedule(&scheduler);
    schedule_code_release(&scheduler);
    llmchat_host::kv::schedule_sweep(services.kv.clone(), &scheduler);
    let routes = Arc::new(LiveRoutes::new(limiter, metrics.clone()));
    // Every kind of trigger, each with what runs it.
    let triggers = TriggerSet::default()
        .with(routes.clone())
        .with(worker.clone())
        .with(schedules.clone());
    triggers
        .apply(&manifest.triggers, &registry)
        .with_context(in_manifest)?;
    tracing::info!(entries = scheduler.len(), "scheduler ready");
    let parts = LiveParts {
        triggers,
        metrics: metrics.clone(),
        redis: redis.clone(),
        queues: queues.clone(),
    };
    let state_dir = args
        .state_dir
        .or_else(llmchat_host::deploy::default_state_dir);
    let deployer = Arc::new(Deployer::new(
        engine.clone(),
        &manifest,
        registry,
        parts,
        state_dir,
    )?);
    deployer.restore().await;
    let auth = AdminAuth::from_env();
    tracing::info!("{}", auth.describe());
    let admin = AdminApi {
        auth,
        queues,
        deployer: deployer.clone(),
    };
    let server = HttpServer::new(
        &manifest, tls, engine, routes, services, admin, metrics, dashboard,
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let signalled = shutdown_signals()?;
    tracing::info!("llmchat listening on {}://{addr}", server.scheme());

    // Every part runs in this one future, none as a detached task: when it returns, the
    // host has nothing left running.
    let shutdown = CancellationToken::new();
    let watch_signals = async {
        tokio::select! {
            () = signalled => tracing::info!("shutdown requested; draining in-flight requests"),
            () = shutdown.cancelled() => {}
        }
        shutdown.cancel();
    };
    let serve = async {
        let served = server.serve(listener, shutdown.clone()).await;
        // The server ends only at shutdown, or on an error that must stop everything else.
        shutdown.cancel();
        served
    };
    let grace = manifest.http.shutdown_grace.0;
    let periodic = async {
        scheduler.run(shutdown.clone()).await;
        schedules.drain(grace).await;
    };
    let ((), served, (), (), ()) = tokio::join!(
        watch_signals,
        serve,
        worker.run(shutdown.clone(), grace),
        periodic,
        deployer.watch(shutdown.clone())
    );
    served
}

/// The kv store and queue backend, and the Redis pool behind them: Redis when the manifest
/// or `REDIS_URL` names one, otherwise the embedded, bounded, in-memory ones (and no pool).
async fn storage(
    manifest: &Manifest,
) -> Result<(
    Arc<dyn KvStore>,
    Arc<dyn QueueBackend>,
    Option<Arc<RedisPool>>,
)> {
    let max_value = usize::try_from(manifest.kv.max_value_size.bytes()).unwrap_or(usize::MAX);
    let url = manifest
        .redis
        .url
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()));
    let Some(url) = url else {
        tracing::info!(
            "kv and queues use the embedded in-memory backends: bounded and NOT durable (lost on restart); \
             set [redis] url or REDIS_URL for durable ones"
        );
        let kv = MemoryKv::new(
            manifest.kv.max_keys,
            usize::try_from(manifest.kv.max_bytes.bytes()).unwrap_or(usize::MAX),
            max_value,
        );
        return Ok((Arc::new(kv), Arc::new(MemoryQueue::new()), None));
    };
    let pool = Arc::new(RedisPool::open(&manifest.redis, &url).await?);
    let redacted = llmchat_host::redis::redact(&url);
    if let Err(e) = pool.ping().await {
        tracing::warn!(url = %redacted, "Redis is not reachable yet ({e}); requests needing it get 503 until it is");
    }
    let queue_names: Vec<String> = manifest
        .triggers
        .queue
        .iter()
        .map(|t| t.queue.clone())
        .collect();
    let queues = match RedisQueue::connect(pool.clone(), &queue_names).await {
        Ok(q) => q,
        Err(e) => anyhow::bail!("preparing the Redis queues at {redacted}: {e}"),
    };
    let kind = if pool.is_cluster() {
        "a Redis Cluster"
    } else {
        "Redis"
    };
    tracing::info!(url = %redacted, "kv and queues use {kind}");
    Ok((
        Arc::new(RedisKv::new(pool.clone(), max_value)),
        Arc::new(queues),
        Some(pool),
    ))
}

/// Installs the SIGTERM and SIGINT handlers now (before the host says it is listening, so
/// that a supervisor's early SIGTERM is never fatal) and returns a future for either.
#[cfg(unix)]
fn shutdown_signals() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signals() -> Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
