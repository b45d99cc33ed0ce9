//! The HTTP front door: the admin API under `/admin/` (see [`crate::admin`]) and the host's
//! `/metrics`, `/health`, `/ready` and `/dashboard` ([`observability`]), then the component
//! routes of `[[trigger.http]]` ([`crate::triggers::http`]), served by axum/hyper, with a
//! graceful, bounded shutdown.
//!
//! [`HttpServer`] owns every task it starts: connections are drained on shutdown, and
//! connections and invocations still running after the grace period are cut. Its accept
//! loop ([`connections`]) caps connections and times out slow heads and idle keep-alives,
//! over plain HTTP/1.1 (and h2c when asked) or over TLS with HTTP/2 through ALPN ([`tls`],
//! whose certificate a SIGHUP reloads).

mod client_addr;
mod connections;
mod fd_limit;
mod observability;
mod protocol;
mod tls;
mod watch;

pub use tls::Tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminApi;
use crate::capabilities::Services;
use crate::dashboard::Dashboard;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::runtime::ComponentEngine;
use crate::triggers::http::{HttpInvoker, LiveRoutes, dispatch};

pub struct HttpServer {
    invoker: Arc<HttpInvoker>,
    admin: AdminApi,
    observability: Arc<observability::ObservabilityState>,
    shutdown_grace: Duration,
    connections: Arc<connections::Connections>,
    tls: Option<Arc<Tls>>,
}

impl HttpServer {
    /// Serves `routes` (kept current by deploys), the admin API and the host's endpoints;
    /// `/ready` pings the Redis pool of `services`, when Redis is configured. With `tls`
    /// (loaded from `[http] tls` or the command line) it serves HTTPS; `[http] h2c` applies
    /// to plain HTTP only.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one of the host's owners"
    )]
    pub fn new(
        manifest: &Manifest,
        tls: Option<Tls>,
        engine: Arc<ComponentEngine>,
        routes: Arc<LiveRoutes>,
        services: Arc<Services>,
        admin: AdminApi,
        metrics: Arc<Metrics>,
        dashboard: Arc<Dashboard>,
    ) -> Result<Self> {
        let redis = services.redis.clone();
        let invoker = Arc::new(HttpInvoker::new(
            routes.clone(),
            engine,
            services,
            manifest.http.instance_wait.0,
            manifest.http.access_log,
        ));
        let limits = connections::Limits {
            header_read_timeout: manifest.http.header_read_timeout.0,
            idle_timeout: manifest.http.idle_timeout.0,
            max_connections: fd_limit::clamp_to_fd_limit(manifest.http.max_connections),
        };
        let tls = tls.map(Arc::new);
        let transport = match &tls {
            Some(tls) => connections::Transport::Tls(tls.clone()),
            None => connections::Transport::Plain {
                h2c: manifest.http.h2c,
            },
        };
        let connections = Arc::new(connections::Connections::new(
            limits,
            transport,
            metrics.connections().clone(),
            client_addr::TrustedProxies::new(manifest.http.trusted_proxies.clone()),
        ));
        let observability = Arc::new(observability::ObservabilityState {
            redis,
            metrics,
            dashboard,
            routes,
        });
        Ok(Self {
            invoker,
            admin,
            observability,
            shutdown_grace: manifest.http.shutdown_grace.0,
            connections,
            tls,
        })
    }

    /// `https` with TLS, else `http`: for the line saying where the host listens.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `/admin` and everything under it belong to the admin API, and `/metrics`, `/health`
    /// and `/ready` to the host's observability endpoints, so no component route can shadow them or see their
    /// requests; every other path goes to the component routes.
    fn router(&self) -> Router {
        crate::admin::router(self.admin.clone())
            .merge(observability::router(self.observability.clone()))
            .fallback(dispatch)
            .with_state(self.invoker.clone())
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
        let tasks = self.invoker.tasks().clone();
        let drain = async {
            connections
                .accept(listener, self.router(), &shutdown, &cut)
                .await;
            connections.closed().await;
            tasks.close();
            tasks.wait().await;
        };
        // Certificate reloads run while the server does, and end with it.
        let reload = async {
            if let Some(tls) = &self.tls {
                tls.reload_on_hangup(&shutdown).await;
            }
        };
        let serve = async {
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
        };
        tokio::join!(serve, reload);
        Ok(())
    }
}
