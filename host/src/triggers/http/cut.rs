//! A guest's response body that tells the client when the invocation failed part-way.
//!
//! `wasi:http` says a response body the guest drops without `outgoing-body.finish` is
//! incomplete, and the error must reach the HTTP protocol. wasmtime-wasi-http 48 ends such a
//! body as if it were complete when the store is dropped (its finish channel closes), so a
//! client of a handler that trapped or timed out mid-stream got a well-formed, truncated
//! body. [`CutAware`] turns that end into an error when the invocation has failed, and hyper
//! then closes the connection without the last chunk: the client sees the body was cut.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Set by the invocation's task when it failed, before it drops the store (whose drop is
/// what ends an unfinished body), so the body sees it when it sees the end.
#[derive(Clone, Default)]
pub struct FailedFlag(Arc<AtomicBool>);

impl FailedFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The invocation failed before its response body was finished.
#[derive(Debug, thiserror::Error)]
#[error("the component failed before finishing its response body")]
pub struct BodyCut;

/// `inner`, whose end becomes a [`BodyCut`] error if `failed` is set by then.
pub struct CutAware<B> {
    inner: B,
    failed: FailedFlag,
}

impl<B> CutAware<B> {
    pub fn new(inner: B, failed: FailedFlag) -> Self {
        Self { inner, failed }
    }
}

impl<B> Body for CutAware<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.failed.is_set() => Poll::Ready(Some(Err(BodyCut.into()))),
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only a polled end can be checked against the flag.
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn a_body_ends_normally_unless_the_invocation_failed() {
        let flag = FailedFlag::default();
        let body = CutAware::new(Full::new(Bytes::from_static(b"hi")), flag.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");

        let flag = FailedFlag::default();
        let mut body = CutAware::new(Full::new(Bytes::from_static(b"hi")), flag.clone());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hi");
        flag.set();
        let end = body.frame().await.expect("an error frame, not the end");
        assert!(
            end.unwrap_err()
                .to_string()
                .contains("failed before finishing")
        );
    }
}
