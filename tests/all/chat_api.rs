//! The `chat` component's API under the default manifest: agents, chat, history, streaming,
//! and bad input that is refused without changing anything.

use reqwest::StatusCode;
use serde_json::{Value, json};

use std::time::Duration;

use crate::support::{Host, client, default_manifest, error_of, poll_until};

fn chat(host: &Host, body: Value) -> (StatusCode, Value) {
    let response = client()
        .post(host.url("/api/chat"))
        .json(&body)
        .send()
        .expect("POST /api/chat");
    let status = response.status();
    (status, response.json().expect("JSON body"))
}

fn prompt_tokens(answer: &Value) -> u64 {
    answer["usage"]["prompt_tokens"]
        .as_u64()
        .expect("usage.prompt_tokens")
}

/// Splits an SSE body into (event name, data) pairs.
pub fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = "message".to_string();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            (
                event,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            )
        })
        .collect()
}

#[test]
fn agents_are_listed_and_fetched_by_id() {
    let host = Host::start(&default_manifest());
    let list: Value = client()
        .get(host.url("/api/agents"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let agents = list["agents"].as_array().expect("agents array");
    assert_eq!(agents.len(), 3, "{list}");
    assert!(
        agents.iter().all(|a| a.get("system_prompt").is_none()),
        "system prompts stay private: {list}"
    );

    let coder = client().get(host.url("/api/agents/coder")).send().unwrap();
    assert_eq!(coder.status(), StatusCode::OK);
    assert_eq!(coder.json::<Value>().unwrap()["id"], "coder");

    let ghost = client().get(host.url("/api/agents/ghost")).send().unwrap();
    assert_eq!(ghost.status(), StatusCode::NOT_FOUND);
    assert!(error_of(ghost).contains("ghost"));
}

#[test]
fn chat_answers_through_the_llm_and_keeps_history() {
    let host = Host::start(&default_manifest());
    let (status, first) = chat(&host, json!({"agent": "general", "message": "hello there"}));
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["message"]["content"], "hello there");
    assert_eq!(first["message"]["role"], "assistant");
    assert_eq!(first["provider"], "echo");
    let id = first["conversation_id"]
        .as_str()
        .expect("a conversation id is generated")
        .to_string();

    let (_, second) = chat(
        &host,
        json!({"agent": "general", "message": "again", "conversation_id": id}),
    );
    assert_eq!(second["conversation_id"], id.as_str());
    // The second prompt carries the first exchange (2 + 2 words) plus the new word.
    assert_eq!(
        prompt_tokens(&second),
        prompt_tokens(&first) - 2 + 4 + 1,
        "{first}\n{second}"
    );

    let (_, other) = chat(&host, json!({"agent": "general", "message": "again"}));
    assert_ne!(other["conversation_id"], id.as_str());
    assert_eq!(
        prompt_tokens(&other),
        prompt_tokens(&first) - 1,
        "a new conversation starts empty"
    );
}

#[test]
fn history_is_bounded_by_config() {
    let manifest = default_manifest().replace(
        "history_max_messages = \"20\"",
        "history_max_messages = \"4\"",
    );
    assert!(manifest.contains("history_max_messages = \"4\""));
    let host = Host::start(&manifest);
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let (_, answer) = chat(
            &host,
            json!({"agent": "general", "message": "word", "conversation_id": "bounded"}),
        );
        tokens.push(prompt_tokens(&answer));
    }
    // System prompt + at most 4 one-word history messages + the new word.
    let system = tokens[0] - 1;
    assert_eq!(
        tokens,
        vec![system + 1, system + 3, system + 5, system + 5, system + 5]
    );
}

