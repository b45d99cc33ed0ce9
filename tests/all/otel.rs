//! OpenTelemetry traces: a chat request with a W3C `traceparent` and the job it enqueues
//! arrive at a local OTLP/HTTP receiver as one tree of spans; without the `OTEL_*`
//! variables nothing is exported.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::otlp::{
    CLIENT, CONSUMER, INTERNAL, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER,
};
use crate::support::redis::RedisServer;
use crate::support::{
    Host, client, component, component_toml, default_manifest, poll_until, prometheus, route_toml,
};

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
    let chat_wasm = std::fs::read(component("chat")).expect("chat.wasm");
    let chat_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&chat_wasm));
    assert_eq!(chat.attr("llmchat.component.hash"), &chat_hash[..12]);
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

    // A summary asked for is a `summarize` job in the trace of the request that asked.
    let conversation = answer["conversation_id"]
        .as_str()
        .expect("a conversation id");
    let summarize_trace = "0af7651916cd43dd8448eb211c80319c";
    let response = client()
        .post(host.url(&format!("/api/conversations/{conversation}/summarize")))
        .header(
            "traceparent",
            format!("00-{summarize_trace}-b7ad6b7169203331-01"),
        )
        .send()
        .expect("POST summarize");
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().expect("JSON body");
    let spans = poll_until(Duration::from_secs(30), "the summarize job's span", || {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == summarize_trace)
            .collect();
        spans
            .iter()
            .any(|s| s.name == "process summarize")
            .then_some(spans)
    });
    let job = one(&spans, "summarize job", |s| s.name == "process summarize");
    assert_eq!(
        job.attr("messaging.message.id"),
        accepted["job_id"].as_str().unwrap()
    );
    let enqueue = one(&spans, "its enqueue", |s| s.span_id == job.parent_span_id);
    assert_eq!(enqueue.name, "send summarize");
    let chat = one(&spans, "chat", |s| s.span_id == enqueue.parent_span_id);
    let request = one(&spans, "the request", |s| s.span_id == chat.parent_span_id);
    assert_eq!(request.parent_span_id, "b7ad6b7169203331");

    // A streamed answer's llm span records its time to first token; without a
    // `traceparent`, the request starts a trace of its own.
    let streamed = client()
        .post(host.url("/api/chat"))
        .json(&json!({"agent": "general", "message": "one two three", "stream": true}))
        .send()
        .expect("POST /api/chat streaming");
    assert_eq!(streamed.status(), 200);
    streamed.text().expect("the whole stream");
    let (llm, spans) = poll_until(Duration::from_secs(30), "the streamed llm span", || {
        let spans = receiver.spans();
        let llm = spans
            .iter()
            .find(|s| {
                s.attributes
                    .get("llmchat.llm.streaming")
                    .map(String::as_str)
                    == Some("true")
            })?
            .clone();
        Some((llm, spans))
    });
    let first_token: f64 = llm
        .attr("llmchat.llm.time_to_first_token_ms")
        .parse()
        .unwrap();
    assert!(first_token >= 0.0, "{llm:?}");
    assert_ne!(llm.trace_id, TRACE_ID);
    let invocation = one(&spans, "its invocation", |s| {
        s.span_id == llm.parent_span_id
    });
    let request = one(&spans, "its request", |s| {
        s.span_id == invocation.parent_span_id
    });
    assert_eq!(
        (request.kind, request.parent_span_id.as_str()),
        (SERVER, "")
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

/// An outgoing HTTP request's span (kv spans are client spans too).
fn is_outgoing(span: &ReceivedSpan) -> bool {
    span.kind == CLIENT && span.attributes.contains_key("url.full")
}

#[test]
fn outgoing_requests_carry_the_trace_and_each_tick_starts_one() {
    let receiver = OtlpReceiver::start();
    let manifest = format!(
        "{}{}{}[component.beat.config]\naction = \"ok\"\n\
         [[trigger.schedule]]\ncomponent = \"beat\"\nevery = \"200ms\"\ntimeout = \"5s\"\n",
        component_toml(
            "out",
            &component("fixture-outbound"),
            &format!("allowed_outbound_hosts = [{:?}]", receiver.endpoint)
        ),
        route_toml("/out", "out"),
        component_toml("beat", &component("fixture-monitor"), ""),
    );
    let host = Host::start_with_env(
        &manifest,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("LLMCHAT_LOG_FORMAT", "json"),
        ],
    );
    let response = client()
        .get(host.url(&format!("/out?url={}/echo/traceparent", receiver.endpoint)))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .send()
        .expect("GET /out");
    assert_eq!(response.status(), 200);
    let sent = response.text().expect("the upstream's answer");

    let spans = poll_until(
        Duration::from_secs(30),
        "the outgoing request's span and two ticks",
        || {
            let spans = receiver.spans();
            let ticks = spans.iter().filter(|s| s.name == "tick beat").count();
            (ticks >= 2 && spans.iter().any(is_outgoing)).then_some(spans)
        },
    );
    let outgoing = one(&spans, "outgoing request span", is_outgoing);
    assert_eq!(outgoing.trace_id, TRACE_ID);
    assert_eq!(outgoing.attr("http.request.method"), "GET");
    assert_eq!(outgoing.attr("http.response.status_code"), "200");
    assert_eq!(
        sent,
        format!("00-{TRACE_ID}-{}-01", outgoing.span_id),
        "the upstream saw the trace, with the outgoing span as its parent"
    );
    let invocation = one(&spans, "the invocation", |s| {
        s.span_id == outgoing.parent_span_id
    });
    assert_eq!(invocation.name, "invoke out");
    // Its JSON log line names the trace and the span it was written in; a line written
    // outside any span has neither.
    let log = host.log();
    let done: Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["fields"]["message"] == "invocation done" && line["fields"]["component"] == "out"
        })
        .unwrap_or_else(|| panic!("the invocation's log line:\n{log}"));
    assert_eq!(done["trace_id"], TRACE_ID, "{done}");
    assert_eq!(done["span_id"], invocation.span_id.as_str(), "{done}");
    let listening = log
        .lines()
        .find(|l| l.contains("llmchat listening on"))
        .expect("the listening line");
    assert!(!listening.contains("trace_id"), "{listening}");

    // Every tick is the root of a trace of its own, with the monitor's invocation in it.
    let ticks: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "tick beat").collect();
    assert!(
        ticks
            .iter()
            .all(|t| t.parent_span_id.is_empty() && t.kind == INTERNAL)
    );
    assert_ne!(ticks[0].trace_id, ticks[1].trace_id);
    for tick in ticks {
        let runs = children(&spans, tick);
        assert!(
            runs.len() == 1 && runs[0].attr("llmchat.trigger") == "schedule",
            "{runs:#?}"
        );
    }
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

