//! `llmchat`: the command line of the llmchat runtime.
//!
//! `llmchat up` loads the manifest, builds every host service once (engine, components,
//! kv, llm, HTTP server), serves until SIGTERM or SIGINT, then drains and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use llmchat_host::capabilities::Services;
use llmchat_host::engine::{ComponentEngine, PoolSizing};
use llmchat_host::http::HttpServer;
use llmchat_host::kv::MemoryKv;
use llmchat_host::manifest::Manifest;
use llmchat_host::registry::Registry;

#[derive(Parser)]
#[command(
    name = "llmchat",
    version,
    about = "Run an LLM chat backend made of WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the manifest's components and serve them.
    Up(UpArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// The manifest to run.
    #[arg(short = 'f', long = "file", default_value = "components/llmchat.toml")]
    manifest: PathBuf,
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// Folder for compiled components [default: $XDG_CACHE_HOME/llmchat or ~/.cache/llmchat].
    #[arg(long, env = "LLMCHAT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component at start-up instead of using the artifact cache.
    #[arg(long)]
    no_cache: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| {
            rt.block_on(match cli.command {
                Command::Up(args) => up(args),
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.or_else(ComponentEngine::default_cache_dir)
    };
    let engine = Arc::new(ComponentEngine::new(
        PoolSizing::from_manifest(&manifest),
        cache_dir,
    )?);
    let in_manifest = || format!("in manifest `{}`", manifest.path.display());
    let registry = Registry::load(&engine, &manifest).with_context(in_manifest)?;
    // Compiling leaves tens of MB of freed scratch in the allocator's per-thread heaps.
    llmchat_host::engine::return_freed_memory();
    let services = Arc::new(Services {
        kv: Arc::new(MemoryKv::new(
            manifest.kv.max_keys,
            usize::try_from(manifest.kv.max_bytes.bytes()).unwrap_or(usize::MAX),
            usize::try_from(manifest.kv.max_value_size.bytes()).unwrap_or(usize::MAX),
        )),
        llm: llmchat_host::llm::from_settings(&manifest.llm).with_context(in_manifest)?,
    });
    tracing::info!(
        kv = "memory",
        llm = services.llm.name(),
        "kv is the embedded in-memory store: bounded and NOT durable (lost on restart)"
    );
    let server = HttpServer::new(&manifest, engine, &registry, services)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!("llmchat listening on http://{addr}");

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining in-flight requests");
        signal.cancel();
    });
    let served = server.serve(listener, shutdown).await;
    signals.abort();
    served?;
    tracing::info!("llmchat stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
