//! Server-Sent Events: the wire format, and a response body that sends each event the
//! moment it is produced.
//!
//! [`body`] turns a blocking iterator of events into a `wstd` body. wstd writes every frame
//! of a streamed body with its own `output-stream.write` as soon as `poll_frame` returns it,
//! and the wasi:http host forwards each write to the client as one chunk, so an event is on
//! the wire before the next one is computed: nothing is buffered until the end.

use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use wstd::http::Body;
use wstd::http::body::{Bytes, Frame, HttpBody};

/// One event: `event: {name}` (when named) then `data: {json}` and a blank line.
pub fn event(name: Option<&str>, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).expect("event payloads always serialize");
    let text = match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    Bytes::from(text)
}

/// A body that sends each item of `events` as its own chunk.
///
/// The iterator may block (the llm capability is a blocking import); that is fine here
/// because an instance serves exactly one request.
pub fn body<I>(events: I) -> Body
where
    I: Iterator<Item = Bytes> + Send + Unpin + 'static,
{
    Body::from_http_body(EventBody(events))
}

struct EventBody<I>(I);

impl<I: Iterator<Item = Bytes> + Unpin> HttpBody for EventBody<I> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.next().map(|event| Ok(Frame::data(event))))
    }
}

#[cfg(test)]
mod tests {
    use super::event;
    use serde_json::json;

    #[test]
    fn named_and_unnamed_events() {
        assert_eq!(
            event(Some("start"), &json!({"agent": "a"})),
            "event: start\ndata: {\"agent\":\"a\"}\n\n"
        );
        assert_eq!(
            event(None, &json!({"delta": "two\nlines"})),
            "data: {\"delta\":\"two\\nlines\"}\n\n"
        );
    }
}
