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
use llmchat_host::engine::{ComponentEngine, InvocationState, OutboundPolicy, PoolSizing};
use llmchat_host::kv::MemoryKv;
use llmchat_host::llm::EchoProvider;
use llmchat_host::manifest::Manifest;

use crate::{median, micros};

const WARM_UP: usize = 2_000;
const BATCHES: usize = 15;
const PER_BATCH: usize = 2_000;
const CONCURRENT_TASKS: usize = 2;
/// The cap each invocation's store gets, as `hello` has in the default manifest.
const MEMORY_CAP: usize = 16 << 20;

pub struct Results {
    /// Median µs per invocation, one task.
    pub trivial_us: f64,
    /// Median invocations per second, 2 tasks on 2 workers.
    pub trivial_per_sec: f64,
    pub breakdown: Breakdown,
    pub hello_us: f64,
    pub hello_per_sec: f64,
}

/// Median µs per phase of one trivial invocation.
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
        let breakdown = breakdown(&trivial).await?;
        let (hello_us, hello_per_sec) = per_invocation(&hello).await?;
        eprintln!("  hello:   {hello_us:.2} µs/invocation, {hello_per_sec:.0}/s with 2 tasks");
        Ok(Results {
            trivial_us,
            trivial_per_sec,
            breakdown,
            hello_us,
            hello_per_sec,
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
            engine: ComponentEngine::new(sizing, None)?,
            identity: Arc::new(ComponentIdentity {
                name: "bench".to_string(),
                config: BTreeMap::new(),
            }),
            services: Arc::new(Services {
                kv: Arc::new(MemoryKv::new(1_000, 1 << 20, 64 << 10)),
                llm: Arc::new(EchoProvider::new(None)),
            }),
        })
    }

    fn pre(&self, file: &Path) -> Result<wasmtime::component::InstancePre<InvocationState>> {
        let bytes = std::fs::read(file).with_context(|| format!("reading `{}`", file.display()))?;
        let compiled = self
            .engine
            .compile(&bytes)
            .with_context(|| format!("compiling `{}`", file.display()))?;
        self.engine.instantiate_pre(&compiled.component)
    }

    fn new_store(&self) -> Store<InvocationState> {
        let caps = CapabilityCtx::new(self.identity.clone(), self.services.clone());
        self.engine.new_store(InvocationState::new(
            MEMORY_CAP,
            OutboundPolicy::default(),
            caps,
        ))
    }
}

/// One complete invocation: store, instantiate, call, drop.
trait Invoke: Send + Sync + 'static {
    fn invoke(&self) -> impl Future<Output = Result<()>> + Send;
}

struct Trivial {
    host: Arc<Host>,
    pre: CommandPre<InvocationState>,
}

impl Invoke for Trivial {
    async fn invoke(&self) -> Result<()> {
        let mut store = self.host.new_store();
        let command = self.pre.instantiate_async(&mut store).await?;
        command
            .wasi_cli_run()
            .call_run(&mut store)
            .await?
            .map_err(|()| anyhow!("the trivial component's `run` returned an error"))
    }
}

struct Hello {
    host: Arc<Host>,
    pre: ProxyPre<InvocationState>,
}

impl Invoke for Hello {
    async fn invoke(&self) -> Result<()> {
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
        let proxy = self.pre.instantiate_async(&mut store).await?;
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
                    invoke.invoke().await?;
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

/// The trivial invocation with a timestamp between phases; medians of per-batch means.
async fn breakdown(trivial: &Arc<Trivial>) -> Result<Breakdown> {
    let mut phases: [Vec<f64>; 4] = Default::default();
    for _ in 0..BATCHES {
        let mut sums = [Duration::ZERO; 4];
        for _ in 0..PER_BATCH {
            let t0 = Instant::now();
            let mut store = trivial.host.new_store();
            let t1 = Instant::now();
            let command = trivial.pre.instantiate_async(&mut store).await?;
            let t2 = Instant::now();
            command
                .wasi_cli_run()
                .call_run(&mut store)
                .await?
                .map_err(|()| anyhow!("the trivial component's `run` returned an error"))?;
            let t3 = Instant::now();
            drop(store);
            let t4 = Instant::now();
            for (sum, (from, to)) in sums
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                *sum += to - from;
            }
        }
        for (phase, sum) in phases.iter_mut().zip(sums) {
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
