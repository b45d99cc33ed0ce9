//! Compiling components in a child process, so that the server never runs cranelift.
//!
//! Compiling a 12–18 MB JS or Python component takes 10+ s and a few hundred MB of scratch
//! memory, which glibc keeps in the server's heap for good (idle RSS 21 → 396 MB after one
//! TypeScript deploy). So the server runs `llmchat compile` (this same binary, see
//! [`CompilerOptions`]) as a child for every component its artifact cache does not hold yet:
//! the child builds an engine from the server's [`PoolSizing`] (the same `engine_config`,
//! hence the same compatibility hash), compiles, writes the artifact into the cache
//! atomically and prints its path; the server then only maps it.
//!
//! The child is bounded by [`CompilerOptions::timeout`] and, optionally, by
//! [`CompilerOptions::memory_limit`] (`RLIMIT_DATA`, set by the child on itself). A crash,
//! an out-of-memory abort, a signal, a timeout or a non-zero exit is a
//! [`CompileError::Compiler`] that names the component and quotes the end of the child's
//! stderr; bytes that are not a component are a [`CompileError::Invalid`].
//!
//! `llmchat compile -f MANIFEST` ([`precompile_manifest`]) fills the cache ahead of time
//! (`just build`), so that `llmchat up` starts without compiling anything.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use wasmtime::{Engine, InstanceAllocationStrategy};

use super::PoolSizing;
use crate::manifest::Manifest;

/// How long a compiler child may run by default: the largest components take ~20 s on two
/// busy cores, so this only catches a hung child.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(600);

/// Compiler children that may run at once: each may use a few hundred MB.
const CHILDREN_AT_ONCE: usize = 2;

/// The end of the child's output kept for error messages.
const OUTPUT_TAIL: usize = 4 << 10;

/// The exit status of a child whose input is not a valid component (any other failure
/// exits with 1, as every `llmchat` command does).
pub const EXIT_INVALID_COMPONENT: u8 = 3;

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not a component this engine accepts: the client's or author's fault.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// The compiler child failed (crash, out of memory, timeout, no artifact): the host's
    /// problem, not the component's.
    #[error("{0}")]
    Compiler(String),
}

/// Which program compiles, and its bounds.
#[derive(Debug, Clone)]
pub struct CompilerOptions {
    /// The `llmchat` binary: [`std::env::current_exe`] for the server; tests and benchmarks
    /// that link the host as a library name the built binary instead.
    pub program: PathBuf,
    /// The child is killed when it runs longer (`LLMCHAT_COMPILE_TIMEOUT`).
    pub timeout: Duration,
    /// `RLIMIT_DATA` of the child in bytes (`LLMCHAT_COMPILE_MEMORY_LIMIT`): its heap and
    /// other private writable memory. `None` leaves it unbounded.
    pub memory_limit: Option<u64>,
}

impl CompilerOptions {
    /// The running binary as the compiler, with the default timeout and no memory limit.
    pub fn this_program() -> Result<Self> {
        let program = std::env::current_exe()
            .context("finding the running `llmchat` binary to run compiler children")?;
        Ok(Self::with_program(program))
    }

    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            timeout: DEFAULT_COMPILE_TIMEOUT,
            memory_limit: None,
        }
    }
}

