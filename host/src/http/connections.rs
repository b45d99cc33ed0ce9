//! The accept loop of [`super::HttpServer`] and one driver per connection, enforcing the
//! connection limits of `[http]`.
//!
//! `axum::serve` neither caps connections nor times out a client that connects and sends
//! half a request head (3,000 such connections were all still open 35 s later), hence this
//! loop on hyper directly:
//! - `max_connections`: a connection over the cap is accepted, answered `503` and closed at
//!   once. Leaving it in the kernel's backlog instead would make clients (health checks
//!   included) wait with no answer and, once the backlog is full, have their SYNs dropped.
//!   The cap is clamped to what the open-file limit allows ([`clamp_to_fd_limit`]).
//! - `header_read_timeout` and `idle_timeout`: a [`Watch`] per connection. hyper's own
//!   `header_read_timeout` cannot be both: its timer also runs while hyper waits for the next
//!   head of a keep-alive connection (hyper 1.x, `proto/h1/conn.rs`: `State::idle` sets
//!   `notify_read`, and `poll_read_head` starts the timer), so idle connections would be closed
//!   after the short header timeout. The watch knows the phase instead: reading a head (from
//!   accept, or from the first byte of a later request), serving (no limit here: a streamed
//!   response lasts as long as it lasts) or idle (from the end of the last response body).
//!
//! Each limit is logged once, the first time it acts; `llmchat_http_connections_refused_total`
//! counts every time. Every connection task is in a [`TaskTracker`] that the server waits on
//! at shutdown, and ends when the server cuts what is left after the grace period.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{ConnectionLimit, ConnectionMetrics};

use super::client_addr::TrustedProxies;

/// File descriptors kept for everything but client connections: the listener, Redis,
/// outbound HTTP, component files, the artifact cache, stdio.
const RESERVED_FDS: u64 = 256;

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

/// The open connections: their tasks, limits and counts.
pub(super) struct Connections {
    limits: Limits,
    metrics: ConnectionMetrics,
    /// Whether each limit (by position in [`ConnectionLimit::ALL`]) has been logged.
    logged: [AtomicBool; 3],
    tasks: TaskTracker,
    /// Who may name the client in a forwarded header.
    trusted: Arc<TrustedProxies>,
}

impl Connections {
    pub fn new(limits: Limits, metrics: ConnectionMetrics, trusted: TrustedProxies) -> Self {
        Self {
            limits,
            metrics,
            logged: Default::default(),
            tasks: TaskTracker::new(),
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
                // a client that had already sent its request may see a reset instead.
                let _ = stream.try_write(REFUSED);
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
        let io = TokioIo::new(Watched {
            io: stream,
            watch: watch.clone(),
        });
        let router = TowerToHyperService::new(router);
        let service = hyper::service::service_fn({
            let watch = watch.clone();
            let trusted = self.trusted.clone();
            move |mut request: http::Request<Incoming>| {
                // The client's address (the peer's, or the one a trusted proxy forwarded) is
                // what rate limits, the access log and the admin API's loopback rule see.
                let client = trusted.client(peer, request.headers());
                request.extensions_mut().insert(ConnectInfo(client));
                let busy = Busy::start(watch.clone());
                let response = hyper::service::Service::call(&router, request);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
                }
            }
        });
        let connection = http1::Builder::new()
            // The watch times heads out; hyper would time idle keep-alive waits out too.
            .header_read_timeout(None)
            .serve_connection(io, service)
            .with_upgrades();
        let mut connection = pin!(connection);
        let mut expired = pin!(watch.expired(self.limits));
        let mut draining = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    return;
                }
                limit = expired.as_mut() => {
                    self.limited(limit);
                    return;
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = cut.cancelled() => return,
            }
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

/// What a connection is doing, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Reading a request head since then: from accept, or from the first byte after idle.
    Head(Instant),
    /// Serving this many requests: from a parsed head until its response body is done.
    Busy(u32),
    /// Between requests since then, nothing read yet.
    Idle(Instant),
}

