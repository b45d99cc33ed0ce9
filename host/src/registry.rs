//! The loaded components: each compiled once (or mapped from the artifact cache), its
//! imports resolved once into an `InstancePre`, and its concurrency bounded by a semaphore
//! of `max_instances` slots.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::Semaphore;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::capabilities::{CapabilityCtx, ComponentIdentity, MonitorPre, ProcessorPre, Services};
use crate::engine::CodeImage;
use crate::manifest::{ComponentSpec, Export, Manifest, Triggers};
use crate::runtime::{ComponentEngine, InvocationState, OutboundPolicy};

/// One component, ready to instantiate.
pub struct LoadedComponent {
    pub spec: ComponentSpec,
    /// SHA-256 of the wasm bytes.
    pub content_hash: String,
    /// Present when the component exports `wasi:http/incoming-handler`.
    pub http: Option<ProxyPre<InvocationState>>,
    /// Present when the component exports `llmchat:runtime/processor`.
    pub processor: Option<ProcessorPre<InvocationState>>,
    /// Present when the component exports `llmchat:runtime/monitoring`.
    pub monitor: Option<MonitorPre<InvocationState>>,
    /// One permit per instance that may run at once.
    pub slots: Arc<Semaphore>,
    identity: Arc<ComponentIdentity>,
    /// Its compiled code, unmapped while the component is idle.
    code: Arc<CodeImage>,
    outbound: OutboundPolicy,
    environment: Vec<(String, String)>,
    memory_cap: usize,
}

impl LoadedComponent {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A fresh store for one invocation of this component.
    pub fn new_store(
        &self,
        engine: &ComponentEngine,
        services: &Arc<Services>,
    ) -> Store<InvocationState> {
        self.code.touch();
        let max_resources = self.spec.max_resources as usize;
        let caps = CapabilityCtx::new(self.identity.clone(), services.clone(), max_resources);
        engine.new_store(InvocationState::new(
            self.memory_cap,
            max_resources,
            self.outbound.clone(),
            &self.environment,
            caps,
        ))
    }
}

/// Every component of the host, by name: a snapshot. A deploy builds the next one with
/// [`Registry::with`] / [`Registry::without`]; what already runs keeps the `Arc`s it holds.
#[derive(Clone, Default)]
pub struct Registry {
    components: BTreeMap<String, Arc<LoadedComponent>>,
}

impl Registry {
    /// Loads every component, one after the other (a compile may take a few hundred MB in
    /// its child); the first that fails stops start-up with an error naming it.
    pub async fn load(engine: &ComponentEngine, manifest: &Manifest) -> Result<Registry> {
        let mut components = BTreeMap::new();
        for (name, spec) in &manifest.components {
            let needs = Needs::of(name, &manifest.triggers);
            let loaded = load_component(engine, spec, needs).await.with_context(|| {
                format!(
                    "loading component `{name}` from `{}`",
                    spec.source.display()
                )
            })?;
            components.insert(name.clone(), Arc::new(loaded));
        }
        Ok(Registry { components })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<LoadedComponent>> {
        self.components.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedComponent>> {
        self.components.values()
    }

    pub fn len(&self) -> usize {
        self.components.len()
    }

    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// This registry with `component` added or replacing the one of the same name.
    pub fn with(&self, component: Arc<LoadedComponent>) -> Registry {
        let mut next = self.clone();
        next.components
            .insert(component.name().to_string(), component);
        next
    }

    /// This registry without component `name`.
    pub fn without(&self, name: &str) -> Registry {
        let mut next = self.clone();
        next.components.remove(name);
        next
    }
}

/// Which exports the triggers require of a component, and so which imports it is granted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub http: bool,
    pub processor: bool,
    pub monitor: bool,
}

impl Needs {
    /// What `triggers` ask of component `name`.
    pub fn of(name: &str, triggers: &Triggers) -> Needs {
        let exports = triggers.exports_of(name);
        Needs {
            http: exports.contains(&Export::Http),
            processor: exports.contains(&Export::Processor),
            monitor: exports.contains(&Export::Monitor),
        }
    }
}

/// Refuses imports the host links but this component is not granted: outbound HTTP without
/// `allowed_outbound_hosts`, and the monitor's `probe` without a schedule. Interfaces the
/// host does not provide at all are refused by the linker itself, naming them.
///
/// `wasi:sockets` is linked for every component, because language runtimes (CPython,
/// StarlingMonkey) import it whatever the program does; the WASI context of every
/// invocation allows no TCP, UDP or name lookup, so linking it grants nothing.
fn check_grants(
    engine: &ComponentEngine,
    component: &wasmtime::component::Component,
    spec: &ComponentSpec,
    needs: Needs,
) -> Result<()> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine.wasmtime()) {
        if name.starts_with("wasi:http/outgoing-handler") && spec.allowed_outbound_hosts.is_empty()
        {
            bail!(
                "it imports `{name}` but is granted no outbound host: set `allowed_outbound_hosts`"
            );
        }
        if name.starts_with("llmchat:runtime/probe") && !needs.monitor {
            bail!(
                "it imports `{name}`, which only monitors (components with a schedule trigger) are granted"
            );
        }
    }
    Ok(())
}

