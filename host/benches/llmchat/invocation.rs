//! (a) What one invocation costs the host: a fresh store, `instantiate_async` from the
//! component's `InstancePre`, one call, and the drop, all through the real host library
//! (`ComponentEngine`, `InvocationState`, the pool sized as for the default manifest).
//!
//! The trivial component does nothing, so its figure is pure host overhead. It is measured
//! as the median over batches (not per call: one call is ~10 µs, near timer resolution),
//! single task and then 2 tasks on a 2-worker runtime, followed by a per-phase breakdown
//! that says where the time goes. The `hello` wasi:http component is measured the same way,
//! with a tiny request and its response body drained, but without HTTP parsing or sockets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use llmchat_host::capabilities::{CapabilityCtx, ComponentIdentity, Services};
use llmchat_host::engine::{CompilerOptions, PoolSizing};
use llmchat_host::kv::MemoryKv;
use llmchat_host::llm::EchoProvider;
use llmchat_host::manifest::Manifest;
use llmchat_host::queue::Queues;
use llmchat_host::queue::memory::MemoryQueue;
use llmchat_host::runtime::{ComponentEngine, InvocationState, OutboundPolicy};

use crate::{median, micros};

const WARM_UP: usize = 2_000;
pub const BATCHES: usize = 15;
pub const PER_BATCH: usize = 2_000;
const CONCURRENT_TASKS: usize = 2;
/// Store (with the request, for wasi:http), instantiate, call (with the body), drop.
const PHASES: usize = 4;
/// The cap each invocation's store gets, as `hello` has in the default manifest.
const MEMORY_CAP: usize = 16 << 20;

pub struct Results {
    /// Median µs per invocation, one task.
    pub trivial_us: f64,
    /// Median invocations per second, 2 tasks on 2 workers.
    pub trivial_per_sec: f64,
    pub trivial_phases: Breakdown,
    pub hello_us: f64,
    pub hello_per_sec: f64,
    pub hello_phases: Breakdown,
}

/// Median µs per phase of one invocation.
pub struct Breakdown {
    pub store: f64,
    pub instantiate: f64,
    pub call: f64,
    pub drop: f64,
}

/// Measures everything above. `manifest` sizes the pool; `wasm` holds the components.
pub fn measure(manifest: &Path, wasm: &Path) -> Result<Results> {
    let sizing = PoolSizing::from_manifest(&Manifest::load(manifest)?);
    let host = Arc::new(Host::new(sizing)?);
    let trivial = Arc::new(Trivial {
        pre: CommandPre::new(host.pre(&wasm.join("fixture_trivial.wasm"))?)
            .map_err(anyhow::Error::from)
            .context("fixture_trivial.wasm is not a wasi:cli command")?,
        host: host.clone(),
    });
    let hello = Arc::new(Hello {
        pre: ProxyPre::new(host.pre(&wasm.join("hello.wasm"))?)
            .map_err(anyhow::Error::from)
            .context("hello.wasm is not a wasi:http proxy")?,
        host,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CONCURRENT_TASKS)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let (trivial_us, trivial_per_sec) = per_invocation(&trivial).await?;
        eprintln!("  trivial: {trivial_us:.2} µs/invocation, {trivial_per_sec:.0}/s with 2 tasks");
        let trivial_phases = breakdown(&trivial).await?;
        let (hello_us, hello_per_sec) = per_invocation(&hello).await?;
        eprintln!("  hello:   {hello_us:.2} µs/invocation, {hello_per_sec:.0}/s with 2 tasks");
        let hello_phases = breakdown(&hello).await?;
        Ok(Results {
            trivial_us,
            trivial_per_sec,
            trivial_phases,
            hello_us,
            hello_per_sec,
            hello_phases,
        })
    })
}

/// What every invocation's store is built from, as the registry builds it.
struct Host {
    engine: ComponentEngine,
    identity: Arc<ComponentIdentity>,
    services: Arc<Services>,
}

impl Host {
    fn new(sizing: PoolSizing) -> Result<Self> {
        Ok(Self {
            engine: ComponentEngine::new(
                sizing,
                None,
                CompilerOptions::with_program(env!("CARGO_BIN_EXE_llmchat")),
                llmchat_host::runtime::link,
            )?,
            identity: Arc::new(ComponentIdentity {
                name: "bench".to_string(),
                kv_namespace: "bench".to_string(),
                config: BTreeMap::new(),
                secrets: BTreeMap::new(),
                hash: "bench".to_string(),
            }),
            services: Arc::new(Services {
                kv: Arc::new(MemoryKv::new(1_000, 1 << 20, 64 << 10)),
                llm: Arc::new(EchoProvider::new("echo", None)),
                queues: Arc::new(Queues::new(Arc::new(MemoryQueue::new()), &[])),
                redis: None,
                llm_gate: Arc::new(llmchat_host::limits::llm::LlmGate::new(
                    &Default::default(),
                    Default::default(),
                    Default::default(),
                    Arc::new(llmchat_host::limits::local::LocalRateLimiter::new(1_000)),
                )),
            }),
        })
    }

