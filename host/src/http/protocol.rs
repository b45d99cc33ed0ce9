//! How a connection is spoken once accepted (and, for HTTPS, after its handshake): HTTP/1.1,
//! HTTP/2, or both on one port (h2c), each driven by [`drive`] until it ends, times out, or
//! the server drains or cuts it.
//!
//! HTTP/1.1 alone goes through hyper's `http1` builder, as before HTTP/2 existed here, so a
//! plain listener without h2c pays nothing for it. HTTP/2 and h2c go through hyper-util's
//! `auto` builder, whose streams run on a [`StreamExecutor`].

use std::fmt::Display;
use std::pin::Pin;

use hyper::server::conn::http1;
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ConnectionLimit;

/// How a connection ended.
pub(super) enum Ended {
    /// The client or the server closed it, or shutdown or `cut` ended it.
    Closed,
    /// An error ended it: logged at debug, clients vanish mid-request all the time.
    Failed(String),
    /// One of the watch's timeouts.
    Limit(ConnectionLimit),
}

/// Polls `connection` until it ends, `expired` resolves or `cut`; on `shutdown`, asks it to
/// end after its current requests (`drain`) and goes on polling.
pub(super) async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    mut expired: Pin<&mut impl Future<Output = ConnectionLimit>>,
    shutdown: &CancellationToken,
    cut: &CancellationToken,
    drain: impl Fn(Pin<&mut C>),
) -> Ended
where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut draining = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                return match ended {
                    Ok(()) => Ended::Closed,
                    Err(e) => Ended::Failed(e.to_string()),
                };
            }
            limit = expired.as_mut() => return Ended::Limit(limit),
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                drain(connection.as_mut());
            }
            () = cut.cancelled() => return Ended::Closed,
        }
    }
}

/// HTTP/1.1 as the host serves it.
pub(super) fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    // The watch times heads out; hyper would time idle keep-alive waits out too.
    builder.header_read_timeout(None);
    builder
}

/// HTTP/2 carries the host in `:authority` (the URI), HTTP/1.1 in `Host`. What reads `Host`
/// (the admin API's DNS-rebinding and same-origin rule, the components) sees it for both.
pub(super) fn host_from_authority<B>(request: &mut http::Request<B>) {
    if request.headers().contains_key(http::header::HOST) {
        return;
    }
    let Some(authority) = request.uri().authority() else {
        return;
    };
    let host = authority.as_str().rsplit('@').next().unwrap_or_default();
    if let Ok(value) = http::HeaderValue::from_str(host) {
        request.headers_mut().insert(http::header::HOST, value);
    }
}

/// Runs hyper's HTTP/2 streams (one task per request) as tasks of `streams`, which the server
/// waits on at shutdown; `cut` ends them with the connections.
#[derive(Clone)]
pub(super) struct StreamExecutor {
    pub streams: TaskTracker,
    pub cut: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let cut = self.cut.clone();
        self.streams.spawn(async move {
            tokio::select! {
                _ = future => {}
                () = cut.cancelled() => {}
            }
        });
    }
}

/// HTTP/2, and for h2c HTTP/1.1 beside it (configured as [`http1_builder`]); hyper's HTTP/2
/// defaults otherwise, such as 200 streams at once per connection.
pub(super) fn auto_builder(executor: StreamExecutor) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(executor);
    builder.http1().header_read_timeout(None);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http2_request_gets_its_host_header_from_the_authority() {
        let mut request = http::Request::get("https://127.0.0.1:8443/admin/queues")
            .body(())
            .unwrap();
        host_from_authority(&mut request);
        assert_eq!(request.headers()["host"], "127.0.0.1:8443");

        let mut request = http::Request::get("https://a.example/")
            .header("host", "b.example")
            .body(())
            .unwrap();
        host_from_authority(&mut request);
        assert_eq!(
            request.headers()["host"],
            "b.example",
            "a Host sent is kept"
        );

        let mut request = http::Request::get("/").body(()).unwrap();
        host_from_authority(&mut request);
        assert!(!request.headers().contains_key("host"));
    }
}
