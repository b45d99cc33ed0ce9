//! The one wasmtime engine of the process, and how a single invocation runs under it.
//!
//! [`ComponentEngine`] is built once in `main`: an async engine with the pooling allocator
//! sized from the manifest, epoch interruption driven by one [`ticker::EpochTicker`], the
//! compiled-artifact cache, and the linker holding every import the host grants (what is
//! linked is up to the caller: see `crate::runtime`). Each invocation gets a fresh [`Store`]
//! from [`ComponentEngine::new_store`], capped by an [`InstanceLimiter`] and a deadline, and
//! dropped when the invocation ends: no instance outlives its invocation. The engine knows
//! its store's data only through [`Limited`].

pub mod budget;
mod cache;
pub mod compiler;
mod heap;
mod idle_pool;
mod lane;
mod limits;
mod resident;
mod ticker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    CallHook, Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};

pub use cache::Compiled;
pub use compiler::{CompileError, CompilerOptions};
pub use heap::{pin_allocator_thresholds, return_freed_memory, trim_periodically};
pub use limits::{InstanceLimiter, MemoryLimitExceeded};
pub use resident::{CodeImage, RELEASE_EVERY as CODE_RELEASE_EVERY};

/// The idle release, run every [`CODE_RELEASE_EVERY`]: drops the mapped code of components
/// idle for a while ([`resident`]) and the pages the pool's memory slots keep resident once
/// no store has been alive for a while ([`idle_pool`]). Returns how many code images and
/// memory slabs it released.
pub fn release_idle_code() -> usize {
    let slabs = idle_pool::release_idle();
    // A slab released means no store has been alive for a while: code that long
    // invocations ran after their code was released goes too.
    resident::release_idle(slabs > 0) + slabs
}

use crate::manifest::Manifest;

/// How big the instance pool is, derived from the manifest rather than wasmtime's default
/// of 1,000 instances.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    /// Component instances that may be alive at once: the sum of the manifest's
    /// `max_instances`, plus `[deploy] reserve_instances` for components deployed later.
    pub instances: u32,
    /// The largest `memory_limit` of any component, or `[deploy] max_memory_limit` if larger.
    pub max_memory: u64,
}

impl PoolSizing {
    pub fn from_manifest(manifest: &Manifest) -> Self {
        let instances = manifest
            .components
            .values()
            .map(|c| c.max_instances)
            .sum::<u32>()
            .saturating_add(manifest.deploy.reserve_instances)
            .max(1);
        let max_memory = manifest
            .components
            .values()
            .map(|c| c.memory_limit.bytes())
            .chain([manifest.deploy.max_memory_limit.bytes()])
            .max()
            .unwrap_or(64 << 20);
        Self {
            instances,
            max_memory,
        }
    }
}

/// Core modules, memories and tables one component may contain. Rust guests use 1–3 core
/// instances and one memory; engines such as StarlingMonkey or CPython use more.
const CORE_INSTANCES_PER_COMPONENT: u32 = 50;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;
/// Memory slots in the pool per component instance it can hold.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// What a pool slot keeps mapped between instances: reusing resident pages instead of
/// `madvise`-ing them away is what brings an invocation from ~36 µs to ~10 µs. 2 MiB covers
/// the ~1.1 MiB a Rust guest touches per request; 4 MiB measured no faster and left 4 MiB
/// resident in every slot a memory bomb had filled (1 MiB is too small: 15k vs 23k req/s).
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
const TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// Slots that stay warm (keeping what [`MEMORY_KEEP_RESIDENT`] and the module's memory image
/// left mapped) while unused. Below this count wasmtime takes a never-used slot rather than
/// reuse a warm one of another module, so with its default of 100 a host serving a few
/// modules in turn ends up with 100 slots of 2–4 MB resident each (a JS or Python slot keeps
/// ~2 MB of its image's pages mapped besides the dirty ones). Above it the least recently
/// used warm slot is taken over, so the resident slots are at most this many plus the
/// instances running at once. 16 keeps every module of the default app on its own slots;
/// the pool splits it across its shards (one per core).
const MAX_UNUSED_WARM_SLOTS: u32 = 16;

