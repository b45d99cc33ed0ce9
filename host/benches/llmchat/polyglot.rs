//! (p) Polyglot (issue 6): the same `hello` wasi:http component written in Rust, JavaScript
//! (jco) and Python (componentize-py), side by side on one `llmchat up` that serves all
//! three (`/rust`, `/js`, `/py`, each with a 32 MiB memory limit).
//!
//! - compile: the host starts on a fresh artifact cache; each component's `component loaded
//!   … cached=false elapsed_ms=N` line is its compile time, and start → "llmchat listening"
//!   the whole cold start;
//! - cached load: [`RESTARTS`] restarts on the same cache; `cached=true elapsed_ms=N` per
//!   component and start → listening, medians; the last host serves the measurements;
//! - per-invocation latency: [`LATENCY_ROUNDS`] rounds of [`PER_ROUND`] sequential GETs per
//!   language on one keep-alive connection, the languages interleaved round by round so that
//!   machine drift hits all three alike; median and p99 of every request's round trip;
//! - req/s: `wrk` at 100 connections through [`load::measure`], interleaved the same way;
//! - RSS: after the cached start (all three loaded, nothing served) and after the load.
//!
//! All traffic is on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::blocking::Client;

use crate::load::{self, Load, Target, WrkSettings};
use crate::process::Llmchat;
use crate::{Paths, median, percentile};

pub const RESTARTS: usize = 3;
pub const WARM_UP: usize = 200;
pub const LATENCY_ROUNDS: usize = 10;
pub const PER_ROUND: usize = 200;
const BODY: &str = "Hello, world!";

/// The three languages: (label, component and route name, wasm path under `components/`).
const LANGUAGES: [(&str, &str, &str); 3] = [
    ("Rust", "rust", "target/wasm32-wasip2/release/hello.wasm"),
    ("JS", "js", "target/js/js-hello.wasm"),
    ("Python", "py", "target/python/py-hello.wasm"),
];

/// One language's figures.
pub struct Language {
    pub label: &'static str,
    pub size: u64,
    /// `cached=false elapsed_ms` on the cold start.
    pub compile_ms: f64,
    /// `cached=true elapsed_ms`, median over the restarts.
    pub cached_load_ms: f64,
    /// Every timed request's round trip, ms.
    pub latency_ms: Vec<f64>,
    /// Requests that did not answer 200 with the hello body.
    pub errors: u64,
    pub load: Load,
}

pub struct Results {
    pub languages: Vec<Language>,
    /// Start → listening on the fresh cache (compiles all three).
    pub cold_start_ms: f64,
    /// Start → listening on the warm cache, one per restart.
    pub cached_start_ms: Vec<f64>,
    pub rss_loaded: u64,
    pub rss_after: u64,
}

impl Language {
    pub fn p50_ms(&self) -> f64 {
        percentile(&self.latency_ms, 50.0)
    }

    pub fn p99_ms(&self) -> f64 {
        percentile(&self.latency_ms, 99.0)
    }
}

