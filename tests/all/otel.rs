//! OpenTelemetry traces: a chat request with a W3C `traceparent` and the job it enqueues
//! arrive at a local OTLP/HTTP receiver as one tree of spans; without the `OTEL_*`
//! variables nothing is exported.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::otlp::{CONSUMER, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, default_manifest, poll_until, prometheus};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn chat_with_traceparent(host: &Host) -> Value {
    let response = client()
        .post(host.url("/api/chat"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"agent": "general", "message": "hello there"}))
        .send()
        .expect("POST /api/chat");
    assert_eq!(response.status(), 200);
    response.json().expect("JSON body")
}

/// The one span of `spans` that `matches`, named by `what` in the failure.
fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, got {found:#?}\nall: {spans:#?}"
    );
    found[0]
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

#[test]
fn a_chat_request_and_the_job_it_enqueues_are_one_trace() {
    let redis = RedisServer::start();
    let receiver = OtlpReceiver::start();
    let host = Host::start_with_env(
        &default_manifest(),
        &[
            ("REDIS_URL", &redis.url()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let answer = chat_with_traceparent(&host);
    assert_eq!(answer["message"]["content"], "hello there", "{answer}");

    // The first exchange enqueues a `titles` job; its processing ends the tree.
    let spans = poll_until(Duration::from_secs(30), "the title job's spans", || {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|s| s.name == "invoke summarizer" && s.trace_id == TRACE_ID)
            .then_some(spans)
    });
    let spans: Vec<ReceivedSpan> = spans
        .into_iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .collect();
    assert!(spans.iter().all(|s| s.service == "llmchat"), "{spans:#?}");

    let request = one(&spans, "request span", |s| s.kind == SERVER);
    assert_eq!(
        request.parent_span_id, CALLER_SPAN,
        "the caller's span is its parent"
    );
    assert_eq!(request.name, "POST /api/...");
    assert_eq!(request.attr("http.request.method"), "POST");
    assert_eq!(request.attr("http.route"), "/api/...");
    assert_eq!(request.attr("url.path"), "/api/chat");
    assert_eq!(request.attr("http.response.status_code"), "200");
    assert_eq!(request.attr("client.address"), "127.0.0.1");

    let chat = one(&spans, "chat invocation", |s| s.name == "invoke chat");
    assert_eq!(chat.parent_span_id, request.span_id);
    assert_eq!(chat.attr("llmchat.component.name"), "chat");
    assert_eq!(chat.attr("llmchat.trigger"), "http");
    assert_eq!(chat.attr("llmchat.invocation.outcome"), "ok");
    let peak: u64 = chat
        .attr("llmchat.invocation.peak_memory_bytes")
        .parse()
        .unwrap();
    assert!(peak > 0, "{chat:?}");

    // Every capability call of chat nests under its invocation.
    let calls = children(&spans, chat);
    let named = |prefix: &str| calls.iter().filter(|s| s.name.starts_with(prefix)).count();
    assert!(
        named("kv get") >= 1,
        "chat reads its conversation: {calls:#?}"
    );
    assert!(
        named("kv set") >= 1,
        "chat saves its conversation: {calls:#?}"
    );
    for kv in calls.iter().filter(|s| s.name.starts_with("kv ")) {
        assert_eq!(kv.attr("db.operation.name"), &kv.name["kv ".len()..]);
    }
    let llm = one(&spans, "chat's llm call", |s| {
        s.parent_span_id == chat.span_id && s.name.starts_with("chat ")
    });
    assert_eq!(llm.attr("gen_ai.provider.name"), "echo");
    assert_eq!(llm.attr("gen_ai.operation.name"), "chat");
    let input: u64 = llm.attr("gen_ai.usage.input_tokens").parse().unwrap();
    let output: u64 = llm.attr("gen_ai.usage.output_tokens").parse().unwrap();
    assert_eq!(
        (input, output),
        (
            answer["usage"]["prompt_tokens"].as_u64().unwrap(),
            answer["usage"]["completion_tokens"].as_u64().unwrap()
        ),
        "the span carries the usage chat answered with"
    );
    let enqueue = one(&spans, "title enqueue", |s| s.name == "send titles");
    assert_eq!(enqueue.kind, PRODUCER);
    assert_eq!(enqueue.parent_span_id, chat.span_id);
    assert_eq!(enqueue.attr("messaging.destination.name"), "titles");

    // The job joins the trace through Redis, under the enqueue.
    let job = one(&spans, "title job", |s| s.name == "process titles");
    assert_eq!(job.kind, CONSUMER);
    assert_eq!(job.parent_span_id, enqueue.span_id);
    assert_eq!(
        job.attr("messaging.message.id"),
        enqueue.attr("messaging.message.id"),
        "the job processed is the one enqueued"
    );
    let summarizer = one(&spans, "summarizer invocation", |s| {
        s.name == "invoke summarizer"
    });
    assert_eq!(summarizer.parent_span_id, job.span_id);
    assert_eq!(summarizer.attr("llmchat.trigger"), "queue");
    assert!(
        children(&spans, summarizer)
            .iter()
            .any(|s| s.name.starts_with("chat ")),
        "the summarizer's llm call nests under it: {spans:#?}"
    );

    let samples = prometheus::scrape(&host);
    assert_eq!(
        prometheus::value(&samples, "llmchat_otel_spans_dropped_total", &[]),
        Some(0.0),
        "nothing was dropped"
    );
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");
    assert!(log.contains("llmchat stopped tasks_left=0"), "{log}");
}

/// Empty variables count as unset (as the OpenTelemetry spec says): tracing stays off, and
/// the host says nothing of exporting. (That no span is even made when off is the unit test
/// `telemetry::spans::tests`.)
#[test]
fn with_empty_otel_variables_tracing_stays_off() {
    let host = Host::start_with_env(
        &default_manifest(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " "),
        ],
    );
    chat_with_traceparent(&host);
    let samples = prometheus::scrape(&host);
    assert_eq!(
        prometheus::value(&samples, "llmchat_otel_spans_dropped_total", &[]),
        Some(0.0)
    );
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");
    assert!(!log.contains("exporting traces"), "{log}");
}
