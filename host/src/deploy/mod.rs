//! Deploying components into a running host: validate, swap atomically, store, and reach
//! every host on the same Redis.
//!
//! A deploy is checked completely before anything changes, by the manifest's own types and
//! rules ([`DeploySpec`]): the bytes are a component that compiles, exports what its triggers
//! need, imports only what the host provides and the component is granted, fits the pool,
//! and its triggers are valid and clash with no other component's. Then it is swapped in: the
//! queues, the worker's runners, the schedules and the route table are replaced whole, so new
//! invocations use the new version while in-flight ones finish on the old one (they hold
//! it). Only a change this host applied is stored (disk, and Redis when configured); if
//! storing fails, the previous version is swapped back. One change at a time per host; other
//! hosts hear of it by pub/sub ([`cluster`]) and fetch the bytes by content hash.

mod cluster;
mod spec;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub use crate::manifest::DeploySpec;
pub use spec::parse_query;
pub use store::{ComponentRecord, Deployment, DiskStore, default_state_dir};

use crate::engine::{CompileError, PoolSizing};
use crate::manifest::{
    ComponentConfig, ComponentSpec, HumanDuration, Manifest, Triggers, check_name,
};
use crate::metrics::Metrics;
use crate::redis::RedisPool;
use crate::registry::{LoadedComponent, Needs, Registry, load_component};
use crate::runtime::ComponentEngine;
use crate::timers::now_ms;
use crate::triggers::TriggerSet;
use cluster::ClusterStore;

/// Why a deploy, delete or rollback was refused; nothing changed in every case.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NoPrevious(String),
    #[error("{0}")]
    Unavailable(String),
    /// The host failed, not the request: the compiler child crashed, ran out of memory or
    /// time.
    #[error("{0}")]
    Internal(String),
}

fn invalid(e: anyhow::Error) -> DeployError {
    DeployError::Invalid(format!("{e:#}"))
}

/// A load that failed: the component's fault (400) unless the compiler child failed (500);
/// a compile error is put on one line, as the child's stderr may span several.
fn load_failure(e: anyhow::Error) -> DeployError {
    let one_line = || {
        format!("{e:#}")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    match e.downcast_ref::<CompileError>() {
        Some(CompileError::Compiler(_)) => DeployError::Internal(one_line()),
        Some(CompileError::Invalid(_)) => DeployError::Invalid(one_line()),
        None => invalid(e),
    }
}

/// The parts of the running host a deploy swaps (the runners of every kind of trigger) or
/// reads (invocation counts, the Redis pool).
pub struct LiveParts {
    /// What runs each kind of trigger.
    pub triggers: TriggerSet,
    /// Read for the invocation count of `GET /admin/components`.
    pub metrics: Arc<Metrics>,
    /// Where deployments are shared with the other hosts; `None` without Redis.
    pub redis: Option<Arc<RedisPool>>,
    /// Told when another host pauses or resumes a queue (on the deploy channel).
    pub queues: Arc<crate::queue::Queues>,
}

/// The components and triggers of an application: the manifest's, with deployments applied.
#[derive(Clone)]
struct App {
    components: BTreeMap<String, ComponentSpec>,
    triggers: Triggers,
}

/// The application now.
struct State {
    app: App,
    registry: Registry,
    records: BTreeMap<String, ComponentRecord>,
}

/// A change checked and ready to swap in.
struct Prepared {
    app: App,
    registry: Registry,
}

/// What a deploy or rollback answers.
#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub deployed_at_ms: u64,
    pub exports: Vec<&'static str>,
    pub triggers: serde_json::Value,
    pub previous: Option<String>,
    pub created: bool,
    pub elapsed_ms: u64,
}

/// One row of `GET /admin/components`.
#[derive(Debug, Serialize)]
pub struct ComponentInfo {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub origin: &'static str,
    pub deployed_at_ms: Option<u64>,
    pub exports: Vec<&'static str>,
    pub triggers: serde_json::Value,
    pub memory_limit: String,
    pub timeout: String,
    pub max_instances: u32,
    pub max_resources: u32,
    pub invocations: u64,
    pub versions: usize,
}

