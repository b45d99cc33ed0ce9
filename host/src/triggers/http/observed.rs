//! What every request to a component route leaves behind once its response body has been
//! sent (or cut): its count and duration in the route's metrics, and, with
//! `[http] access_log = true`, one access-log line; with tracing on, the end of the
//! request's span.
//!
//! Both are taken when the body ends, not when the head is ready, so that a streamed answer
//! counts its whole time and its bytes. A body dropped before its end (the client went
//! away, or the server cut it) still counts, as `complete=false` in the log.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::Method;
use http_body::{Frame, SizeHint};

use crate::metrics::RouteHttpMetrics;

/// Who asked what, for the access log; only gathered when the log is on.
pub(super) struct AccessEntry {
    pub method: Method,
    pub path: String,
    /// The route pattern, or `unmatched`.
    pub route: String,
    pub component: Option<String>,
    pub client: Option<IpAddr>,
}

/// A request being answered: what its end records.
struct Observation {
    metrics: Arc<RouteHttpMetrics>,
    status: u16,
    arrived: Instant,
    bytes: u64,
    access: Option<Box<AccessEntry>>,
    /// The request's span (`Span::none()` with tracing off): it ends when this is dropped.
    span: tracing::Span,
}

impl Observation {
    fn finish(self, complete: bool) {
        let took = self.arrived.elapsed();
        self.metrics.answered(self.status, took);
        crate::telemetry::spans::record_status(&self.span, self.status);
        if let Some(a) = self.access {
            tracing::info!(
                target: "llmchat::access",
                method = %a.method,
                path = %a.path,
                route = %a.route,
                status = self.status,
                bytes = self.bytes,
                duration_ms = took.as_secs_f64() * 1000.0,
                component = a.component.as_deref().unwrap_or("-"),
                client = %a.client.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                complete,
                "{} {} {}",
                a.method,
                a.path,
                self.status
            );
        }
    }
}

/// `response` with its body observed until it ends.
pub(super) fn observe(
    response: Response,
    metrics: Arc<RouteHttpMetrics>,
    arrived: Instant,
    access: Option<Box<AccessEntry>>,
    span: tracing::Span,
) -> Response {
    let status = response.status().as_u16();
    response.map(|inner| {
        Body::new(Observed {
            inner,
            done: Some(Observation {
                metrics,
                status,
                arrived,
                bytes: 0,
                access,
                span,
            }),
        })
    })
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it ends or is dropped.
    struct Observed {
        #[pin]
        inner: Body,
        done: Option<Observation>,
    }

    impl PinnedDrop for Observed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                // A body with nothing left (HEAD, 204, an empty one) is complete unpolled.
                done.finish(http_body::Body::is_end_stream(&*this.inner));
            }
        }
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(done), Some(data)) = (this.done.as_mut(), frame.data_ref()) {
                    done.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(done) = this.done.take() {
                    done.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = this.done.take() {
                    done.finish(false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