/// What the engine needs of a store's data: the limiter that caps its memory.
pub trait Limited: Send + 'static {
    fn limiter(&self) -> &InstanceLimiter;
    fn limiter_mut(&mut self) -> &mut InstanceLimiter;
    /// The store's cap on resource handles, named in the error when its table is full.
    fn max_resources(&self) -> usize;
}

/// The default artifact cache folder.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache::ArtifactCache::default_dir()
}

/// The process-wide engine, linker and artifact cache, and the compiler children that
/// fill the cache (this process never compiles: see [`compiler`]). `T` is the data of
/// every store.
pub struct ComponentEngine<T: 'static> {
    engine: wasmtime::Engine,
    /// Every store enters it, so that idle slots are released only while none is alive.
    idle_pool: std::sync::Arc<idle_pool::IdlePool>,
    linker: Linker<T>,
    cache: cache::ArtifactCache,
    compiler: compiler::ChildCompiler,
    _ticker: ticker::EpochTicker,
}

impl<T: Limited> ComponentEngine<T> {
    /// Builds the engine; `link` adds every import the host grants to its linker.
    /// `cache_dir` of `None` disables the artifact cache (compiler children then write into
    /// a private temporary folder); `compiler` says which binary compiles, and its bounds.
    pub fn new(
        sizing: PoolSizing,
        cache_dir: Option<PathBuf>,
        compiler: CompilerOptions,
        link: impl FnOnce(&mut Linker<T>) -> wasmtime::Result<()>,
    ) -> Result<Self> {
        let config = engine_config(sizing)?;
        let (engine, idle_pool) = idle_pool::IdlePool::discover(
            sizing.instances.saturating_mul(MEMORIES_PER_INSTANCE),
            sizing.max_memory,
            || {
                wasmtime::Engine::new(&config)
                    .map_err(anyhow::Error::from)
                    .context("creating the wasmtime engine")
            },
        )?;
        let mut linker = Linker::new(&engine);
        link(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking host capabilities")?;
        let cache = cache::ArtifactCache::new(&engine, cache_dir)?;
        let ticker =
            ticker::EpochTicker::start(engine.clone()).context("starting the epoch ticker")?;
        Ok(Self {
            engine,
            idle_pool,
            linker,
            cache,
            compiler: compiler::ChildCompiler::new(compiler, sizing),
            _ticker: ticker,
        })
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Maps component `name` at `path` from the artifact cache, compiling it in a child
    /// process first when the cache does not hold it. A [`CompileError`] is in the chain
    /// when compiling failed.
    pub async fn load(&self, name: &str, path: &Path) -> Result<Compiled> {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading `{}`", path.display()))?;
        self.cache
            .load(
                &self.engine,
                &self.compiler,
                name,
                &bytes,
                compiler::Input::File(path),
            )
            .await
    }

    /// Like [`ComponentEngine::load`], for bytes held in memory (a deploy's upload).
    pub async fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled> {
        self.cache
            .load(
                &self.engine,
                &self.compiler,
                name,
                bytes,
                compiler::Input::Bytes(bytes),
            )
            .await
    }

    /// Resolves the component's imports against what the host grants, once per component.
    pub fn instantiate_pre(&self, component: &Component) -> Result<InstancePre<T>> {
        self.linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component imports something the host does not provide")
    }

    /// A fresh store for one invocation: limited by `state`'s limiter and preempted every
    /// epoch tick so that one busy guest cannot starve the others on the same worker.
    ///
    /// Host-side bytes past the cap are caught on the way back into wasm from every host
    /// call (the call hook), and at every epoch tick for a guest that stays in wasm.
    pub fn new_store(&self, state: T) -> Store<T> {
        let live = self.idle_pool.enter();
        let mut store = Store::new(&self.engine, state);
        // Held by the store's data, so it ends when the store is dropped.
        store.data_mut().limiter_mut().hold_while_alive(live);
        store.limiter(|s| s.limiter_mut());
        store.call_hook(|store, hook| match hook {
            CallHook::ReturningFromHost | CallHook::CallingWasm => {
                store.data().limiter().check().map_err(wasmtime::Error::new)
            }
            CallHook::CallingHost | CallHook::ReturningFromWasm => Ok(()),
        });
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            store
                .data()
                .limiter()
                .check()
                .map_err(wasmtime::Error::new)?;
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store
    }
}

fn engine_config(sizing: PoolSizing) -> Result<Config> {
    let mut pool = PoolingAllocationConfig::new();
    let instances = sizing.instances;
    let max_memory =
        usize::try_from(sizing.max_memory).context("memory limit does not fit usize")?;
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_mul(MEMORIES_PER_INSTANCE))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(max_memory)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .max_unused_warm_slots(MAX_UNUSED_WARM_SLOTS)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    // wasmtime's defaults, pinned: the idle release computes the slab layout from them.
    config
        .memory_reservation(idle_pool::MEMORY_RESERVATION)
        .memory_guard_size(idle_pool::MEMORY_GUARD)
        .guard_before_linear_memory(true)
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}

/// Why an invocation failed, in the terms an operator or API client needs.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("{0}")]
    MemoryLimit(MemoryLimitExceeded),
    /// The instance filled its resource table (`max_resources` handles at once).
    #[error(
        "resource limit exceeded: the instance holds its maximum of {0} resources (`max_resources`)"
    )]
    ResourceLimit(usize),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("{0}")]
    Failed(String),
}