/// Deploys components into the running host; built once in `main`.
pub struct Deployer {
    engine: Arc<ComponentEngine>,
    /// The manifest as loaded: what a component without deployments runs.
    base: Manifest,
    pool: PoolSizing,
    parts: LiveParts,
    disk: Option<DiskStore>,
    cluster: Option<ClusterStore>,
    state: tokio::sync::Mutex<State>,
}

impl Deployer {
    /// The deployer of the application `manifest`, already loaded as `registry` and applied
    /// to `parts`. `state_dir` keeps deployments across restarts.
    pub fn new(
        engine: Arc<ComponentEngine>,
        manifest: &Manifest,
        registry: Registry,
        parts: LiveParts,
        state_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let disk = match state_dir {
            Some(dir) => Some(DiskStore::open(&dir)?),
            None => {
                tracing::warn!(
                    "no state folder (set --state-dir or LLMCHAT_STATE_DIR): deployments will not survive a restart"
                );
                None
            }
        };
        let cluster = parts.redis.clone().map(ClusterStore::new);
        Ok(Self {
            engine,
            base: manifest.clone(),
            pool: PoolSizing::from_manifest(manifest),
            parts,
            disk,
            cluster,
            state: tokio::sync::Mutex::new(State {
                app: App {
                    components: manifest.components.clone(),
                    triggers: manifest.triggers.clone(),
                },
                registry,
                records: BTreeMap::new(),
            }),
        })
    }

    /// The largest component a deploy accepts, in bytes.
    pub fn max_component_size(&self) -> u64 {
        self.base.deploy.max_component_size.bytes()
    }

