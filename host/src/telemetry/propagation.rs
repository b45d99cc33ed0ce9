//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers and jobs.
//!
//! Incoming requests are read with [`parent_from_headers`], outgoing ones carry
//! [`inject`]; a job stores its enqueue span's [`traceparent_of`], and its processing span
//! takes it back with [`parent_from_traceparent`].

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent a request's `traceparent` names, if it names a valid one.
pub fn parent_from_headers(headers: &HeaderMap) -> Option<Context> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `span`'s context into `headers` as `traceparent` (and `tracestate`).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
}

/// `span`'s `traceparent`, or `None` for a disabled span (tracing is off).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    fields.remove("traceparent")
}

/// The context a stored `traceparent` names, if valid.
pub fn parent_from_traceparent(traceparent: &str) -> Option<Context> {
    let fields = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&fields);
    cx.span().span_context().is_valid().then_some(cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_garbage_is_no_parent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parent_from_traceparent(tp).expect("a valid traceparent");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
        assert!(parent_from_traceparent("00-zz-00f067aa0ba902b7-01").is_none());
        let mut headers = HeaderMap::new();
        assert!(parent_from_headers(&headers).is_none());
        headers.insert("traceparent", HeaderValue::from_static(tp));
        assert!(parent_from_headers(&headers).is_some());
    }
}
