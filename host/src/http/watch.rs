//! The phase of one connection (reading a head, serving, idle) and the IO and body wrappers
//! that move it, for the `header_read_timeout` and `idle_timeout` of [`super::connections`].
//!
//! hyper's own `header_read_timeout` cannot be both: its timer also runs while hyper waits for
//! the next head of a keep-alive connection (hyper 1.x, `proto/h1/conn.rs`: `State::idle` sets
//! `notify_read`, and `poll_read_head` starts the timer), so idle connections would be closed
//! after the short header timeout. A [`Watch`] knows the phase instead: reading a head (from
//! accept, or from the first byte of a later request), serving (no limit: a streamed response
//! lasts as long as it lasts) or idle (from the end of the last response body).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::ConnectionLimit;

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
pub(super) struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
    /// HTTP/2: bytes between requests are control frames, not the start of a head.
    multiplexed: AtomicBool,
}

impl Watch {
    pub fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
            multiplexed: AtomicBool::new(false),
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

    /// The connection speaks HTTP/2: from now on only requests end its idle time.
    pub fn multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    /// Bytes arrived: after idle, they start the next request head (HTTP/1.1 only).
    fn bytes_read(&self) {
        if self.multiplexed.load(Ordering::Relaxed) {
            return;
        }
        self.update(|phase| match phase {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    /// Resolves with the limit that expired: the head took longer than
    /// `header_read_timeout`, or the connection sat idle for `idle_timeout`. Holds one timer
    /// while reading a head or idle, none while serving.
    pub async fn expired(
        &self,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> ConnectionLimit {
        loop {
            // Created before the phase is read, so no change can slip in between.
            let changed = self.changed.notified();
            let (deadline, limit) = match self.phase() {
                Phase::Head(since) => (
                    since + header_read_timeout,
                    ConnectionLimit::HeaderReadTimeout,
                ),
                Phase::Idle(since) => (since + idle_timeout, ConnectionLimit::IdleTimeout),
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
pub(super) struct Busy(Arc<Watch>);

impl Busy {
    pub fn start(watch: Arc<Watch>) -> Self {
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
    pub(super) struct Tracked {
        #[pin]
        body: Body,
        _busy: Busy,
    }
}

impl Tracked {
    pub fn new(body: Body, busy: Busy) -> Self {
        Self { body, _busy: busy }
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
pub(super) struct Watched {
    io: TcpStream,
    watch: Arc<Watch>,
}

impl Watched {
    pub fn new(io: TcpStream, watch: Arc<Watch>) -> Self {
        Self { io, watch }
    }
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

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    const HEAD: Duration = Duration::from_secs(2);
    const IDLE: Duration = Duration::from_secs(5);

    /// Paused time jumps to the timer's deadline, rounded to the timer wheel's millisecond.
    fn assert_near(elapsed: Duration, expected: Duration) {
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(5),
            "{elapsed:?}, expected {expected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_completes_expires_after_the_header_timeout() {
        let watch = Watch::new();
        let started = Instant::now();
        assert_eq!(
            watch.expired(HEAD, IDLE).await,
            ConnectionLimit::HeaderReadTimeout
        );
        assert_near(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn serving_has_no_deadline_and_idle_then_gets_the_idle_timeout() {
        let watch = Arc::new(Watch::new());
        let busy = Busy::start(watch.clone());
        let expired = watch.expired(HEAD, IDLE);
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
        let expired = watch.expired(HEAD, IDLE);
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

    #[tokio::test(start_paused = true)]
    async fn on_http2_bytes_between_requests_leave_the_connection_idle() {
        let watch = Arc::new(Watch::new());
        watch.multiplexed();
        drop(Busy::start(watch.clone()));
        let idle = Instant::now();
        let expired = watch.expired(HEAD, IDLE);
        let mut expired = pin!(expired);
        tokio::select! {
            limit = expired.as_mut() => panic!("expired while idle: {limit:?}"),
            () = crate::timers::sleep(Duration::from_secs(1)) => {}
        }
        // A ping or a window update: not a head.
        watch.bytes_read();
        assert_eq!(expired.await, ConnectionLimit::IdleTimeout);
        assert_near(idle.elapsed(), Duration::from_secs(5));
    }
}