    /// Applies the stored deployments (from Redis when configured and reachable, else from
    /// disk) over the manifest. A record that no longer applies is skipped with a warning.
    pub async fn restore(&self) {
        let records = match &self.cluster {
            Some(cluster) => match self.cluster_records(cluster).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(
                        "reading deployments from Redis failed ({e}); using the ones on disk"
                    );
                    self.disk
                        .as_ref()
                        .map(DiskStore::records)
                        .unwrap_or_default()
                }
            },
            None => self
                .disk
                .as_ref()
                .map(DiskStore::records)
                .unwrap_or_default(),
        };
        let mut state = self.state.lock().await;
        for record in records {
            let name = record.name.clone();
            if let Err(e) = self.adopt(&mut state, record).await {
                tracing::warn!(component = %name, "a stored deployment was not applied: {e}");
            }
        }
    }

    async fn cluster_records(
        &self,
        cluster: &ClusterStore,
    ) -> Result<Vec<ComponentRecord>, crate::redis::RedisError> {
        let mut records = Vec::new();
        for name in cluster.names().await? {
            if let Some(record) = cluster.record(&name).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Makes `record` the state of its component here (a restore, or news from the cluster);
    /// `true` when the component changed, `false` when it already was that way.
    async fn adopt(&self, state: &mut State, record: ComponentRecord) -> Result<bool, DeployError> {
        let name = record.name.clone();
        let local = state
            .records
            .get(&name)
            .and_then(|r| r.current.as_ref())
            .map(|d| d.version.clone());
        let remote = record.current.as_ref().map(|d| d.version.clone());
        if local.is_some() && local == remote {
            return Ok(false);
        }
        let prepared = match &record.current {
            Some(deployment) => self.prepare(state, &name, deployment, None).await?,
            None if state.registry.get(&name).is_some() => self.prepare_removal(state, &name),
            None => {
                state.records.insert(name, record);
                return Ok(false);
            }
        };
        self.swap(state, prepared)?;
        if let Some(disk) = &self.disk
            && let Err(e) = disk.put_record(&record)
        {
            tracing::warn!(component = %name, "storing the deployment record on disk failed: {e:#}");
        }
        state.records.insert(name, record);
        Ok(true)
    }

    /// Deploys `bytes` as component `name` with `request`'s settings.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        request: DeploySpec,
    ) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
        check_name(name).map_err(|e| DeployError::Invalid(format!("component name {e}")))?;
        let max = self.base.deploy.max_component_size;
        if bytes.len() as u64 > max.bytes() {
            return Err(DeployError::TooLarge(format!(
                "the component is {} bytes; the limit is {max} ([deploy] max_component_size)",
                bytes.len()
            )));
        }
        // Compiling first (in a child process) proves it is a component at all, and fills
        // the artifact cache.
        self.engine
            .compile(name, &bytes)
            .await
            .map_err(load_failure)?;
        let hash = hex::encode(Sha256::digest(&bytes));

        let mut state = self.state.lock().await;
        let current = self.current_spec(&state, name);
        let spec = current.merged_with(&request);
        let deployed_at_ms = now_ms();
        let deployment = Deployment {
            version: version_id(&hash, &spec, deployed_at_ms),
            hash: hash.clone(),
            deployed_at_ms,
            spec,
            source: None,
        };
        self.store_blob(&hash, &bytes)?;
        let prepared = self
            .prepare(&state, name, &deployment, Some(&bytes))
            .await?;
        let created = state.registry.get(name).is_none();
        let mut record = self.record_of(&state, name);
        let previous = record.current.as_ref().map(|d| d.version.clone());
        record.push(deployment.clone());
        self.commit(&mut state, prepared, record, Some((&hash, &bytes)))
            .await?;
        let report = self.report(&state, name, &deployment, previous, created, started);
        tracing::info!(name = %name, version = %deployment.version, hash = %&hash[..12], elapsed_ms = report.elapsed_ms, "component deployed");
        Ok(report)
    }

    /// Removes component `name` and its triggers.
    pub async fn delete(&self, name: &str) -> Result<(), DeployError> {
        let mut state = self.state.lock().await;
        if state.registry.get(name).is_none() {
            return Err(DeployError::NotFound(format!(
                "no component named {name:?}"
            )));
        }
        let prepared = self.prepare_removal(&state, name);
        let mut record = self.record_of(&state, name);
        if let Some(current) = record.current.take() {
            record.history.push(current);
            if record.history.len() > store::HISTORY {
                record.history.remove(0);
            }
        }
        self.commit(&mut state, prepared, record, None).await?;
        tracing::info!(name = %name, "component deleted");
        Ok(())
    }

    /// Returns component `name` to its previous version: bytes, limits and triggers.
    pub async fn rollback(&self, name: &str) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
        let mut state = self.state.lock().await;
        if state.registry.get(name).is_none() {
            return Err(DeployError::NotFound(format!(
                "no component named {name:?}"
            )));
        }
        let mut record = self.record_of(&state, name);
        let Some(previous) = record.history.pop() else {
            return Err(DeployError::NoPrevious(format!(
                "component `{name}` has no earlier version to roll back to"
            )));
        };
        let prepared = self.prepare(&state, name, &previous, None).await?;
        let from = record.current.as_ref().map(|d| d.version.clone());
        record.current = Some(previous.clone());
        self.commit(&mut state, prepared, record, None).await?;
        tracing::info!(name = %name, version = %previous.version, "component rolled back");
        // The component exists (checked above): a rollback never creates one.
        Ok(self.report(&state, name, &previous, from, false, started))
    }

    /// Every component, by name.
    pub async fn list(&self) -> Vec<ComponentInfo> {
        let state = self.state.lock().await;
        state
            .registry
            .iter()
            .map(|c| {
                let name = c.name();
                let record = state.records.get(name);
                let current = record.and_then(|r| r.current.as_ref());
                let deployed = current.is_some_and(|d| d.source.is_none());
                ComponentInfo {
                    name: name.to_string(),
                    hash: c.content_hash.clone(),
                    version: current.map_or_else(|| "manifest".to_string(), |d| d.version.clone()),
                    origin: if deployed { "deployed" } else { "manifest" },
                    deployed_at_ms: current.filter(|_| deployed).map(|d| d.deployed_at_ms),
                    exports: exports_of(c),
                    triggers: state.app.triggers.summary(name),
                    memory_limit: c.spec.memory_limit.to_string(),
                    timeout: HumanDuration(c.spec.timeout).to_string(),
                    max_instances: c.spec.max_instances,
                    max_resources: c.spec.max_resources,
                    invocations: self.parts.metrics.invocations_of(name),
                    versions: record.map_or(0, |r| r.history.len()) + 1,
                }
            })
            .collect()
    }

    /// Follows the other hosts' deploys until `shutdown`: one subscription (a pub/sub
    /// connection, or a shard channel on a cluster); on every (re)subscription, and whenever
    /// messages may have been missed, every record is read again, so nothing is lost.
    pub async fn watch(&self, shutdown: CancellationToken) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let channel = cluster.channel();
        let inbox = Arc::new(crate::redis::Inbox::default());
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let subscribed = tokio::select! {
                s = cluster.pool().subscribe(&channel, &inbox) => s,
                () = shutdown.cancelled() => return,
            };
            let mut subscription = match subscribed {
                Ok(s) => s,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(
                            "subscribing to deploy notifications failed ({failures}×): {e}"
                        );
                    }
                    let pause = Duration::from_millis(200 * u64::from(failures.min(10)));
                    tokio::select! {
                        () = crate::timers::sleep(pause) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            failures = 0;
            self.sync_all(cluster).await;
            loop {
                let message = tokio::select! {
                    m = subscription.next() => m,
                    () = shutdown.cancelled() => return,
                };
                match message {
                    None => {
                        tracing::warn!("deploy notifications ended; subscribing again");
                        break;
                    }
                    Some(crate::redis::Message::Resync) => self.sync_all(cluster).await,
                    Some(crate::redis::Message::Payload(name))
                        if name == crate::queue::redis::PAUSED_MESSAGE.as_bytes() =>
                    {
                        self.refresh_paused().await
                    }
                    Some(crate::redis::Message::Payload(name))
                        if name == crate::queue::redis::REPEATS_MESSAGE.as_bytes() =>
                    {
                        self.parts.queues.note_repeats_changed()
                    }
                    Some(crate::redis::Message::Payload(name)) => {
                        if let Ok(name) = String::from_utf8(name) {
                            self.sync(cluster, &name).await;
                        }
                    }
                }
            }
        }
    }

    /// Another host paused or resumed a queue (it shares this channel: see
    /// `queue::redis::PAUSED_MESSAGE`).
    async fn refresh_paused(&self) {
        if let Err(e) = self.parts.queues.refresh_paused().await {
            tracing::warn!("reading the paused queues failed: {e}");
        }
    }

    async fn sync_all(&self, cluster: &ClusterStore) {
        self.refresh_paused().await;
        self.parts.queues.note_repeats_changed();
        match cluster.names().await {
            Ok(names) => {
                for name in names {
                    self.sync(cluster, &name).await;
                }
            }
            Err(e) => tracing::warn!("reading the cluster's deployments failed: {e}"),
        }
    }

    async fn sync(&self, cluster: &ClusterStore, name: &str) {
        let record = match cluster.record(name).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(component = name, "reading a deployment record failed: {e}");
                return;
            }
        };
        let version = record
            .current
            .as_ref()
            .map_or("deleted".to_string(), |d| d.version.clone());
        let mut state = self.state.lock().await;
        match self.adopt(&mut state, record).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(name = %name, %version, "component updated from the cluster")
            }
            Err(e) => {
                tracing::warn!(component = name, %version, "a deploy from another host could not be applied here: {e}")
            }
        }
    }

    /// The settings a redeploy starts from: the current version's, or the manifest's.
    fn current_spec(&self, state: &State, name: &str) -> DeploySpec {
        if let Some(d) = state.records.get(name).and_then(|r| r.current.as_ref()) {
            return d.spec.clone();
        }
        match state.app.components.get(name) {
            Some(c) => spec_of(c),
            None => DeploySpec::default(),
        }
    }

    /// The component's record, starting with the manifest's version when it has none yet
    /// (so the first deploy over a manifest component can be rolled back).
    fn record_of(&self, state: &State, name: &str) -> ComponentRecord {
        if let Some(record) = state.records.get(name) {
            return record.clone();
        }
        let mut record = ComponentRecord {
            name: name.to_string(),
            ..Default::default()
        };
        if let (Some(spec), Some(loaded)) =
            (self.base.components.get(name), state.registry.get(name))
        {
            record.current = Some(Deployment {
                version: "manifest".into(),
                hash: loaded.content_hash.clone(),
                deployed_at_ms: 0,
                spec: spec_of(spec),
                source: Some(spec.source.clone()),
            });
        }
        record
    }

    fn store_blob(&self, hash: &str, bytes: &[u8]) -> Result<PathBuf, DeployError> {
        match &self.disk {
            Some(disk) => disk
                .put_blob(hash, bytes)
                .map_err(|e| DeployError::Unavailable(format!("storing the component: {e:#}"))),
            None => {
                let dir = std::env::temp_dir().join("llmchat-blobs");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| DeployError::Unavailable(format!("storing the component: {e}")))?;
                let path = dir.join(format!("{hash}.wasm"));
                std::fs::write(&path, bytes)
                    .map_err(|e| DeployError::Unavailable(format!("storing the component: {e}")))?;
                Ok(path)
            }
        }
    }

    /// Where a version's bytes are: its own file, the blob store, or (fetched now) Redis.
    async fn source_of(
        &self,
        deployment: &Deployment,
        bytes: Option<&[u8]>,
    ) -> Result<PathBuf, DeployError> {
        if let Some(source) = &deployment.source {
            return Ok(source.clone());
        }
        if let Some(bytes) = bytes {
            return self.store_blob(&deployment.hash, bytes);
        }
        if let Some(disk) = &self.disk {
            let path = disk.blob_path(&deployment.hash);
            if path.is_file() {
                return Ok(path);
            }
        }
        let cluster = self.cluster.as_ref().ok_or_else(|| {
            DeployError::Unavailable(format!(
                "the bytes of version {} are gone",
                deployment.version
            ))
        })?;
        let fetched = cluster
            .blob(&deployment.hash)
            .await
            .map_err(|e| DeployError::Unavailable(format!("fetching the component: {e}")))?
            .ok_or_else(|| {
                DeployError::Unavailable(format!("Redis has no bytes for hash {}", deployment.hash))
            })?;
        if hex::encode(Sha256::digest(&fetched)) != deployment.hash {
            return Err(DeployError::Invalid(
                "the bytes fetched from Redis do not match their hash".into(),
            ));
        }
        self.store_blob(&deployment.hash, &fetched)
    }

    /// Checks `deployment` as component `name` against the application now and loads it.
    async fn prepare(
        &self,
        state: &State,
        name: &str,
        deployment: &Deployment,
        bytes: Option<&[u8]>,
    ) -> Result<Prepared, DeployError> {
        let source = self.source_of(deployment, bytes).await?;
        let mut spec = deployment
            .spec
            .component
            .clone()
            .validate_deployed(name, source)
            .map_err(invalid)?;
        // A deployed version of a manifest component keeps the manifest's secrets; no deploy
        // can name a secret of its own.
        if let Some(base) = self.base.components.get(name) {
            spec.secrets = base.secrets.clone();
        }
        if spec.memory_limit.bytes() > self.pool.max_memory {
            return Err(DeployError::Invalid(format!(
                "memory_limit {} is above what this host's pool holds per instance ({} bytes; raise [deploy] max_memory_limit)",
                spec.memory_limit, self.pool.max_memory
            )));
        }
        let mut app = state.app.clone();
        app.components.insert(name.to_string(), spec.clone());
        let mine = match &deployment.spec.triggers {
            Some(triggers) => triggers
                .clone()
                .validate_deployed(name, &app.components)
                .map_err(invalid)?,
            None => self.base.triggers.of_component(name),
        };
        if let Some(clash) = app.triggers.clash(name, &mine) {
            return Err(DeployError::Conflict(clash));
        }
        app.triggers.remove_component(name);
        app.triggers.extend(mine.clone());
        app.triggers.check(&app.components).map_err(invalid)?;
        let instances: u32 = app.components.values().map(|c| c.max_instances).sum();
        if instances > self.pool.instances {
            return Err(DeployError::Invalid(format!(
                "the components would need {instances} instance slots; this host's pool has {} (raise [deploy] reserve_instances or lower max_instances)",
                self.pool.instances
            )));
        }
        self.parts
            .triggers
            .prepare(&mine)
            .await
            .map_err(|e| DeployError::Unavailable(format!("{e:#}")))?;
        let needs = Needs::of(name, &app.triggers);
        let loaded = load_component(&self.engine, &spec, needs)
            .await
            .with_context(|| format!("component `{name}`"))
            .map_err(load_failure)?;
        let registry = state.registry.with(Arc::new(loaded));
        Ok(Prepared { app, registry })
    }

    fn prepare_removal(&self, state: &State, name: &str) -> Prepared {
        let mut app = state.app.clone();
        app.components.remove(name);
        app.triggers.remove_component(name);
        Prepared {
            app,
            registry: state.registry.without(name),
        }
    }

    /// Stores the record on disk and in Redis (telling the other hosts). Redis first: if it
    /// is unreachable the deploy is refused rather than left to this host alone.
    async fn persist(
        &self,
        record: &ComponentRecord,
        blob: Option<(&str, &[u8])>,
    ) -> Result<(), DeployError> {
        if let Some(cluster) = &self.cluster {
            cluster.publish(record, blob).await.map_err(|e| {
                DeployError::Unavailable(format!("storing the deployment in Redis: {e}"))
            })?;
        }
        if let Some(disk) = &self.disk {
            disk.put_record(record)
                .map_err(|e| DeployError::Unavailable(format!("storing the deployment: {e:#}")))?;
        }
        Ok(())
    }

    /// Swaps `prepared` in, then stores `record` (telling the other hosts). A change this host
    /// cannot apply is never stored, so no other host adopts it; if storing fails, the
    /// previous application comes back. Either way the error is answered and nothing is left
    /// changed.
    async fn commit(
        &self,
        state: &mut State,
        prepared: Prepared,
        record: ComponentRecord,
        blob: Option<(&str, &[u8])>,
    ) -> Result<(), DeployError> {
        let previous = self.swap(state, prepared)?;
        if let Err(e) = self.persist(&record, blob).await {
            if let Err(back) = self.swap(state, previous) {
                tracing::error!(component = %record.name, "restoring the application after a failed store failed: {back}");
            }
            return Err(e);
        }
        state.records.insert(record.name.clone(), record);
        Ok(())
    }

    /// Swaps the prepared application in (queues, worker, schedules, routes) and returns the
    /// one it replaced. If a part refuses it, every part goes back to `state`'s application
    /// and the refusal is returned.
    fn swap(&self, state: &mut State, prepared: Prepared) -> Result<Prepared, DeployError> {
        if let Err(e) = self.apply(&prepared) {
            let current = Prepared {
                app: state.app.clone(),
                registry: state.registry.clone(),
            };
            if let Err(back) = self.apply(&current) {
                tracing::error!(
                    "restoring the application after a refused change failed: {back:#}"
                );
            }
            return Err(DeployError::Invalid(format!("{e:#}")));
        }
        Ok(Prepared {
            app: std::mem::replace(&mut state.app, prepared.app),
            registry: std::mem::replace(&mut state.registry, prepared.registry),
        })
    }

    fn apply(&self, prepared: &Prepared) -> anyhow::Result<()> {
        self.parts
            .triggers
            .apply(&prepared.app.triggers, &prepared.registry)
    }

    fn report(
        &self,
        state: &State,
        name: &str,
        deployment: &Deployment,
        previous: Option<String>,
        created: bool,
        started: Instant,
    ) -> DeployReport {
        DeployReport {
            name: name.to_string(),
            hash: deployment.hash.clone(),
            version: deployment.version.clone(),
            deployed_at_ms: deployment.deployed_at_ms,
            exports: state
                .registry
                .get(name)
                .map(|c| exports_of(c))
                .unwrap_or_default(),
            triggers: state.app.triggers.summary(name),
            previous,
            created,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// A short id for one deployment: its bytes, settings and time.
fn version_id(hash: &str, spec: &DeploySpec, at_ms: u64) -> String {
    let mut h = Sha256::new();
    h.update(hash.as_bytes());
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    h.update(at_ms.to_le_bytes());
    hex::encode(h.finalize())[..12].to_string()
}

/// A manifest component's settings as a deploy spec (its triggers stay the manifest's).
fn spec_of(c: &ComponentSpec) -> DeploySpec {
    DeploySpec {
        component: ComponentConfig::of(c),
        triggers: None,
    }
}

fn exports_of(c: &LoadedComponent) -> Vec<&'static str> {
    let mut exports = Vec::new();
    if c.http.is_some() {
        exports.push("http");
    }
    if c.processor.is_some() {
        exports.push("processor");
    }
    if c.monitor.is_some() {
        exports.push("monitor");
    }
    exports
}