#[test]
fn chat_streams_server_sent_events() {
    let host = Host::start(&default_manifest());
    let response = client()
        .post(host.url("/api/chat"))
        .json(&json!({"agent": "general", "message": "one two three four", "stream": true}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_events(&response.text().unwrap());
    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("start"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("done"),
        "{events:?}"
    );
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "message")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(deltas.len(), 4, "one event per word: {events:?}");
    assert_eq!(deltas.concat(), "one two three four");
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let host = Host::start(&default_manifest());
    let (_, first) = chat(
        &host,
        json!({"agent": "general", "message": "first", "conversation_id": "c1"}),
    );
    let baseline = prompt_tokens(&first);

    let malformed = client()
        .post(host.url("/api/chat"))
        .body("{\"agent\": ")
        .send()
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let error = error_of(malformed);
    assert!(error.contains("invalid JSON"), "{error}");

    let (status, missing) = chat(&host, json!({"agent": "general", "conversation_id": "c1"}));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        missing["error"].as_str().unwrap().contains("message"),
        "{missing}"
    );

    let (status, unknown) = chat(
        &host,
        json!({"agent": "ghost", "message": "x", "conversation_id": "c1"}),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    let (status, _) = chat(
        &host,
        json!({"agent": "general", "message": "", "conversation_id": "c1"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = chat(
        &host,
        json!({"agent": "general", "message": "x", "conversation_id": "bad id!"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let huge = json!({"agent": "general", "message": "x".repeat(2 << 20), "conversation_id": "c1"});
    let response = client()
        .post(host.url("/api/chat"))
        .json(&huge)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(response).contains("larger than"));

    // The same without a content-length: a chunked body is cut off at the limit too.
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b' '; 2 << 20]));
    let response = client()
        .post(host.url("/api/chat"))
        .body(chunked)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let nowhere = client().get(host.url("/no/such/route")).send().unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert!(error_of(nowhere).contains("/no/such/route"));

    // None of the refused requests touched the conversation.
    let (_, next) = chat(
        &host,
        json!({"agent": "general", "message": "second", "conversation_id": "c1"}),
    );
    assert_eq!(
        prompt_tokens(&next),
        baseline + 2,
        "history holds only the first exchange"
    );
}

#[test]
fn conversations_get_a_title_and_a_summary_from_the_queues() {
    let host = Host::start(&default_manifest());
    for turn in 0..5 {
        let (status, answer) = chat(
            &host,
            json!({"agent": "general", "message": format!("turn {turn}"), "conversation_id": "long"}),
        );
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // 10 messages reach `summarize_after`: chat enqueues a summary job, the summarizer
    // component (sharing chat's kv namespace) writes the summary.
    let written = |field: &'static str| {
        poll_until(Duration::from_secs(20), field, || {
            let conversation: Value = client()
                .get(host.url("/api/conversations/long"))
                .send()
                .ok()?
                .json()
                .ok()?;
            conversation[field].as_str().map(str::to_string)
        })
    };
    let summary = written("summary");
    let title = written("title");
    assert!(
        !title.is_empty() && title.chars().count() <= 80,
        "{title:?}"
    );
    assert!(
        summary.contains("turn"),
        "the echo LLM summarises the conversation text: {summary}"
    );

    let deleted = client()
        .delete(host.url("/api/conversations/long"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    poll_until(
        Duration::from_secs(20),
        "the cleanup job to delete the conversation",
        || {
            let r = client()
                .get(host.url("/api/conversations/long"))
                .send()
                .ok()?;
            (r.status() == StatusCode::NOT_FOUND).then_some(())
        },
    );
}

/// `POST /api/conversations/{id}/summarize` answers with a job, whose progress and end
/// stream from `GET /api/jobs/{id}/events` for that conversation only.
#[test]
fn a_summary_asked_for_streams_its_progress_to_the_conversations_owner_only() {
    let host = Host::start(&default_manifest());
    let (status, first) = chat(&host, json!({"agent": "general", "message": "hello there"}));
    assert_eq!(status, StatusCode::OK, "{first}");
    let conversation = first["conversation_id"]
        .as_str()
        .expect("an id")
        .to_string();
    let response = client()
        .post(host.url(&format!("/api/conversations/{conversation}/summarize")))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().unwrap();
    let job = accepted["job_id"].as_str().expect("a job id").to_string();
    let events_path = accepted["events"]
        .as_str()
        .expect("an events path")
        .to_string();
    assert_eq!(
        events_path,
        format!("/api/jobs/{job}/events?conversation={conversation}")
    );

    let body = client()
        .get(host.url(&events_path))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap();
    assert_eq!(body.headers()["content-type"], "text/event-stream");
    let events = sse_events(&body.text().expect("the stream ends with the job"));
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "completed", "{events:?}");
    assert!(
        data["result"]
            .as_str()
            .unwrap_or("")
            .starts_with("summarized"),
        "{data}"
    );
    assert_eq!(
        data["progress"],
        json!({"step": "saving the summary"}),
        "{data}"
    );
    poll_until(Duration::from_secs(5), "the summary is stored", || {
        let c: Value = client()
            .get(host.url(&format!("/api/conversations/{conversation}")))
            .send()
            .ok()?
            .json()
            .ok()?;
        c["summary"].is_string().then_some(())
    });

    // Another conversation's caller, an unknown job, or no conversation: refused.
    let (_, other) = chat(
        &host,
        json!({"agent": "general", "message": "someone else"}),
    );
    let other = other["conversation_id"].as_str().unwrap();
    for (path, status) in [
        (
            format!("/api/jobs/{job}/events?conversation={other}"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/jobs/ffff/events?conversation={conversation}"),
            StatusCode::NOT_FOUND,
        ),
        (format!("/api/jobs/{job}/events"), StatusCode::BAD_REQUEST),
    ] {
        let response = client().get(host.url(&path)).send().unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert!(!error_of(response).is_empty());
    }
    let response = client()
        .post(host.url("/api/conversations/nope-nope/summarize"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