/// Where the child reads the component from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// A file the child reads itself (manifest components, stored deployments).
    File(&'a Path),
    /// Bytes the server holds (a deploy's upload), written to the child's stdin.
    Bytes(&'a [u8]),
}

/// Runs compiler children for the server.
pub struct ChildCompiler {
    options: CompilerOptions,
    sizing: PoolSizing,
    running: Semaphore,
}

impl ChildCompiler {
    pub fn new(options: CompilerOptions, sizing: PoolSizing) -> Self {
        Self {
            options,
            sizing,
            running: Semaphore::new(CHILDREN_AT_ONCE),
        }
    }

    /// The child's arguments after the program: everything it needs to build the server's
    /// engine and write into `dir`.
    fn args(&self, dir: &Path, input: Input<'_>) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "compile".into(),
            "--cache-dir".into(),
            dir.into(),
            "--pool-instances".into(),
            self.sizing.instances.to_string().into(),
            "--pool-max-memory".into(),
            self.sizing.max_memory.to_string().into(),
        ];
        if let Some(limit) = self.options.memory_limit {
            args.extend(["--memory-limit".into(), limit.to_string().into()]);
        }
        args.push("--".into());
        args.push(match input {
            Input::File(path) => path.into(),
            Input::Bytes(_) => "-".into(),
        });
        args
    }

    /// Compiles component `name` (`size` bytes, read from `input`) in a child that writes
    /// `artifact` into `dir`; returns once the artifact is there.
    pub async fn compile(
        &self,
        name: &str,
        input: Input<'_>,
        size: usize,
        dir: &Path,
        artifact: &Path,
    ) -> Result<(), CompileError> {
        let _permit = self
            .running
            .acquire()
            .await
            .expect("the compiler semaphore is never closed");
        let failed = |what: String| {
            CompileError::Compiler(format!(
                "compiling component `{name}` in a child process failed: {what}"
            ))
        };
        let mut command = tokio::process::Command::new(&self.options.program);
        command
            .args(self.args(dir, input))
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .stdin(match input {
                Input::File(_) => Stdio::null(),
                Input::Bytes(_) => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| {
            failed(format!(
                "starting `{}`: {e}",
                self.options.program.display()
            ))
        })?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(
            component = name,
            pid,
            "compiling component `{name}` ({})…",
            megabytes(size)
        );
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let feed = async {
            if let (Some(mut stdin), Input::Bytes(bytes)) = (stdin, input) {
                // A child that died early closes the pipe; its exit status says why.
                let _ = stdin.write_all(bytes).await;
            }
        };
        let run = async {
            let ((), out, err, status) = tokio::join!(
                feed,
                read_tail(stdout, OUTPUT_TAIL),
                read_tail(stderr, OUTPUT_TAIL),
                child.wait()
            );
            (out, err, status)
        };
        let Ok((out, err, status)) = crate::timers::timeout(self.options.timeout, run).await else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(failed(format!(
                "it ran longer than {:?} (LLMCHAT_COMPILE_TIMEOUT) and was killed",
                self.options.timeout
            )));
        };
        let status = status.map_err(|e| failed(format!("waiting for pid {pid}: {e}")))?;
        let stderr = String::from_utf8_lossy(&err).trim().to_string();
        if status.code() == Some(i32::from(EXIT_INVALID_COMPONENT)) {
            let reason = stderr.strip_prefix("error: ").unwrap_or(&stderr);
            let reason = reason
                .strip_prefix("not a valid WebAssembly component: ")
                .unwrap_or(reason);
            return Err(CompileError::Invalid(reason.to_string()));
        }
        if !status.success() {
            return Err(failed(describe_failure(
                status,
                &stderr,
                self.options.memory_limit,
            )));
        }
        let written = String::from_utf8_lossy(&out);
        let written = written.lines().last().unwrap_or_default().trim();
        if Path::new(written) != artifact {
            return Err(failed(format!(
                "it wrote `{written}` instead of `{}`: its engine settings differ from the server's",
                artifact.display()
            )));
        }
        tracing::info!(
            component = name,
            pid,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled `{name}` in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Reads `reader` to the end, keeping only its last `limit` bytes.
async fn read_tail(reader: Option<impl AsyncRead + Unpin>, limit: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let Some(mut reader) = reader else {
        return tail;
    };
    let mut chunk = [0u8; 8 << 10];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * limit {
                    tail.drain(..tail.len() - limit);
                }
            }
        }
    }
    if tail.len() > limit {
        tail.drain(..tail.len() - limit);
    }
    tail
}

