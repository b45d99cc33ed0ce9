//! The accept loop of [`super::HttpServer`] and one task per connection, enforcing the
//! connection limits of `[http]`.
//!
//! `axum::serve` neither caps connections nor times out a client that connects and sends
//! half a request head (3,000 such connections were all still open 35 s later), hence this
//! loop on hyper directly:
//! - `max_connections`: a connection over the cap is accepted, answered `503` and closed at
//!   once. Leaving it in the kernel's backlog instead would make clients (health checks
//!   included) wait with no answer and, once the backlog is full, have their SYNs dropped.
//!   The cap is clamped to what the open-file limit allows ([`super::fd_limit`]).
//! - `header_read_timeout` and `idle_timeout`: a [`Watch`] per connection (see
//!   [`super::watch`] for why not hyper's own).
//!
//! The same limits hold for HTTPS ([`super::tls`]) and HTTP/2 ([`super::protocol`]):
//! - The handshake is part of the first head: a client that connects and never finishes its
//!   TLS handshake is closed at `header_read_timeout`, like one that never sends a request.
//! - Over `max_connections`, a TLS connection is closed before its handshake, without the
//!   `503`: a plaintext answer means nothing to a TLS client, and a handshake is the costly
//!   part under overload.
//! - An HTTP/2 connection is idle when none of its streams is busy; bytes arriving then (pings,
//!   window updates) do not start a head, since they are not one. `header_read_timeout` covers
//!   a connection's first request (handshake, preface, first `HEADERS`); later heads are
//!   bounded by hyper's HTTP/2 limits.
//! - hyper runs each HTTP/2 stream as a task of its own; they are in a second tracker that
//!   the server waits on too, and are cut with the connections.
//!
//! Each limit is logged once, the first time it acts; `llmchat_http_connections_refused_total`
//! counts every time. Every connection task is in a [`TaskTracker`] that the server waits on
//! at shutdown, and ends when the server cuts what is left after the grace period.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{ConnectionLimit, ConnectionMetrics};

use super::client_addr::TrustedProxies;
use super::protocol::{
    Ended, StreamExecutor, auto_builder, drive, host_from_authority, http1_builder,
};
use super::tls::{self, Tls};
use super::watch::{Busy, Tracked, Watch, Watched};