    fn pre(&self, file: &Path) -> Result<wasmtime::component::InstancePre<InvocationState>> {
        let bytes = std::fs::read(file).with_context(|| format!("reading `{}`", file.display()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for the compiler child")?;
        let compiled = rt
            .block_on(self.engine.compile("bench", &bytes))
            .with_context(|| format!("compiling `{}`", file.display()))?;
        self.engine.instantiate_pre(&compiled.component)
    }

    fn new_store(&self) -> Store<InvocationState> {
        let caps = CapabilityCtx::new(self.identity.clone(), self.services.clone(), 10_000);
        self.engine.new_store(InvocationState::new(
            MEMORY_CAP,
            10_000,
            OutboundPolicy::default(),
            &[],
            caps,
        ))
    }
}

/// One complete invocation: store, instantiate, call, drop. `laps` is told when each of
/// these phases ends; it is [`NoLaps`] except in the breakdown.
trait Invoke: Send + Sync + 'static {
    fn invoke(&self, laps: &mut impl Laps) -> impl Future<Output = Result<()>> + Send;
}

/// Marks the end of a phase of an invocation.
trait Laps: Send {
    fn lap(&mut self);
}

struct NoLaps;

impl Laps for NoLaps {
    fn lap(&mut self) {}
}

/// Sums the time of each phase over many invocations.
struct PhaseTimes {
    last: Instant,
    phase: usize,
    sums: [Duration; PHASES],
}

impl Laps for PhaseTimes {
    fn lap(&mut self) {
        let now = Instant::now();
        self.sums[self.phase % PHASES] += now - self.last;
        self.phase += 1;
        self.last = now;
    }
}

struct Trivial {
    host: Arc<Host>,
    pre: CommandPre<InvocationState>,
}

impl Invoke for Trivial {
    async fn invoke(&self, laps: &mut impl Laps) -> Result<()> {
        let mut store = self.host.new_store();
        laps.lap();
        let command = self.pre.instantiate_async(&mut store).await?;
        laps.lap();
        command
            .wasi_cli_run()
            .call_run(&mut store)
            .await?
            .map_err(|()| anyhow!("the trivial component's `run` returned an error"))?;
        laps.lap();
        drop(store);
        laps.lap();
        Ok(())
    }
}

struct Hello {
    host: Arc<Host>,
    pre: ProxyPre<InvocationState>,
}

impl Invoke for Hello {
    async fn invoke(&self, laps: &mut impl Laps) -> Result<()> {
        let mut store = self.host.new_store();
        let request =
            http::Request::get("http://localhost/hello")
                .body(Empty::<Bytes>::new().map_err(
                    |never: Infallible| -> wasmtime_wasi_http::Error { match never {} },
                ))?;
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        laps.lap();
        let proxy = self.pre.instantiate_async(&mut store).await?;
        laps.lap();
        // The guest may still be writing the body after it sent the head: drain concurrently.
        let call = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam);
        let respond = async {
            let response = receiver
                .await
                .context("hello sent no response")?
                .map_err(|code| anyhow!("hello answered with an error: {code:?}"))?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|code| anyhow!("reading hello's body: {code:?}"))?;
            anyhow::Ok(body.to_bytes())
        };
        let (called, body) = tokio::join!(call, respond);
        called?;
        if body?.is_empty() {
            bail!("hello answered with an empty body");
        }
        laps.lap();
        drop(store);
        laps.lap();
        Ok(())
    }
}

/// Median µs per invocation with one task, and median invocations/s with 2 tasks.
async fn per_invocation<I: Invoke>(invoke: &Arc<I>) -> Result<(f64, f64)> {
    batch(invoke, 1, WARM_UP).await?;
    let mut single = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        single.push(micros(batch(invoke, 1, PER_BATCH).await?) / PER_BATCH as f64);
    }
    batch(invoke, CONCURRENT_TASKS, WARM_UP).await?;
    let mut concurrent = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let elapsed = batch(invoke, CONCURRENT_TASKS, PER_BATCH).await?;
        concurrent.push((CONCURRENT_TASKS * PER_BATCH) as f64 / elapsed.as_secs_f64());
    }
    Ok((median(single), median(concurrent)))
}

/// Runs `per_task` invocations in each of `tasks` spawned tasks; returns the wall time.
async fn batch<I: Invoke>(invoke: &Arc<I>, tasks: usize, per_task: usize) -> Result<Duration> {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let invoke = invoke.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    invoke.invoke(&mut NoLaps).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.await.context("a benchmark task panicked")??;
    }
    Ok(started.elapsed())
}

/// Median µs per phase, one task: the medians of per-batch means.
async fn breakdown<I: Invoke>(invoke: &Arc<I>) -> Result<Breakdown> {
    let mut phases: [Vec<f64>; PHASES] = Default::default();
    for _ in 0..BATCHES {
        let mut times = PhaseTimes {
            last: Instant::now(),
            phase: 0,
            sums: [Duration::ZERO; PHASES],
        };
        for _ in 0..PER_BATCH {
            times.last = Instant::now();
            invoke.invoke(&mut times).await?;
        }
        if times.phase != PHASES * PER_BATCH {
            bail!(
                "an invocation marked {} phases, expected {PHASES}",
                times.phase / PER_BATCH
            );
        }
        for (phase, sum) in phases.iter_mut().zip(times.sums) {
            phase.push(micros(sum) / PER_BATCH as f64);
        }
    }
    let [store, instantiate, call, dropped] = phases.map(median);
    Ok(Breakdown {
        store,
        instantiate,
        call,
        drop: dropped,
    })
}
