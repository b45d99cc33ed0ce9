//! The HTTP front door: the admin API under `/admin/` (see [`crate::admin`]) and the host's
//! `/metrics`, `/health`, `/ready` and `/dashboard` ([`observability`]), then the component routes of
//! `[[trigger.http]]`, served by axum/hyper, with a graceful, bounded shutdown.
//!
//! [`HttpServer`] owns every task it starts: connections are drained on shutdown, and
//! connections and invocations still running after the grace period are cut. Its accept
//! loop ([`connections`]) caps connections and times out slow heads and idle keep-alives.

mod connections;
mod cut;
mod error;
mod observability;
mod routes;
mod trigger;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiError;
use routes::RouteTable;
pub(crate) use trigger::read_body;

use crate::admin::AdminApi;
use crate::capabilities::Services;
use crate::dashboard::Dashboard;
use crate::runtime::ComponentEngine;
use crate::limits::RateLimiter;
use crate::manifest::{HttpTrigger, Manifest};
use crate::metrics::{Metrics, Trigger};
use crate::registry::Registry;

/// The route table the requests see now, swapped whole by a deploy: a request takes the
/// table once, so it is served entirely by one version, and the versions it holds live
/// until it ends.
pub struct LiveRoutes {
    table: RwLock<Arc<RouteTable>>,
    /// Components loaded, for `/ready`.
    components: AtomicUsize,
    /// Where the routes' rate limits keep their state.
    limiter: Arc<dyn RateLimiter>,
}

impl LiveRoutes {
    /// No routes yet; `limiter` keeps the state of the routes' rate limits.
    pub fn new(limiter: Arc<dyn RateLimiter>) -> Self {
        Self {
            table: RwLock::default(),
            components: AtomicUsize::new(0),
            limiter,
        }
    }

    pub(crate) fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// Builds the table for `triggers` from the components of `registry` and swaps it in.
    ///
    /// No trigger is on one of the host's own paths: an [`HttpTrigger`] is only made by the
    /// manifest's checks (for the manifest and for a deploy alike), which refuse those, and
    /// the host's endpoints serve exactly [`crate::manifest::OBSERVABILITY_PATHS`].
    pub fn set(
        &self,
        triggers: &[HttpTrigger],
        registry: &Registry,
        metrics: &Metrics,
    ) -> Result<()> {
        let mut routes = RouteTable::default();
        for t in triggers {
            let component = registry.get(&t.component).with_context(|| {
                format!(
                    "route {:?} names unknown component `{}`",
                    t.route, t.component
                )
            })?;
            if component.http.is_none() {
                bail!(
                    "route {:?}: component `{}` does not export `wasi:http/incoming-handler`",
                    t.route,
                    t.component
                );
            }
            routes.add(
                &t.route,
                &t.methods,
                component.clone(),
                metrics.component(component.name(), Trigger::Http),
                t.max_body_size.bytes(),
                routes::RouteLimit::from_trigger(t),
            );
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
        self.components.store(registry.len(), Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn components(&self) -> usize {
        self.components.load(Ordering::Relaxed)
    }
}

/// What every request handler shares.
pub struct AppState {
    routes: Arc<LiveRoutes>,
    engine: Arc<ComponentEngine>,
    services: Arc<Services>,
    instance_wait: Duration,
    /// Invocations still running, possibly after their response head was sent.
    tasks: TaskTracker,
}

pub struct HttpServer {
    state: Arc<AppState>,
    admin: AdminApi,
    observability: Arc<observability::ObservabilityState>,
    shutdown_grace: Duration,
    connections: Arc<connections::Connections>,
}

impl HttpServer {
    /// Serves `routes` (kept current by deploys), the admin API and the host's endpoints;
    /// `/ready` pings the Redis pool of `services`, when Redis is configured.
    pub fn new(
        manifest: &Manifest,
        engine: Arc<ComponentEngine>,
        routes: Arc<LiveRoutes>,
        services: Arc<Services>,
        admin: AdminApi,
        metrics: Arc<Metrics>,
        dashboard: Arc<Dashboard>,
    ) -> Result<Self> {
        let redis = services.redis.clone();
        let state = Arc::new(AppState {
            routes: routes.clone(),
            engine,
            services,
            instance_wait: manifest.http.instance_wait.0,
            tasks: TaskTracker::new(),
        });
        let limits = connections::Limits {
            header_read_timeout: manifest.http.header_read_timeout.0,
            idle_timeout: manifest.http.idle_timeout.0,
            max_connections: connections::clamp_to_fd_limit(manifest.http.max_connections),
        };
        let connections = Arc::new(connections::Connections::new(
            limits,
            metrics.connections().clone(),
        ));
        let observability = Arc::new(observability::ObservabilityState {
            redis,
            metrics,
            dashboard,
            routes,
        });
        Ok(Self {
            state,
            admin,
            observability,
            shutdown_grace: manifest.http.shutdown_grace.0,
            connections,
        })
    }

    /// `/admin` and everything under it belong to the admin API, and `/metrics`, `/health`
    /// and `/ready` to the host's observability endpoints, so no component route can shadow them or see their
    /// requests; every other path goes to the component routes.
    fn router(&self) -> Router {
        crate::admin::router(self.admin.clone())
            .merge(observability::router(self.observability.clone()))
            .fallback(trigger::dispatch)
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// and invocations finish within the grace period, cuts what is left, and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let cut = CancellationToken::new();
        let connections = self.connections.clone();
        let grace = self.shutdown_grace;
        let deadline = async {
            shutdown.cancelled().await;
            crate::timers::sleep(grace).await;
        };
        let tasks = self.state.tasks.clone();
        let drain = async {
            connections
                .accept(listener, self.router(), &shutdown, &cut)
                .await;
            connections.closed().await;
            tasks.close();
            tasks.wait().await;
        };
        tokio::select! {
            () = drain => {}
            () = deadline => {
                tracing::warn!(
                    connections = connections.open(),
                    running = tasks.len(),
                    "shutdown grace of {grace:?} expired; cutting open connections and invocations"
                );
                cut.cancel();
                connections.closed().await;
            }
        }
        Ok(())
    }
}