/// What a connection over `max_connections` reads before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 32\r\n\
retry-after: 1\r\n\
connection: close\r\n\r\n\
{\"error\":\"too many connections\"}";

/// The connection limits of `[http]`, `max_connections` clamped to the open-file limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// What the listener speaks.
pub(super) enum Transport {
    /// HTTP/1.1; with `h2c`, also HTTP/2 with prior knowledge, told apart by its preface.
    Plain { h2c: bool },
    /// TLS, then HTTP/2 or HTTP/1.1 as chosen through ALPN.
    Tls(Arc<Tls>),
}

/// The open connections: their tasks, limits and counts.
pub(super) struct Connections {
    limits: Limits,
    transport: Transport,
    metrics: ConnectionMetrics,
    /// Whether each limit (by position in [`ConnectionLimit::ALL`]) has been logged.
    logged: [AtomicBool; 3],
    /// One task per connection: its length is the number of open connections.
    tasks: TaskTracker,
    /// The HTTP/2 streams that hyper spawns, one task per request.
    streams: TaskTracker,
    /// Who may name the client in a forwarded header.
    trusted: Arc<TrustedProxies>,
}

impl Connections {
    pub fn new(
        limits: Limits,
        transport: Transport,
        metrics: ConnectionMetrics,
        trusted: TrustedProxies,
    ) -> Self {
        Self {
            limits,
            transport,
            metrics,
            logged: Default::default(),
            tasks: TaskTracker::new(),
            streams: TaskTracker::new(),
            trusted: Arc::new(trusted),
        }
    }

    /// Accepts connections and serves `router` on them until `shutdown`; then stops
    /// accepting (the listener is dropped) and asks every connection to end after its
    /// current request. Connections still open when `cut` is cancelled are dropped.
    pub async fn accept(
        self: &Arc<Self>,
        listener: TcpListener,
        router: Router,
        shutdown: &CancellationToken,
        cut: &CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.accept_failed(e, shutdown).await;
                    continue;
                }
            };
            if self.tasks.len() >= self.limits.max_connections {
                // Best effort: the new socket's send buffer is empty, so this never blocks;
                // a client that had already sent its request may see a reset instead. A TLS
                // client is only closed (see the module's doc).
                if matches!(self.transport, Transport::Plain { .. }) {
                    let _ = stream.try_write(REFUSED);
                }
                drop(stream);
                self.limited(ConnectionLimit::MaxConnections);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            self.tasks.spawn(this.serve(
                stream,
                peer,
                router.clone(),
                shutdown.clone(),
                cut.clone(),
            ));
        }
        self.tasks.close();
    }

    /// Resolves once every connection has ended; call it when `accept` has returned or
    /// will never be polled again.
    pub async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        // No connection is left to spawn a stream.
        self.streams.close();
        self.streams.wait().await;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.tasks.len()
    }

    /// Out of file descriptors or memory: what `axum::serve` does, pause rather than spin.
    async fn accept_failed(&self, e: io::Error, shutdown: &CancellationToken) {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        tracing::error!(
            open = self.open(),
            "accepting a connection failed: {e}; pausing accepts for 1s"
        );
        tokio::select! {
            () = crate::timers::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => {}
        }
    }

    /// Serves one connection until it ends, one of its timeouts expires, or `cut`.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        router: Router,
        shutdown: CancellationToken,
        cut: CancellationToken,
    ) {
        let _open = self.metrics.opened();
        let watch = Arc::new(Watch::new());
        let io = Watched::new(stream, watch.clone());
        let router = TowerToHyperService::new(router);
        let service = hyper::service::service_fn({
            let watch = watch.clone();
            let trusted = self.trusted.clone();
            move |mut request: http::Request<Incoming>| {
                // The client's address (the peer's, or the one a trusted proxy forwarded) is
                // what rate limits, the access log and the admin API's loopback rule see.
                let client = trusted.client(peer, request.headers());
                request.extensions_mut().insert(ConnectInfo(client));
                if request.version() == http::Version::HTTP_2 {
                    watch.multiplexed();
                    host_from_authority(&mut request);
                }
                let busy = Busy::start(watch.clone());
                let response = hyper::service::Service::call(&router, request);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
                }
            }
        });
        let expired = watch.expired(self.limits.header_read_timeout, self.limits.idle_timeout);
        let mut expired = pin!(expired);
        let ended = match &self.transport {
            Transport::Plain { h2c: false } => {
                let connection = http1_builder()
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                drive(pin!(connection), expired, &shutdown, &cut, |c| {
                    c.graceful_shutdown();
                })
                .await
            }
            Transport::Plain { h2c: true } => {
                let builder = auto_builder(self.executor(&cut));
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                drive(pin!(connection), expired, &shutdown, &cut, |c| {
                    c.graceful_shutdown();
                })
                .await
            }
            Transport::Tls(tls) => {
                // Before the handshake there is no request to drain: shutdown ends it.
                let handshake = tokio::select! {
                    handshake = tls.accept(io) => {
                        handshake.map_err(|e| Ended::Failed(format!("TLS handshake: {e}")))
                    }
                    limit = expired.as_mut() => Err(Ended::Limit(limit)),
                    () = shutdown.cancelled() => Err(Ended::Closed),
                    () = cut.cancelled() => Err(Ended::Closed),
                };
                match handshake {
                    Err(ended) => ended,
                    Ok(stream) if tls::negotiated_h2(&stream) => {
                        let builder = auto_builder(self.executor(&cut)).http2_only();
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        drive(pin!(connection), expired, &shutdown, &cut, |c| {
                            c.graceful_shutdown();
                        })
                        .await
                    }
                    Ok(stream) => {
                        let connection = http1_builder()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades();
                        drive(pin!(connection), expired, &shutdown, &cut, |c| {
                            c.graceful_shutdown();
                        })
                        .await
                    }
                }
            }
        };
        match ended {
            Ended::Closed => {}
            Ended::Failed(e) => tracing::debug!(%peer, "connection ended: {e}"),
            Ended::Limit(limit) => self.limited(limit),
        }
    }

    /// Where the HTTP/2 streams of a connection run.
    fn executor(&self, cut: &CancellationToken) -> StreamExecutor {
        StreamExecutor {
            streams: self.streams.clone(),
            cut: cut.clone(),
        }
    }

    /// Counts what `limit` did, and logs it the first time.
    fn limited(&self, limit: ConnectionLimit) {
        self.metrics.refused(limit);
        if self.logged[limit as usize].swap(true, Ordering::Relaxed) {
            return;
        }
        let then = "logged once; llmchat_http_connections_refused_total counts every one";
        match limit {
            ConnectionLimit::MaxConnections => tracing::warn!(
                "{} connections are open, [http] max_connections: refusing new ones with 503 \
                 until some close ({then})",
                self.limits.max_connections
            ),
            ConnectionLimit::HeaderReadTimeout => tracing::warn!(
                "a client sent no complete request head within [http] header_read_timeout \
                 ({:?}); closed its connection ({then})",
                self.limits.header_read_timeout
            ),
            ConnectionLimit::IdleTimeout => tracing::info!(
                "a keep-alive connection was idle for [http] idle_timeout ({:?}); closed it \
                 ({then})",
                self.limits.idle_timeout
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too many connections");
    }
}