/// Maps the component of `spec` from the artifact cache (a compiler child fills it first
/// when needed), checks its imports against what it is granted and its exports against what
/// its triggers need, and resolves its imports once.
pub async fn load_component(
    engine: &ComponentEngine,
    spec: &ComponentSpec,
    needs: Needs,
) -> Result<LoadedComponent> {
    let started = std::time::Instant::now();
    let compiled = engine.load(&spec.name, &spec.source).await?;
    let pre = engine.instantiate_pre(&compiled.component)?;
    let http = match ProxyPre::new(pre.clone()) {
        Ok(p) => Some(p),
        Err(e) if needs.http => {
            return Err(anyhow::Error::from(e).context(
                "it is the target of an [[trigger.http]] but does not export `wasi:http/incoming-handler@0.2.x`",
            ));
        }
        Err(_) => None,
    };
    let processor = match ProcessorPre::new(pre.clone()) {
        Ok(p) => Some(p),
        Err(e) if needs.processor => {
            return Err(anyhow::Error::from(e).context(
                "it is the target of an [[trigger.queue]] but does not export `llmchat:runtime/processor@0.1.0`",
            ));
        }
        Err(_) => None,
    };
    let monitor = match MonitorPre::new(pre) {
        Ok(p) => Some(p),
        Err(e) if needs.monitor => {
            return Err(anyhow::Error::from(e).context(
                "it is the target of a [[trigger.schedule]] but does not export `llmchat:runtime/monitoring@0.1.0`",
            ));
        }
        Err(_) => None,
    };
    check_grants(engine, &compiled.component, spec, needs)?;
    tracing::info!(
        component = %spec.name,
        hash = &compiled.content_hash[..12],
        cached = compiled.from_cache,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "component loaded"
    );
    let identity = Arc::new(ComponentIdentity {
        name: spec.name.clone(),
        kv_namespace: spec.kv_namespace.clone(),
        config: spec.config.clone(),
        secrets: spec.secrets.clone(),
        hash: compiled.content_hash.chars().take(12).collect(),
    });
    Ok(LoadedComponent {
        code: CodeImage::register(&compiled.component),
        content_hash: compiled.content_hash,
        http,
        processor,
        monitor,
        slots: Arc::new(Semaphore::new(spec.max_instances as usize)),
        identity,
        outbound: OutboundPolicy::new(&spec.allowed_outbound_hosts),
        environment: spec
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory_cap: usize::try_from(spec.memory_limit.bytes()).unwrap_or(usize::MAX),
        spec: spec.clone(),
    })
}
