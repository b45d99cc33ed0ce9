//! The on-disk cache of compiled components, keyed by content hash.
//!
//! Compiling a component takes from 35 ms (small Rust guest) to 10+ s (a JS or Python
//! engine). The cache stores wasmtime's precompiled artifact under the SHA-256 of the wasm
//! bytes plus the engine's compatibility hash, so a restart maps the artifact (mmap, no
//! recompile) and a change of wasmtime version or engine settings never loads a stale one.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A component compiled for this engine, and where it came from.
pub struct Compiled {
    pub component: Component,
    /// SHA-256 of the wasm bytes, hex; the component's version identity.
    pub content_hash: String,
    pub from_cache: bool,
}

/// The cache folder; `None` disables caching (every load compiles).
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ArtifactCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating component cache folder `{}`", dir.display()))?;
        }
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    /// The default folder: `$XDG_CACHE_HOME/llmchat` or `~/.cache/llmchat`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|d| d.join("llmchat"))
    }

    /// Compiles `bytes`, or maps the artifact a previous run left for the same bytes.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<Compiled> {
        let content_hash = hex::encode(Sha256::digest(bytes));
        let Some(dir) = &self.dir else {
            let component = Component::new(engine, bytes)?;
            return Ok(Compiled {
                component,
                content_hash,
                from_cache: false,
            });
        };
        let artifact = dir.join(format!("{content_hash}-{}.cwasm", self.engine_key));
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
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store_artifact(&component, &artifact) {
            tracing::warn!(artifact = %artifact.display(), "could not cache compiled component: {e:#}");
        }
        Ok(Compiled {
            component,
            content_hash,
            from_cache: false,
        })
    }
}

#[expect(
    unsafe_code,
    reason = "wasmtime requires unsafe to load precompiled code"
)]
fn deserialize(engine: &Engine, artifact: &Path) -> Result<Component> {
    // SAFETY: the artifact was written by `store_artifact` of this program, into a cache
    // folder owned by the user running it, under a name that includes the engine's
    // compatibility hash; wasmtime additionally checks the header and engine settings.
    let component = unsafe { Component::deserialize_file(engine, artifact)? };
    Ok(component)
}

/// Writes to a temporary file then renames, so a crash never leaves a torn artifact.
fn store_artifact(component: &Component, artifact: &Path) -> Result<()> {
    let bytes = component.serialize()?;
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, artifact).with_context(|| format!("renaming to `{}`", artifact.display()))
}
