//! `[llm]` with named providers and a route, against two local fakes of an OpenAI-compatible
//! API: a failing provider is retried, then the call falls over to the next target, and its
//! circuit opens; a 429's `Retry-After` is waited for; when every target fails, the error
//! says which were tried. Each seen from the client and in `/metrics`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::fake_openai::{API_KEY, FakeOpenAi};
use crate::support::prometheus::{scrape, value};
use crate::support::{Host, client, default_manifest, error_of, poll_until};

const KEY_VAR: &str = "LLMCHAT_TEST_OPENAI_KEY";

/// The default app with providers `primary` (model `big`) and `backup` (model `small`),
/// route `chat` = primary, then backup, as the default.
fn host(primary: &FakeOpenAi, backup: &FakeOpenAi, extra: &str) -> Host {
    let llm = format!(
        "[llm]\ndefault = \"chat\"\nretries = 1\nbackoff = \"fixed:10ms\"\n{extra}\n\
         [llm.providers.primary]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\nmodel = \"big\"\n\
         [llm.providers.backup]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\nmodel = \"small\"\n\
         [llm.routes]\nchat = [\"primary/big\", \"backup/small\"]\n",
        primary.base_url, backup.base_url
    );
    let manifest = default_manifest().replace("[llm]\nprovider = \"echo\"", &llm);
    assert!(
        manifest.contains("[llm.routes]"),
        "the default manifest has an [llm] table"
    );
    Host::start_with_env(&manifest, &[(KEY_VAR, API_KEY)])
}

fn chat(host: &Host, message: &str) -> reqwest::blocking::Response {
    client()
        .post(host.url("/api/chat"))
        .json(&json!({"agent": "general", "message": message}))
        .send()
        .expect("POST /api/chat")
}

fn models(fake: &FakeOpenAi) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|r: &Value| r["model"].as_str().unwrap_or("").to_string())
        .collect()
}

fn metric(host: &Host, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(host), name, labels).unwrap_or(0.0)
}

#[test]
fn a_failing_provider_is_retried_then_left_for_the_next_target_and_its_circuit_opens() {
    let (primary, backup) = (FakeOpenAi::start(), FakeOpenAi::start());
    let host = host(
        &primary,
        &backup,
        "breaker = { failures = 2, cooldown = \"1h\" }",
    );
    primary.fail_with(503, "overloaded");
    let response = chat(&host, "hello there");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().expect("JSON");
    assert!(answer.to_string().contains("fake: hello there"), "{answer}");
    assert_eq!(models(&primary), ["big", "big"], "tried, then retried once");
    assert!(models(&backup).contains(&"small".to_string()));
    // Two failures opened primary's circuit: later calls (chat's own, and its background
    // title job's) go straight to the backup.
    let response = chat(&host, "again");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(primary.requests().len(), 2, "an open circuit is not called");
    poll_until(Duration::from_secs(10), "the metrics", || {
        let fallbacks = metric(
            &host,
            "llmchat_llm_fallbacks_total",
            &[("from", "primary/big"), ("to", "backup/small")],
        );
        let retries = metric(
            &host,
            "llmchat_llm_retries_total",
            &[("provider", "primary")],
        );
        let open = metric(
            &host,
            "llmchat_llm_breaker_state",
            &[("provider", "primary")],
        );
        (fallbacks >= 2.0 && retries == 1.0 && open == 1.0).then_some(())
    });
    let history: Value = crate::support::get_json(&host.url("/dashboard/history"));
    assert_eq!(
        history["llm_providers"],
        json!([{"provider": "backup", "state": "closed"}, {"provider": "primary", "state": "open"}]),
        "the dashboard shows each provider's circuit"
    );
}

#[test]
fn a_429_waits_its_retry_after_and_every_target_failing_names_them_all() {
    let (primary, backup) = (FakeOpenAi::start(), FakeOpenAi::start());
    let host = host(&primary, &backup, "");
    primary.fail_with_retry_after(429, "slow down", 1);
    backup.fail_with(500, "broken");
    let started = Instant::now();
    let response = chat(&host, "hi");
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error = error_of(response);
    assert!(
        error.contains("primary/big: answered 429 (2 tries)")
            && error.contains("backup/small: answered 500 (2 tries)"),
        "{error}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "the 429's Retry-After of 1 s was waited: {took:?}"
    );
    assert_eq!(models(&primary), ["big", "big"]);
}
