//! The spans the host makes, one constructor each, with their semantic-convention
//! attributes. Each returns `Span::none()` at once when tracing is off, so the call sites
//! need no check of their own; fields known only later are declared `Empty` here and
//! recorded by the caller (a field not declared at creation cannot be recorded).
//!
//! Parents come from the current span (the invocation span is entered while its guest
//! runs, so capability spans nest under it) or, across processes and queues, from a W3C
//! `traceparent` ([`super::propagation`]).

use std::net::IpAddr;

use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::enabled;
use super::propagation;

/// The `tracing` target of every span meant for OpenTelemetry; only its layer sees them.
pub const TARGET: &str = "llmchat::otel";

/// A request to a component route (server kind), child of the request's `traceparent`
/// when it has a valid one. The caller records `http.response.status_code`.
pub fn http_request(request: &http::Request<axum::body::Body>, client: Option<IpAddr>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let method = request.method().as_str();
    let span = tracing::info_span!(
        target: TARGET,
        "http.request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = Empty,
        url.path = request.uri().path(),
        url.scheme = request.uri().scheme_str().unwrap_or("http"),
        client.address = client.map(|ip| ip.to_string()),
        http.response.status_code = Empty,
    );
    if let Some(parent) = propagation::parent_from_headers(request.headers()) {
        let _ = span.set_parent(parent);
    }
    span
}

/// Names a request span after its route, once the route is known.
pub fn record_route(span: &Span, method: &http::Method, route: &str) {
    if span.is_none() {
        return;
    }
    span.record("otel.name", format!("{method} {route}"));
    span.record("http.route", route);
}

/// Records the status a request span answered with (5xx is an error on a server span).
pub fn record_status(span: &Span, status: u16) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// One invocation of a component (`hash`: its wasm's short SHA-256, the build that ran) by
/// any trigger; the caller records the outcome.
pub fn invocation(component: &str, hash: &str, trigger: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "invoke",
        otel.name = format!("invoke {component}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        llmchat.component.name = component,
        llmchat.component.hash = hash,
        llmchat.trigger = trigger,
        llmchat.invocation.peak_memory_bytes = Empty,
        llmchat.invocation.outcome = Empty,
        error.type = Empty,
    )
}

/// Records how an invocation ended: `ok`, or the kind of failure.
pub fn record_outcome(span: &Span, outcome: &str, peak_memory: usize) {
    if span.is_none() {
        return;
    }
    span.record("llmchat.invocation.outcome", outcome);
    span.record("llmchat.invocation.peak_memory_bytes", peak_memory as u64);
    if outcome != "ok" {
        span.record("otel.status_code", "error");
        span.record("error.type", outcome);
    }
}

/// A kv operation of a component (`get`, `set`, ...).
pub fn kv(operation: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "kv",
        otel.name = format!("kv {operation}"),
        otel.kind = "client",
        otel.status_code = Empty,
        db.operation.name = operation,
    )
}

/// An LLM completion; the caller records the provider, model, tokens and, when streamed,
/// the time to the first token.
pub fn llm(model: &str, streaming: bool) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "llm",
        otel.name = format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        gen_ai.provider.name = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        llmchat.llm.streaming = streaming,
        llmchat.llm.time_to_first_token_ms = Empty,
        error.type = Empty,
    )
}

/// Marks a span failed with a short `error.type`.
pub fn record_error(span: &Span, kind: &str) {
    if span.is_none() {
        return;
    }
    span.record("otel.status_code", "error");
    span.record("error.type", kind);
}

/// A component enqueueing a job (producer kind); the job stores this span's context.
pub fn enqueue(queue: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "enqueue",
        otel.name = format!("send {queue}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "llmchat",
        messaging.operation.type = "send",
        messaging.destination.name = queue,
        messaging.message.id = Empty,
        error.type = Empty,
    )
}

/// One attempt of a job (consumer kind), child of the span that enqueued it when the job
/// carries its `traceparent`, else the root of a trace of its own.
pub fn job(queue: &str, id: &str, attempt: u32, traceparent: Option<&str>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "job",
        otel.name = format!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "llmchat",
        messaging.operation.type = "process",
        messaging.destination.name = queue,
        messaging.message.id = id,
        llmchat.job.attempt = attempt,
    );
    if let Some(parent) = traceparent.and_then(propagation::parent_from_traceparent) {
        let _ = span.set_parent(parent);
    }
    span
}

/// One tick of a schedule: the root of a trace of its own.
pub fn tick(schedule: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: None,
        "tick",
        otel.name = format!("tick {schedule}"),
        otel.kind = "internal",
        llmchat.schedule.name = schedule,
    )
}

/// An outgoing HTTP request of a component (client kind); the caller injects its context
/// into the request and records the status.
pub fn outbound(method: &http::Method, uri: &http::Uri) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "http.client",
        otel.name = method.as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        url.full = %uri,
        server.address = uri.host(),
        server.port = uri.port_u16(),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off (no layer installed in unit tests), every constructor returns at once.
    #[test]
    fn with_tracing_off_no_span_is_made() {
        assert!(!enabled());
        let request = http::Request::new(axum::body::Body::empty());
        assert!(http_request(&request, None).is_none());
        assert!(invocation("chat", "0123456789ab", "http").is_none());
        assert!(kv("get").is_none());
        assert!(llm("m", false).is_none());
        assert!(enqueue("q").is_none());
        assert!(
            job(
                "q",
                "1",
                1,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            )
            .is_none()
        );
        assert!(tick("s").is_none());
        let uri: http::Uri = "http://example.com/".parse().expect("a valid URI");
        assert!(outbound(&http::Method::GET, &uri).is_none());
        assert!(super::super::propagation::traceparent_of(&enqueue("q")).is_none());
    }
}
