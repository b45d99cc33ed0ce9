//! The `openai` provider against a local fake speaking the OpenAI wire format.

use std::io::Read;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat_api::sse_events;
use crate::support::fake_openai::{API_KEY, FakeOpenAi};
use crate::support::prometheus::{scrape, value};
use crate::support::{Host, client, default_manifest, error_of, poll_until};

const KEY_VAR: &str = "LLMCHAT_TEST_OPENAI_KEY";

fn host_for(base_url: &str, key: &str) -> Host {
    host_with_timeout(base_url, key, "5s")
}

fn host_with_timeout(base_url: &str, key: &str, timeout: &str) -> Host {
    let manifest = default_manifest().replace(
        "[llm]\nprovider = \"echo\"",
        &format!(
            "[llm]\nprovider = \"openai\"\nbase_url = \"{base_url}\"\napi_key_env = \"{KEY_VAR}\"\nmodel = \"fake-model\"\ntimeout = \"{timeout}\""
        ),
    );
    assert!(
        manifest.contains("provider = \"openai\""),
        "the default manifest has an [llm] table"
    );
    Host::start_with_env(&manifest, &[(KEY_VAR, key)])
}

fn post_chat(host: &Host, body: Value) -> reqwest::blocking::Response {
    client()
        .post(host.url("/api/chat"))
        .json(&body)
        .send()
        .expect("POST /api/chat")
}

#[test]
fn chat_answers_from_an_openai_compatible_api() {
    let fake = FakeOpenAi::start();
    let host = host_for(&fake.base_url, API_KEY);
    let response = post_chat(&host, json!({"agent": "coder", "message": "hi there"}));
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().unwrap();
    assert_eq!(answer["message"]["content"], "fake: hi there");
    assert_eq!(answer["provider"], "openai");
    assert_eq!(answer["model"], "fake-model");
    assert_eq!(answer["usage"]["prompt_tokens"], 7);

    let sent = &fake.requests()[0];
    assert_eq!(sent["model"], "fake-model");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("programmer")
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "hi there"})
    );
}

#[test]
fn streamed_chunks_reach_the_client_as_the_provider_produces_them() {
    let fake = FakeOpenAi::start();
    fake.hold_streams();
    let host = host_for(&fake.base_url, API_KEY);
    let mut response = post_chat(
        &host,
        json!({"agent": "general", "message": "one two three", "stream": true}),
    );
    assert_eq!(response.status(), StatusCode::OK);

    // The fake holds the stream after its first word: that word must arrive on its own.
    let mut received = String::new();
    let mut buf = [0u8; 4096];
    while !received.contains("\"delta\":\"fake:\"") {
        let n = response.read(&mut buf).expect("reading the stream");
        assert!(n > 0, "stream ended before the first word: {received}");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        !received.contains("one"),
        "later words cannot have been produced yet: {received}"
    );
    fake.release();
    response.read_to_string(&mut received).unwrap();

    let events = sse_events(&received);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "fake: one two three");
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["usage"]["completion_tokens"], 4, "{done}");
}

#[test]
fn provider_errors_become_502_with_the_reason() {
    let fake = FakeOpenAi::start();
    let host = host_for(&fake.base_url, API_KEY);
    fake.fail_with(500, "model overloaded");
    let response = post_chat(&host, json!({"agent": "general", "message": "hi"}));
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error = error_of(response);
    assert!(
        error.contains("model overloaded") && error.contains("500"),
        "{error}"
    );

    let wrong_key = host_for(&fake.base_url, "wrong");
    let response = post_chat(
        &wrong_key,
        json!({"agent": "general", "message": "hi", "stream": true}),
    );
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error = error_of(response);
    assert!(error.contains("Incorrect API key"), "{error}");
}

#[test]
fn unreachable_provider_is_a_502() {
    // Port 9 (discard) is closed on loopback here: the connection is refused at once.
    let host = host_for("http://127.0.0.1:9/v1", API_KEY);
    let response = post_chat(&host, json!({"agent": "general", "message": "hi"}));
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error = error_of(response);
    assert!(error.contains("unavailable"), "{error}");
}

#[test]
fn a_provider_that_never_answers_times_out_with_504() {
    let fake = FakeOpenAi::start();
    fake.stall();
    let host = host_with_timeout(&fake.base_url, API_KEY, "500ms");
    let response = post_chat(&host, json!({"agent": "general", "message": "hi"}));
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let error = error_of(response);
    assert!(error.contains("timed out"), "{error}");
}

#[test]
fn llm_calls_are_counted_and_timed_by_provider_and_model() {
    let fake = FakeOpenAi::start();
    let host = host_for(&fake.base_url, API_KEY);
    let response = post_chat(&host, json!({"agent": "general", "message": "hi"}));
    assert_eq!(response.status(), StatusCode::OK);
    let streamed = post_chat(
        &host,
        json!({"agent": "general", "message": "one two", "stream": true}),
    );
    assert_eq!(streamed.status(), StatusCode::OK);
    let body = streamed.text().expect("the whole stream");
    assert!(body.contains("event: done"), "{body}");
    fake.fail_with(500, "model overloaded");
    let response = post_chat(&host, json!({"agent": "general", "message": "hi"}));
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);

    let call = [("provider", "openai"), ("model", "fake-model")];
    let with = |outcome: &'static str| [call[0], call[1], ("outcome", outcome)];
    // chat's `summarize` job calls the LLM too, in the background (and is retried while
    // the fake fails), so the counts are checked against each other, once both of ours are in.
    let count =
        |samples: &[crate::support::prometheus::Sample], name: &str, labels: &[(&str, &str)]| {
            value(samples, name, labels).unwrap_or(0.0)
        };
    let samples = poll_until(
        std::time::Duration::from_secs(10),
        "the calls counted: 2 ok and 1 failed at least, each once in the duration",
        || {
            let samples = scrape(&host);
            let ok = count(&samples, "llmchat_llm_requests_total", &with("ok"));
            let failed = count(
                &samples,
                "llmchat_llm_requests_total",
                &with("provider_error"),
            );
            let timed = count(
                &samples,
                "llmchat_llm_request_duration_seconds_count",
                &call,
            );
            (ok >= 2.0 && failed >= 1.0 && timed == ok + failed).then_some(samples)
        },
    );
    assert_eq!(
        count(
            &samples,
            "llmchat_llm_time_to_first_token_seconds_count",
            &call
        ),
        count(&samples, "llmchat_llm_requests_total", &with("ok")),
        "every call that answered had a first token, the failed ones none"
    );
    assert_eq!(
        value(&samples, "llmchat_llm_requests_total", &with("cancelled")),
        None,
        "the stream read to its end counts as ok"
    );
}
