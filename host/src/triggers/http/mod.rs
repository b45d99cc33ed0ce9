//! The HTTP trigger: `[[trigger.http]]` routes, each request served by one fresh instance of
//! a `wasi:http` component ([`handler`]). [`LiveRoutes`] is the route table deploys swap;
//! [`HttpInvoker`] is what the handler needs to invoke, and [`dispatch`] the axum handler
//! that the server ([`crate::http::HttpServer`]) mounts behind its own endpoints.
//! [`ApiError`] and [`read_body`] are shared with the admin API.

mod cut;
mod error;
mod handler;
mod inline;
pub mod job_events;
mod observed;
mod routes;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_util::task::TaskTracker;

pub use error::ApiError;
pub use handler::dispatch;
pub(crate) use handler::read_body;
use routes::RouteTable;

use crate::capabilities::Services;
use crate::limits::RateLimiter;
use crate::manifest::HttpTrigger;
use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::runtime::ComponentEngine;
use crate::triggers::Trigger;

/// The route table the requests see now, swapped whole by a deploy: a request takes the
/// table once, so it is served entirely by one version, and the versions it holds live
/// until it ends.
pub struct LiveRoutes {
    table: RwLock<Arc<RouteTable>>,
    /// Components loaded, for `/ready`.
    components: AtomicUsize,
    /// Where the routes' rate limits keep their state.
    limiter: Arc<dyn RateLimiter>,
    /// Where each route's invocations are counted.
    metrics: Arc<Metrics>,
    /// Where requests no route matched are counted.
    unmatched: Arc<metrics::RouteHttpMetrics>,
}

impl LiveRoutes {
    /// No routes yet; `limiter` keeps the state of the routes' rate limits, `metrics`
    /// counts their invocations.
    pub fn new(limiter: Arc<dyn RateLimiter>, metrics: Arc<Metrics>) -> Self {
        Self {
            table: RwLock::default(),
            components: AtomicUsize::new(0),
            limiter,
            unmatched: Arc::new(metrics.http_route(metrics::UNMATCHED)),
            metrics,
        }
    }

    /// The request metrics of requests no route matched (404, 405).
    pub(crate) fn unmatched(&self) -> &Arc<metrics::RouteHttpMetrics> {
        &self.unmatched
    }

    pub(crate) fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    pub(crate) fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn components(&self) -> usize {
        self.components.load(Ordering::Relaxed)
    }
}

impl Trigger for LiveRoutes {
    type Kind = HttpTrigger;

    /// Builds the table for `triggers` from the components of `registry` and swaps it in.
    ///
    /// No trigger is on one of the host's own paths: an [`HttpTrigger`] is only made by the
    /// manifest's checks (for the manifest and for a deploy alike), which refuse those, and
    /// the host's endpoints serve exactly [`crate::manifest::OBSERVABILITY_PATHS`].
    fn apply(&self, triggers: &[HttpTrigger], registry: &Registry) -> Result<()> {
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
                t,
                component.clone(),
                self.metrics
                    .component(component.name(), metrics::Trigger::Http),
                Arc::new(self.metrics.http_route(&t.route)),
            );
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
        self.components.store(registry.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// What the handler needs to invoke a route's component, shared by every request.
pub struct HttpInvoker {
    routes: Arc<LiveRoutes>,
    engine: Arc<ComponentEngine>,
    services: Arc<Services>,
    /// How long a request waits for a free instance before a 503.
    instance_wait: Duration,
    /// Invocations still running, possibly after their response head was sent.
    tasks: TaskTracker,
    /// Whether each request is logged (`[http] access_log`).
    access_log: bool,
}

impl HttpInvoker {
    pub fn new(
        routes: Arc<LiveRoutes>,
        engine: Arc<ComponentEngine>,
        services: Arc<Services>,
        instance_wait: Duration,
        access_log: bool,
    ) -> Self {
        Self {
            routes,
            engine,
            services,
            instance_wait,
            tasks: TaskTracker::new(),
            access_log,
        }
    }

    /// The invocations still running, which the server waits for (then cuts) at shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}
