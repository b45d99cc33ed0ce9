//! (d) The host's resident memory: idle with the default manifest, and whether it returns
//! to its baseline after guests have hit their memory cap.
//!
//! "Idle" is after one request to each route, so that lazily built state (the first
//! connection, the first instance of each component) is counted once and not mistaken for
//! growth later. Both hosts here start with every component already in the artifact cache:
//! compiling at start-up leaves several MB of freed-but-kept heap that would hide growth
//! (the first, compiling start is reported separately by the load phase).
//!
//! The bomb host is the default manifest plus `fixture_memory_bomb.wasm` capped at 16 MiB
//! on `/bomb`: every request there allocates until the cap traps it (500).

use std::path::Path;

use anyhow::Result;

use crate::Paths;
use crate::process::{Llmchat, expect_ok, get};

const BOMBS: u32 = 200;

pub struct Results {
    /// Default manifest, artifact cache warm.
    pub default_idle: u64,
    pub bomb_idle: u64,
    pub bomb_after: u64,
    /// Bomb requests that did not answer 500 (each one should).
    pub bombs_not_500: u32,
}

impl Results {
    /// RSS growth over the bombs, in bytes (negative when the host shrank).
    pub fn growth(&self) -> i64 {
        self.bomb_after as i64 - self.bomb_idle as i64
    }
}

/// RSS after one request to each route of the default manifest.
pub fn idle_rss(host: &Llmchat) -> Result<u64> {
    expect_ok(&host.url("/api/agents"))?;
    expect_ok(&host.url("/hello"))?;
    host.process.rss()
}

/// Starts the two hosts in turn (never both at once) and measures them.
pub fn measure(paths: &Paths, default_manifest: &str, cache: &Path) -> Result<Results> {
    let default_idle = {
        let host = Llmchat::start(&paths.llmchat, default_manifest, cache)?;
        idle_rss(&host)?
    };
    let bomb_manifest = format!(
        "{default_manifest}\n[component.bomb]\nsource = {:?}\nmemory_limit = \"16MiB\"\n\n\
         [[trigger.http]]\nroute = \"/bomb\"\ncomponent = \"bomb\"\n",
        paths
            .wasm
            .join("fixture_memory_bomb.wasm")
            .display()
            .to_string()
    );
    // The first start only compiles the bomb into the cache.
    drop(Llmchat::start(&paths.llmchat, &bomb_manifest, cache)?);
    let host = Llmchat::start(&paths.llmchat, &bomb_manifest, cache)?;
    expect_ok(&host.url("/bomb?mib=1"))?;
    let bomb_idle = idle_rss(&host)?;
    let mut bombs_not_500 = 0;
    for _ in 0..BOMBS {
        if get(&host.url("/bomb"))? != 500 {
            bombs_not_500 += 1;
        }
    }
    let bomb_after = host.process.rss()?;
    eprintln!(
        "  idle {:.1} MB; bomb host idle {:.1} MB, after {BOMBS} bombs {:.1} MB",
        default_idle as f64 / 1e6,
        bomb_idle as f64 / 1e6,
        bomb_after as f64 / 1e6
    );
    Ok(Results {
        default_idle,
        bomb_idle,
        bomb_after,
        bombs_not_500,
    })
}