/// The phase of one connection, moved by its IO ([`Watched`]) and its requests ([`Busy`]),
/// watched by [`Watch::expired`].
struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Watch {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let new = next(*phase);
        if new != *phase {
            *phase = new;
            drop(phase);
            self.changed.notify_waiters();
        }
    }

    /// Bytes arrived: after idle, they start the next request head.
    fn bytes_read(&self) {
        self.update(|phase| match phase {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    /// Resolves with the limit that expired: the head took longer than
    /// `header_read_timeout`, or the connection sat idle for `idle_timeout`. Holds one timer
    /// while reading a head or idle, none while serving.
    async fn expired(&self, limits: Limits) -> ConnectionLimit {
        loop {
            // Created before the phase is read, so no change can slip in between.
            let changed = self.changed.notified();
            let (deadline, limit) = match self.phase() {
                Phase::Head(since) => (
                    since + limits.header_read_timeout,
                    ConnectionLimit::HeaderReadTimeout,
                ),
                Phase::Idle(since) => (since + limits.idle_timeout, ConnectionLimit::IdleTimeout),
                Phase::Busy(_) => {
                    changed.await;
                    continue;
                }
            };
            if deadline <= Instant::now() {
                return limit;
            }
            tokio::select! {
                () = crate::timers::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// One request being served, from its parsed head until its response body is done (or
/// dropped); the connection is idle when none is.
struct Busy(Arc<Watch>);

impl Busy {
    fn start(watch: Arc<Watch>) -> Self {
        watch.update(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        });
        Self(watch)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request [`Busy`] until hyper has sent it all.
    struct Tracked {
        #[pin]
        body: Body,
        _busy: Busy,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, telling its [`Watch`] when bytes arrive.
struct Watched {
    io: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `max_connections`, clamped (with a warning) so that connections cannot use up the
/// open-file limit. A soft limit below what they need is first raised to the hard limit: the
/// usual soft default, 1,024, dates from `select(2)`; the hard limit is what the
/// administrator allows.
pub(super) fn clamp_to_fd_limit(max_connections: u32) -> usize {
    let wanted = u64::from(max_connections);
    let Some(limit) = raise_fd_limit(wanted + RESERVED_FDS) else {
        return usize::try_from(wanted).unwrap_or(usize::MAX);
    };
    let allowed = limit.saturating_sub(RESERVED_FDS).max(1);
    if wanted > allowed {
        tracing::warn!(
            "[http] max_connections {wanted} does not fit the open-file limit {limit} (less \
             {RESERVED_FDS} kept for the host); serving at most {allowed} connections"
        );
    }
    usize::try_from(wanted.min(allowed)).unwrap_or(usize::MAX)
}

/// The soft `RLIMIT_NOFILE` after raising it towards the hard limit when it is below
/// `needed`; `None` when it cannot be read.
#[cfg(target_os = "linux")]
#[expect(unsafe_code, reason = "getrlimit and setrlimit are C functions")]
fn raise_fd_limit(needed: u64) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur >= needed || limit.rlim_cur >= limit.rlim_max {
        return Some(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = io::Error::last_os_error();
        tracing::warn!(
            "raising the open-file limit from {} to {}: {e}",
            limit.rlim_cur,
            limit.rlim_max
        );
        return Some(limit.rlim_cur);
    }
    tracing::info!(
        "raised the open-file limit from {} to {} for [http] max_connections",
        limit.rlim_cur,
        limit.rlim_max
    );
    Some(limit.rlim_max)
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit(_needed: u64) -> Option<u64> {
    None
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

    /// Paused time jumps to the timer's deadline, rounded to the timer wheel's millisecond.
    fn assert_near(elapsed: Duration, expected: Duration) {
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(5),
            "{elapsed:?}, expected {expected:?}"
        );
    }

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            max_connections: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_completes_expires_after_the_header_timeout() {
        let watch = Watch::new();
        let started = Instant::now();
        assert_eq!(
            watch.expired(limits()).await,
            ConnectionLimit::HeaderReadTimeout
        );
        assert_near(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn serving_has_no_deadline_and_idle_then_gets_the_idle_timeout() {
        let watch = Arc::new(Watch::new());
        let busy = Busy::start(watch.clone());
        let expired = watch.expired(limits());
        let mut expired = pin!(expired);
        // A response streaming for a minute is not cut.
        tokio::select! {
            limit = expired.as_mut() => panic!("expired while serving: {limit:?}"),
            () = crate::timers::sleep(Duration::from_secs(60)) => {}
        }
        let idle = Instant::now();
        drop(busy);
        assert_eq!(expired.await, ConnectionLimit::IdleTimeout);
        assert_near(idle.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_after_idle_starts_the_header_timeout() {
        let watch = Arc::new(Watch::new());
        drop(Busy::start(watch.clone()));
        let expired = watch.expired(limits());
        let mut expired = pin!(expired);
        tokio::select! {
            limit = expired.as_mut() => panic!("expired while idle: {limit:?}"),
            () = crate::timers::sleep(Duration::from_secs(4)) => {}
        }
        let head = Instant::now();
        watch.bytes_read();
        assert_eq!(expired.await, ConnectionLimit::HeaderReadTimeout);
        assert_near(head.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(clamp_to_fd_limit(10), 10);
        let huge = clamp_to_fd_limit(u32::MAX);
        assert!(huge >= 1 && huge < u32::MAX as usize, "{huge}");
    }
}
