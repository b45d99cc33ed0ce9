//! `llmchat compile`: compiles components into the artifact cache, outside the server.
//!
//! Two uses. `llmchat compile -f MANIFEST` fills the cache with every component of a
//! manifest ahead of time (`just build`), so that `llmchat up` only maps artifacts. And the
//! server runs `llmchat compile --cache-dir DIR --pool-… FILE|-` as a child for each
//! component it must compile ([`llmchat_host::engine::compiler`]); those arguments are
//! hidden, as they are the server's protocol with its child, not a user's interface. The
//! child prints the artifact's path on stdout, and exits with
//! [`EXIT_INVALID_COMPONENT`] when the input is not a component.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use llmchat_host::engine::compiler::{EXIT_INVALID_COMPONENT, precompile_manifest, run_child};
use llmchat_host::engine::{CompileError, PoolSizing};
use llmchat_host::manifest::{ByteSize, Manifest};

use super::UsageError;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// Compile every component of this manifest that the cache does not hold yet.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "MANIFEST",
        conflicts_with = "input"
    )]
    manifest: Option<PathBuf>,
    /// Folder for compiled components [default: $XDG_CACHE_HOME/llmchat or ~/.cache/llmchat].
    #[arg(long, env = "LLMCHAT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// The component to compile (`-`: stdin), for the server's compiler child.
    #[arg(hide = true, requires_all = ["pool_instances", "pool_max_memory"])]
    input: Option<PathBuf>,
    /// The server's pool size, which its engine configuration is built from.
    #[arg(long, hide = true)]
    pool_instances: Option<u32>,
    /// The server's largest memory per instance, in bytes.
    #[arg(long, hide = true)]
    pool_max_memory: Option<u64>,
    /// Cap on this process's data segment (`RLIMIT_DATA`), e.g. `2GiB`.
    #[arg(long, hide = true)]
    memory_limit: Option<ByteSize>,
}

/// Runs the command; its own exit codes, as the server reads them.
pub fn run(args: CompileArgs) -> ExitCode {
    match compile(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if matches!(
                e.downcast_ref::<CompileError>(),
                Some(CompileError::Invalid(_))
            ) {
                ExitCode::from(EXIT_INVALID_COMPONENT)
            } else if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn compile(args: CompileArgs) -> Result<()> {
    let cache_dir = args
        .cache_dir
        .or_else(llmchat_host::engine::default_cache_dir)
        .ok_or_else(|| {
            UsageError("no cache folder: pass --cache-dir or set LLMCHAT_CACHE_DIR".into())
        })?;
    if let Some(input) = args.input {
        let (Some(instances), Some(max_memory)) = (args.pool_instances, args.pool_max_memory)
        else {
            return Err(
                UsageError("--pool-instances and --pool-max-memory are required".into()).into(),
            );
        };
        let sizing = PoolSizing {
            instances,
            max_memory,
        };
        let artifact = run_child(
            sizing,
            &cache_dir,
            &input,
            args.memory_limit.map(ByteSize::bytes),
        )?;
        println!("{}", artifact.display());
        return Ok(());
    }
    let Some(path) = args.manifest else {
        return Err(UsageError("name a manifest with -f MANIFEST".into()).into());
    };
    let manifest = Manifest::load(&path)?;
    precompile_manifest(&manifest, &cache_dir)
        .with_context(|| format!("in manifest `{}`", manifest.path.display()))
}