pub fn measure(paths: &Paths, wrk: &WrkSettings) -> Result<Results> {
    let mut sources = Vec::new();
    for (_, name, rel) in LANGUAGES {
        sources.push((name, built_component(paths, rel)?));
    }
    let manifest = manifest(&sources);
    let work = tempfile::tempdir().context("creating a temp folder")?;
    let cache = work.path().join("artifact-cache");

    eprintln!("  cold start on a fresh artifact cache (compiles all three)");
    let (host, cold_start_ms) = start(paths, &manifest, &cache)?;
    let compile = loaded_ms(&host, false)?;
    drop(host);

    eprintln!("  {RESTARTS} restarts on the same cache");
    let mut cached_start_ms = Vec::new();
    let mut cached_loads: Vec<Vec<f64>> = vec![Vec::new(); LANGUAGES.len()];
    let mut last = None;
    for _ in 0..RESTARTS {
        drop(last.take());
        let (host, ms) = start(paths, &manifest, &cache)?;
        cached_start_ms.push(ms);
        for (all, ms) in cached_loads.iter_mut().zip(loaded_ms(&host, true)?) {
            all.push(ms);
        }
        last = Some(host);
    }
    let host = last.context("at least one restart")?;
    let rss_loaded = host.process.rss()?;
    eprintln!(
        "  cold start {cold_start_ms:.0} ms (compiles {}); cached start median {:.0} ms; RSS {:.1} MB",
        LANGUAGES
            .iter()
            .zip(&compile)
            .map(|((label, ..), ms)| format!("{label} {ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", "),
        median(cached_start_ms.clone()),
        rss_loaded as f64 / 1e6
    );

    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")?;
    let urls: Vec<String> = LANGUAGES
        .iter()
        .map(|(_, name, _)| host.url(&format!("/{name}")))
        .collect();
    let mut errors = vec![0u64; LANGUAGES.len()];
    for (url, errors) in urls.iter().zip(&mut errors) {
        for _ in 0..WARM_UP {
            if get(&client, url).is_err() {
                *errors += 1;
            }
        }
    }
    eprintln!(
        "  latency: {LATENCY_ROUNDS} rounds × {PER_ROUND} sequential keep-alive GETs per language"
    );
    let mut latency: Vec<Vec<f64>> = vec![Vec::new(); LANGUAGES.len()];
    for _ in 0..LATENCY_ROUNDS {
        for ((url, samples), errors) in urls.iter().zip(&mut latency).zip(&mut errors) {
            for _ in 0..PER_ROUND {
                let started = Instant::now();
                let ok = get(&client, url).is_ok();
                samples.push(started.elapsed().as_secs_f64() * 1e3);
                if !ok {
                    *errors += 1;
                }
            }
        }
    }
    for ((label, ..), samples) in LANGUAGES.iter().zip(&latency) {
        eprintln!(
            "    {label:<7} p50 {:.3} ms  p99 {:.3} ms",
            percentile(samples, 50.0),
            percentile(samples, 99.0)
        );
    }

    eprintln!("  req/s: {}", wrk.describe());
    let targets: Vec<Target> = LANGUAGES
        .iter()
        .zip(&urls)
        .map(|((label, ..), url)| Target::new(label, url.clone()))
        .collect();
    let loads = load::measure(&targets, wrk)?;
    let rss_after = host.process.rss()?;
    drop(host);

    let languages = LANGUAGES
        .iter()
        .zip(sources)
        .zip(loads)
        .zip(latency)
        .zip(errors)
        .enumerate()
        .map(
            |(i, (((((label, ..), (_, file)), load), latency_ms), errors))| {
                Ok(Language {
                    label,
                    size: std::fs::metadata(&file)
                        .with_context(|| format!("reading `{}`", file.display()))?
                        .len(),
                    compile_ms: compile[i],
                    cached_load_ms: median(cached_loads[i].clone()),
                    latency_ms,
                    errors,
                    load,
                })
            },
        )
        .collect::<Result<Vec<_>>>()?;
    Ok(Results {
        languages,
        cold_start_ms,
        cached_start_ms,
        rss_loaded,
        rss_after,
    })
}

/// The manifest: one component per language, routed on `/{name}`.
/// `components/{rel}`, a component built by `just build` (JS and Python included).
pub fn built_component(paths: &Paths, rel: &str) -> Result<PathBuf> {
    let file = paths.repo.join("components").join(rel);
    if !file.is_file() {
        bail!(
            "component `{}` is missing; run `just build` (or components/js/build.sh and \
             components/python/build.sh) first",
            file.display()
        );
    }
    Ok(file)
}

fn manifest(sources: &[(&str, PathBuf)]) -> String {
    let mut out = String::new();
    for (name, file) in sources {
        out.push_str(&format!(
            "[component.{name}]\nsource = {:?}\nmemory_limit = \"32MiB\"\ntimeout = \"5s\"\n\
             max_instances = 64\n\n[[trigger.http]]\nroute = \"/{name}\"\ncomponent = \"{name}\"\n\n",
            file.display().to_string()
        ));
    }
    out
}

/// Starts a host and times it from spawn until it logs "llmchat listening".
fn start(paths: &Paths, manifest: &str, cache: &Path) -> Result<(Llmchat, f64)> {
    let started = Instant::now();
    let host = Llmchat::start(&paths.llmchat, manifest, cache)?;
    // `start` also waits for a TCP connect, which follows the log line by well under 1 ms.
    Ok((host, started.elapsed().as_secs_f64() * 1e3))
}

/// Each language's `elapsed_ms` from its `component loaded` line, which must say
/// `cached={cached}`.
fn loaded_ms(host: &Llmchat, cached: bool) -> Result<Vec<f64>> {
    let log = host.process.log();
    LANGUAGES
        .iter()
        .map(|(_, name, _)| {
            let line = log
                .lines()
                .find(|l| {
                    l.contains("component loaded") && l.contains(&format!("component={name} "))
                })
                .with_context(|| format!("no `component loaded` line for `{name}`:\n{log}"))?;
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .with_context(|| format!("no `{key}` in {line:?}"))
            };
            if field("cached=")? != cached.to_string() {
                bail!("expected cached={cached} for `{name}`: {line:?}");
            }
            field("elapsed_ms=")?
                .parse()
                .with_context(|| format!("parsing elapsed_ms in {line:?}"))
        })
        .collect()
}

/// One GET that must answer 200 with the hello body.
fn get(client: &Client, url: &str) -> Result<()> {
    let response = client
        .get(url)
        .send()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().with_context(|| format!("reading {url}"))?;
    if status != reqwest::StatusCode::OK || !body.contains(BODY) {
        bail!("GET {url} answered {status}: {body:?}");
    }
    Ok(())
}