impl InvocationError {
    /// Classifies an error returned by instantiation or a guest call. `max_resources` is the
    /// store's resource cap, to name in the error when the table was full.
    pub fn from_wasmtime(err: wasmtime::Error, max_resources: usize) -> Self {
        if let Some(e) = err.downcast_ref::<MemoryLimitExceeded>() {
            return InvocationError::MemoryLimit(MemoryLimitExceeded {
                requested: e.requested,
                host: e.host,
                cap: e.cap,
            });
        }
        let table_full = err.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
                Some(wasmtime::component::ResourceTableError::Full)
            )
        });
        if table_full {
            return InvocationError::ResourceLimit(max_resources);
        }
        if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
            return InvocationError::Trap(trap.to_string());
        }
        InvocationError::Failed(format!("{err:#}"))
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            InvocationError::MemoryLimit(_) | InvocationError::ResourceLimit(_) => "memory",
            InvocationError::Timeout(_) => "timeout",
            InvocationError::Trap(_) => "trap",
            InvocationError::Failed(_) => "error",
        }
    }
}

/// What [`with_deadline`] needs of the invocation's store, taken before the call borrows it.
#[derive(Debug, Clone, Copy)]
pub struct InvocationLimits {
    pub timeout: Duration,
    /// Charged with every host allocation made while the invocation is polled.
    pub budget: Option<budget::BudgetHandle>,
    pub max_resources: usize,
}

impl InvocationLimits {
    pub fn of<T: Limited>(store: &Store<T>, timeout: Duration) -> Self {
        let state = store.data();
        Self {
            timeout,
            budget: state.limiter().budget().map(budget::Budget::handle),
            max_resources: state.max_resources(),
        }
    }
}

/// Runs one invocation under its wall-clock limit, charging what the host allocates while it
/// runs to its memory budget, and in the long lane once it has computed for a while. Dropping the future on timeout drops the instance with it,
/// which frees its pool slot.
pub async fn with_deadline<T>(
    limits: InvocationLimits,
    invocation: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, InvocationError> {
    // Charged inside: the lane's own allocations are not the guest's.
    let charged = lane::InLane::new(budget::Charged::new(limits.budget, invocation));
    match crate::timers::timeout(limits.timeout, charged).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(InvocationError::from_wasmtime(e, limits.max_resources)),
        Err(_) => Err(InvocationError::Timeout(limits.timeout)),
    }
}
