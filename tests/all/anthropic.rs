//! The `anthropic` provider (Anthropic's native Messages API) against a local fake speaking
//! its wire format: plain and streamed answers, the system prompt moved to `system`, token
//! usage, an error passed on with its message, and a route that falls over from it.

use std::io::Read;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat_api::sse_events;
use crate::support::fake_anthropic::{API_KEY, FakeAnthropic};
use crate::support::{Host, client, default_manifest, error_of};

const KEY_VAR: &str = "LLMCHAT_TEST_ANTHROPIC_KEY";

fn host_for(fake: &FakeAnthropic) -> Host {
    let manifest = default_manifest().replace(
        "[llm]\nprovider = \"echo\"",
        &format!(
            "[llm]\nprovider = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\nmodel = \"claude-fake\"\nmax_tokens = 300",
            fake.base_url
        ),
    );
    assert!(
        manifest.contains("provider = \"anthropic\""),
        "the default manifest has an [llm] table"
    );
    Host::start_with_env(&manifest, &[(KEY_VAR, API_KEY)])
}

fn post_chat(host: &Host, body: Value) -> reqwest::blocking::Response {
    client()
        .post(host.url("/api/chat"))
        .json(&body)
        .send()
        .expect("POST /api/chat")
}

#[test]
fn chat_answers_from_the_messages_api_with_the_system_prompt_apart() {
    let fake = FakeAnthropic::start();
    let host = host_for(&fake);
    let response = post_chat(&host, json!({"agent": "coder", "message": "hi there"}));
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().unwrap();
    assert_eq!(answer["message"]["content"], "fake: hi there");
    assert_eq!(answer["provider"], "anthropic");
    assert_eq!(answer["model"], "claude-fake");
    assert_eq!(answer["usage"]["prompt_tokens"], 11);

    let sent = &fake.requests()[0];
    assert_eq!(sent["max_tokens"], 300);
    assert!(
        sent["system"]
            .as_str()
            .unwrap_or_default()
            .contains("programmer"),
        "{sent}"
    );
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hi there"}])
    );
}

#[test]
fn streamed_deltas_reach_the_client_as_anthropic_produces_them() {
    let fake = FakeAnthropic::start();
    fake.hold_streams();
    let host = host_for(&fake);
    let mut response = post_chat(
        &host,
        json!({"agent": "general", "message": "one two three", "stream": true}),
    );
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = crate::support::read_until(&mut response, "\"delta\":\"fake:\"");
    assert!(
        !received.contains("one"),
        "later words cannot exist yet: {received}"
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
    assert_eq!(done["usage"]["prompt_tokens"], 11, "{done}");
    assert_eq!(done["usage"]["completion_tokens"], 4, "{done}");
}

#[test]
fn an_anthropic_error_is_a_502_with_its_message() {
    let fake = FakeAnthropic::start();
    let host = host_for(&fake);
    fake.fail_with(400, "prompt is too long");
    let response = post_chat(&host, json!({"agent": "general", "message": "hi"}));
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error = error_of(response);
    assert!(
        error.contains("prompt is too long") && error.contains("400"),
        "{error}"
    );
    assert_eq!(fake.requests().len(), 1, "a 400 is not retried");
}
