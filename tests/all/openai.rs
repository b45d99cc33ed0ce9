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
    let mut received = crate::support::read_until(&mut response, "\"delta\":\"fake:\"");
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

/// `llm.embed` from a component (the fixture processor's `embed` job) through the openai
/// provider: vectors in input order, the provider's `embedding_model` when the call names
/// none, and a call over the bounds refused before anything is sent.
#[test]
fn a_component_embeds_texts_and_oversized_calls_are_refused() {
    let fake = FakeOpenAi::start();
    let manifest = format!(
        "[llm]\nprovider = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\nmodel = \"fake-model\"\nembedding_model = \"embed-small\"\n{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\nmax_attempts = 1\nkeep_completed = {{ count = 10 }}\n",
        fake.base_url,
        crate::support::component_toml("p", &crate::support::component("fixture-processor"), ""),
    );
    let host = Host::start_with_env(&manifest, &[(KEY_VAR, API_KEY)]);
    let enqueue = |payload: Value| -> String {
        let response = client()
            .post(host.url("/admin/queues/jobs/jobs"))
            .json(&json!({ "payload": payload }))
            .send()
            .expect("enqueue");
        response.json::<Value>().expect("JSON")["id"]
            .as_str()
            .expect("an id")
            .to_string()
    };
    let finished = |id: &str| -> Value {
        poll_until(std::time::Duration::from_secs(20), "the job ends", || {
            let job: Value =
                crate::support::get_json(&host.url(&format!("/admin/queues/jobs/jobs/{id}")));
            matches!(job["state"].as_str(), Some("completed" | "dead")).then_some(job)
        })
    };
    let ok = finished(&enqueue(json!({"action": "embed", "inputs": ["a", "bbb"]})));
    assert_eq!(ok["state"], "completed", "{ok}");
    assert_eq!(ok["result"], "[[1.0, 0.0, 0.5], [3.0, 1.0, 0.5]]");
    let sent = fake
        .requests()
        .into_iter()
        .find(|r| r["input"].is_array())
        .expect("an embeddings request");
    assert_eq!(sent["model"], "embed-small");

    let many: Vec<String> = (0..129).map(|i| i.to_string()).collect();
    let sent_before = fake.requests().len();
    let refused = finished(&enqueue(json!({"action": "embed", "inputs": many})));
    assert_eq!(refused["state"], "dead", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("1 to 128 inputs"),
        "{refused}"
    );
    assert_eq!(fake.requests().len(), sent_before, "nothing was sent");
}
