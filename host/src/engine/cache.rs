//! The on-disk cache of compiled components, keyed by content hash.
//!
//! Compiling a component takes from 35 ms (small Rust guest) to 10+ s (a JS or Python
//! engine), and it never happens in the server: a child process ([`super::compiler`])
//! writes wasmtime's precompiled artifact here, and the server maps it (mmap, no
//! recompile). Artifacts are named by the SHA-256 of the wasm bytes plus the engine's
//! compatibility hash, so a restart maps what a previous run compiled, and a change of
//! wasmtime version or engine settings never loads a stale one.
//!
//! Without a cache folder (`--no-cache`) the child compiles into a private temporary folder
//! of this process; the server maps the artifact and deletes the file at once (the mapping
//! stays valid), so nothing is reused and nothing is left behind.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::compiler::{ChildCompiler, CompileError, Input};

/// A component compiled for this engine, and where it came from.
pub struct Compiled {
    pub component: Component,
    /// SHA-256 of the wasm bytes, hex; the component's version identity.
    pub content_hash: String,
    /// `true` when an artifact of an earlier compile was mapped; `false` when a compiler
    /// child ran for this load.
    pub from_cache: bool,
}

/// Where artifacts go.
enum Folder {
    /// Kept across runs and shared by every host using the folder.
    Shared(PathBuf),
    /// This process's own; each compile gets a fresh subfolder, removed after mapping.
    Private {
        root: tempfile::TempDir,
        next: AtomicU64,
    },
}

/// The artifact folder and the engine key that artifact names carry.
pub struct ArtifactCache {
    folder: Folder,
    engine_key: String,
}

impl ArtifactCache {
    /// The cache in `dir`, or a private temporary folder when `dir` is `None`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self> {
        let folder = match dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("creating component cache folder `{}`", dir.display())
                })?;
                Folder::Shared(dir)
            }
            None => Folder::Private {
                root: tempfile::Builder::new()
                    .prefix("llmchat-compile-")
                    .tempdir()
                    .context("creating a private folder for compiled components")?,
                next: AtomicU64::new(0),
            },
        };
        Ok(Self {
            folder,
            engine_key: engine_key(engine),
        })
    }

    /// The default folder: `$XDG_CACHE_HOME/llmchat` or `~/.cache/llmchat`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|d| d.join("llmchat"))
    }

    /// Maps the artifact a previous compile left for `bytes`, or has `compiler` compile them
    /// (component `name`, read by the child from `input`) and maps the result.
    pub async fn load(
        &self,
        engine: &Engine,
        compiler: &ChildCompiler,
        name: &str,
        bytes: &[u8],
        input: Input<'_>,
    ) -> Result<Compiled> {
        let content_hash = hex::encode(Sha256::digest(bytes));
        let file_name = artifact_name(&content_hash, &self.engine_key);
        match &self.folder {
            Folder::Shared(dir) => {
                let artifact = dir.join(&file_name);
                if artifact.is_file() {
                    match deserialize(engine, &artifact) {
                        Ok(component) => {
                            return Ok(Compiled {
                                component,
                                content_hash,
                                from_cache: true,
                            });
                        }
                        Err(e) => tracing::warn!(
                            artifact = %artifact.display(),
                            "discarding unusable cached artifact: {e:#}"
                        ),
                    }
                }
                compiler
                    .compile(name, input, bytes.len(), dir, &artifact)
                    .await?;
                let component = deserialize(engine, &artifact).context(CompileError::Compiler(
                    format!("mapping the artifact the compiler wrote for component `{name}`"),
                ))?;
                Ok(Compiled {
                    component,
                    content_hash,
                    from_cache: false,
                })
            }
            Folder::Private { root, next } => {
                let dir = root
                    .path()
                    .join(next.fetch_add(1, Ordering::Relaxed).to_string());
                std::fs::create_dir(&dir)
                    .with_context(|| format!("creating `{}`", dir.display()))?;
                let artifact = dir.join(&file_name);
                let compiled = compiler
                    .compile(name, input, bytes.len(), &dir, &artifact)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|()| {
                        deserialize(engine, &artifact).context(CompileError::Compiler(format!(
                            "mapping the artifact the compiler wrote for component `{name}`"
                        )))
                    });
                // The mapping keeps the pages; the file itself is no longer needed.
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(folder = %dir.display(), "removing a private compile folder failed: {e}");
                }
                Ok(Compiled {
                    component: compiled?,
                    content_hash,
                    from_cache: false,
                })
            }
        }
    }
}

/// The name of `engine`'s artifacts: its compatibility hash, folded to 64 bits. The
/// server and a compiler child build the same configuration, so they compute the same key.
pub fn engine_key(engine: &Engine) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

pub fn artifact_name(content_hash: &str, engine_key: &str) -> String {
    format!("{content_hash}-{engine_key}.cwasm")
}

/// Whether `dir` already holds `bytes` compiled for `engine`.
pub fn is_cached(engine: &Engine, dir: &Path, bytes: &[u8]) -> bool {
    let content_hash = hex::encode(Sha256::digest(bytes));
    dir.join(artifact_name(&content_hash, &engine_key(engine)))
        .is_file()
}

/// Compiles `bytes` with `engine` into `dir` (what the compiler child does); returns the
/// artifact's path. A refusal of the bytes themselves is [`CompileError::Invalid`].
pub fn compile_into(engine: &Engine, dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let content_hash = hex::encode(Sha256::digest(bytes));
    let artifact = dir.join(artifact_name(&content_hash, &engine_key(engine)));
    let serialized = engine.precompile_component(bytes).map_err(|e| {
        let e = anyhow::Error::from(e);
        let text = format!("{e:#}");
        // Under a memory limit wasmtime reports a failed allocation as an error; that is the
        // compiler's failure, not the component's.
        if text.contains("out of memory") || text.contains("failed to allocate") {
            e.context("the compiler ran out of memory")
        } else {
            CompileError::Invalid(text).into()
        }
    })?;
    store_artifact(&serialized, &artifact)?;
    Ok(artifact)
}

#[expect(
    unsafe_code,
    reason = "wasmtime requires unsafe to load precompiled code"
)]
fn deserialize(engine: &Engine, artifact: &Path) -> Result<Component> {
    // SAFETY: the artifact was written by `store_artifact` of this program (a compiler child
    // of this process), into a cache folder owned by the user running it, under a name that
    // includes the engine's compatibility hash; wasmtime additionally checks the header and
    // engine settings.
    let component = unsafe { Component::deserialize_file(engine, artifact)? };
    Ok(component)
}

/// Writes to a temporary file then renames, so a crash never leaves a torn artifact.
fn store_artifact(bytes: &[u8], artifact: &Path) -> Result<()> {
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, artifact).with_context(|| format!("renaming to `{}`", artifact.display()))
}