/// What a failed child's exit says, for an operator: the signal and its usual cause, or
/// the exit code, then the end of its stderr.
fn describe_failure(status: ExitStatus, stderr: &str, memory_limit: Option<u64>) -> String {
    let how = match exit_signal(status) {
        Some(signal) => {
            let cause = match signal {
                libc::SIGKILL => " (SIGKILL: out of memory, or killed)",
                libc::SIGABRT => " (SIGABRT: an allocation failed, or it panicked)",
                libc::SIGSEGV => " (SIGSEGV: it crashed)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            format!("it was killed by signal {signal}{cause}")
        }
        None => match status.code() {
            Some(code) => format!("it exited with status {code}"),
            None => "it exited abnormally".to_string(),
        },
    };
    let limit = memory_limit
        .map(|l| format!(" under a memory limit of {l} bytes (LLMCHAT_COMPILE_MEMORY_LIMIT)"))
        .unwrap_or_default();
    if stderr.is_empty() {
        format!("{how}{limit}, with no output")
    } else {
        format!("{how}{limit}; its stderr ends with: {stderr}")
    }
}

#[cfg(unix)]
fn exit_signal(status: ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

#[cfg(not(unix))]
fn exit_signal(_: ExitStatus) -> Option<i32> {
    None
}

fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// An engine that compiles exactly as the server's does: the server's configuration
/// ([`super::engine_config`]), with instances allocated on demand instead of from a pool,
/// because a compiler never instantiates and a pool would reserve its stacks up front (and
/// count against `RLIMIT_DATA`). The allocator is not part of the compatibility hash; the
/// artifact's name proves the two engines agree (see `the_compiler_engine_matches_the_server`).
pub fn compiler_engine(sizing: PoolSizing) -> Result<Engine> {
    let mut config = super::engine_config(sizing)?;
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the compiler's wasmtime engine")
}

/// The compiler child: compiles the component at `input` (`-` for stdin) into `cache_dir`
/// for an engine of `sizing`, and returns the artifact's path (printed on stdout).
pub fn run_child(
    sizing: PoolSizing,
    cache_dir: &Path,
    input: &Path,
    memory_limit: Option<u64>,
) -> Result<PathBuf> {
    if let Some(limit) = memory_limit {
        limit_memory(limit)?;
    }
    let bytes = if input == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading the component from stdin")?;
        bytes
    } else {
        std::fs::read(input).with_context(|| format!("reading `{}`", input.display()))?
    };
    let engine = compiler_engine(sizing)?;
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating component cache folder `{}`", cache_dir.display()))?;
    super::cache::compile_into(&engine, cache_dir, &bytes)
}

/// Caps this process's data segment (heap and private writable mappings).
#[cfg(unix)]
#[expect(unsafe_code, reason = "setrlimit is a C function")]
fn limit_memory(bytes: u64) -> Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid, initialised rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    if rc != 0 {
        anyhow::bail!(
            "setting the compiler's memory limit to {bytes} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn limit_memory(_: u64) -> Result<()> {
    anyhow::bail!("a compiler memory limit is only supported on Unix")
}

/// Compiles every component of `manifest` that `cache_dir` does not hold yet, here (this is
/// a build step, not the server), with the engine `llmchat up` builds for the manifest.
pub fn precompile_manifest(manifest: &Manifest, cache_dir: &Path) -> Result<()> {
    let engine = compiler_engine(PoolSizing::from_manifest(manifest))?;
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating component cache folder `{}`", cache_dir.display()))?;
    for (name, spec) in &manifest.components {
        let source = &spec.source;
        let bytes = std::fs::read(source)
            .with_context(|| format!("reading component `{name}` from `{}`", source.display()))?;
        if super::cache::is_cached(&engine, cache_dir, &bytes) {
            tracing::info!(component = %name, "component `{name}` is already compiled");
            continue;
        }
        let started = Instant::now();
        tracing::info!(component = %name, "compiling component `{name}` ({})…", megabytes(bytes.len()));
        super::cache::compile_into(&engine, cache_dir, &bytes)
            .with_context(|| format!("compiling component `{name}` from `{}`", source.display()))?;
        tracing::info!(
            component = %name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled `{name}` in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing() -> PoolSizing {
        PoolSizing {
            instances: 7,
            max_memory: 48 << 20,
        }
    }

    #[test]
    fn the_compiler_engine_matches_the_server() {
        let server = Engine::new(&crate::engine::engine_config(sizing()).unwrap()).unwrap();
        let compiler = compiler_engine(sizing()).unwrap();
        assert_eq!(
            crate::engine::cache::engine_key(&server),
            crate::engine::cache::engine_key(&compiler)
        );
    }

    #[test]
    fn the_child_gets_the_pool_sizing_the_limit_and_its_input() {
        let mut options = CompilerOptions::with_program("/bin/llmchat");
        options.memory_limit = Some(1 << 30);
        let compiler = ChildCompiler::new(options, sizing());
        let args = compiler.args(Path::new("/cache"), Input::File(Path::new("-odd.wasm")));
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "compile",
                "--cache-dir",
                "/cache",
                "--pool-instances",
                "7",
                "--pool-max-memory",
                "50331648",
                "--memory-limit",
                "1073741824",
                "--",
                "-odd.wasm"
            ]
        );
        let stdin = ChildCompiler::new(CompilerOptions::with_program("x"), sizing())
            .args(Path::new("/c"), Input::Bytes(b"\0asm"));
        assert_eq!(stdin.last().unwrap(), "-");
        assert!(!stdin.iter().any(|a| a == "--memory-limit"));
    }

    #[tokio::test]
    async fn only_the_end_of_the_output_is_kept() {
        let text: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let tail = read_tail(Some(&text[..]), 1000).await;
        assert_eq!(tail, text[text.len() - 1000..]);
        assert_eq!(read_tail(Some(&b"short"[..]), 1000).await, b"short");
        assert!(read_tail(None::<&[u8]>, 10).await.is_empty());
    }

    #[test]
    fn a_signal_is_named_with_its_likely_cause() {
        use std::os::unix::process::ExitStatusExt;
        let killed = describe_failure(ExitStatus::from_raw(libc::SIGKILL), "", Some(1 << 20));
        assert!(
            killed.contains("signal 9 (SIGKILL: out of memory"),
            "{killed}"
        );
        assert!(killed.contains("LLMCHAT_COMPILE_MEMORY_LIMIT"), "{killed}");
        let exited = describe_failure(ExitStatus::from_raw(2 << 8), "error: boom", None);
        assert_eq!(
            exited,
            "it exited with status 2; its stderr ends with: error: boom"
        );
    }
}