/// A collector that accepts connections and never answers: requests are answered as usual,
/// the spans past the small export queue are dropped and counted, and shutdown waits for
/// the stuck export no longer than its bound.
#[test]
fn a_collector_that_never_answers_costs_requests_nothing_and_drops_are_counted() {
    // Connections complete in the kernel's backlog; nothing ever reads or answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let manifest = format!(
        "{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/hello", "hello")
    );
    let host = Host::start_with_env(
        &manifest,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ],
    );
    for _ in 0..20 {
        let response = client().get(host.url("/hello")).send().expect("GET /hello");
        assert_eq!(response.status(), 200);
    }
    let dropped = poll_until(
        Duration::from_secs(30),
        "dropped spans to be counted",
        || {
            let samples = prometheus::scrape(&host);
            prometheus::value(&samples, "llmchat_otel_spans_dropped_total", &[])
                .filter(|d| *d > 0.0)
        },
    );
    // 20 requests make 40 spans; at most one batch in flight and 4 queued are kept.
    assert!(dropped >= 30.0, "{dropped}");
    let stopping = std::time::Instant::now();
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "shutdown waited {:?} on the collector",
        stopping.elapsed()
    );
    assert!(log.contains("spans lost"), "{log}");
    assert!(log.contains("llmchat stopped tasks_left=0"), "{log}");
    drop(silent);
}
