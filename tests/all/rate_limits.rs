//! HTTP rate limits on the real binary: 429 with `Retry-After` and the `RateLimit` headers
//! before any instance is made, buckets per client IP or per header, and exact admission
//! across two hosts sharing one Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;

use crate::support::prometheus::{scrape, value};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, get_json};

fn limited_hello(limit: &str, extra: &str) -> String {
    format!(
        "{}[[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\nrate_limit = {limit:?}\n{extra}\n",
        component_toml("hello", &component("hello"), "")
    )
}

#[test]
fn over_the_limit_is_429_with_ratelimit_headers_and_no_instance() {
    let host = Host::start(&limited_hello("3/min", "burst = 3"));
    for remaining in [2, 1, 0] {
        let ok = client().get(host.url("/hello")).send().unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["ratelimit-policy"], "\"default\";q=3;w=60");
        let rl = ok.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(
            rl.starts_with(&format!("\"default\";r={remaining};t=")),
            "{rl}"
        );
    }
    let refused = client().get(host.url("/hello")).send().unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request per 20 s: retry in {retry} s"
    );
    let rl = refused.headers()["ratelimit"].to_str().unwrap().to_string();
    assert!(rl.starts_with("\"default\";r=0;t="), "{rl}");
    let body: serde_json::Value = refused.json().unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("rate limit of 3/min"),
        "{body}"
    );
    let samples = scrape(&host);
    let labels = [("component", "hello"), ("trigger", "http")];
    assert_eq!(
        value(&samples, "llmchat_component_invocations_total", &labels),
        Some(3.0),
        "the refused request made no instance"
    );
    assert_eq!(
        value(
            &samples,
            "llmchat_rate_limited_total",
            &[("component", "hello")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_header_key_gives_each_client_its_own_bucket() {
    let host = Host::start(&limited_hello(
        "1/hour",
        "rate_limit_key = \"header:x-api-key\"",
    ));
    let get = |key: &str| {
        client()
            .get(host.url("/hello"))
            .header("x-api-key", key)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get("alice"), StatusCode::OK);
    assert_eq!(get("alice"), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get("bob"), StatusCode::OK);
}

#[test]
fn two_hosts_on_one_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\n{}",
        redis.url(),
        limited_hello("100/hour", "burst = 100")
    );
    let hosts = [Host::start(&manifest), Host::start(&manifest)];
    let urls: Vec<String> = hosts.iter().map(|h| h.url("/hello")).collect();
    let (accepted, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // 1,000 requests from 50 concurrent clients, alternating between the hosts.
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let (urls, accepted, refused) = (urls.clone(), accepted.clone(), refused.clone());
            std::thread::spawn(move || {
                let client = client();
                for i in 0..20 {
                    let status = client.get(&urls[(t + i) % 2]).send().unwrap().status();
                    match status {
                        StatusCode::OK => accepted.fetch_add(1, Ordering::SeqCst),
                        StatusCode::TOO_MANY_REQUESTS => refused.fetch_add(1, Ordering::SeqCst),
                        other => panic!("unexpected {other}"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        100,
        "exactly the limit across both hosts"
    );
    assert_eq!(refused.load(Ordering::SeqCst), 900);
}

#[test]
fn a_queue_rate_holds_across_two_hosts_within_five_percent() {
    let redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\n{}[[trigger.queue]]\nqueue = \"paced\"\ncomponent = \"proc\"\nconcurrency = 5\nrate = \"50/s\"\n",
        redis.url(),
        component_toml("proc", &component("fixture-processor"), "")
    );
    let hosts = [Host::start(&manifest), Host::start(&manifest)];
    // 1,000 jobs: more than 10 s of work at 50/s, so the rate is what paces them.
    let enqueuer = client();
    for _ in 0..1000 {
        let r = enqueuer
            .post(hosts[0].url("/admin/queues/paced/jobs"))
            .json(&serde_json::json!({"payload": {"action": "ok"}}))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
    let processed = || -> u64 {
        let queues: serde_json::Value = get_json(&hosts[1].url("/admin/queues"));
        queues["queues"][0]["processed"].as_u64().unwrap()
    };
    // Not a synchronisation: the rate is measured over a 10 s window.
    let (start, before) = (std::time::Instant::now(), processed());
    std::thread::sleep(std::time::Duration::from_secs(10));
    let (elapsed, after) = (start.elapsed(), processed());
    let rate = (after - before) as f64 / elapsed.as_secs_f64();
    eprintln!("queue rate over {elapsed:?}: {rate:.1} jobs/s (target 50/s)");
    assert!(
        (47.5..=52.5).contains(&rate),
        "{rate:.1} jobs/s against 50/s"
    );
    assert!(after < 1000, "the jobs were paced, not run at once");
}

#[test]
fn llm_calls_over_the_per_component_quota_fail_cleanly_and_tokens_are_counted() {
    let manifest = crate::support::default_manifest().replace(
        "[llm]\nprovider = \"echo\"",
        "[llm]\nprovider = \"echo\"\nword_delay = \"100ms\"",
    ) + "\n[quotas]\nllm_concurrency_per_component = 1\nllm_wait = \"50ms\"\n";
    assert!(
        manifest.contains("word_delay"),
        "the default manifest has an [llm] table"
    );
    let host = Host::start(&manifest);
    // A streamed answer of 8 words holds chat's one LLM turn for ~800 ms.
    let url = host.url("/api/chat");
    let streaming = std::thread::spawn(move || {
        client()
            .post(url)
            .json(&serde_json::json!({"agent": "general", "message": "one two three four five six seven eight", "stream": true}))
            .send()
            .unwrap()
            .text()
            .unwrap()
    });
    // While the stream holds the turn, another call waits 50 ms and is refused, naming the
    // quota. (Until the stream has its turn, the other call may still get through.)
    let error = crate::support::poll_until(
        std::time::Duration::from_secs(10),
        "a chat call refused by the LLM quota",
        || {
            let r = client()
                .post(host.url("/api/chat"))
                .json(&serde_json::json!({"agent": "general", "message": "me too"}))
                .send()
                .unwrap();
            (!r.status().is_success()).then(|| crate::support::error_of(r))
        },
    );
    assert!(error.contains("llm_concurrency_per_component"), "{error}");
    let events = streaming.join().unwrap();
    assert!(events.contains("event: done"), "{events}");
    // The turn is free again, and both answers' tokens are counted for chat.
    let ok = client()
        .post(host.url("/api/chat"))
        .json(&serde_json::json!({"agent": "general", "message": "now"}))
        .send()
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let samples = scrape(&host);
    let tokens_in = value(
        &samples,
        "llmchat_llm_tokens_total",
        &[("component", "chat"), ("direction", "in")],
    )
    .unwrap_or(0.0);
    assert!(tokens_in > 0.0, "prompt tokens counted");
}

#[test]
fn an_agents_token_budget_is_refused_with_429_then_restored() {
    let manifest = crate::support::default_manifest() + "\n[quotas]\nagent_tokens = [\"40/s\"]\n";
    let host = Host::start(&manifest);
    let chat = |agent: &str| {
        client()
            .post(host.url("/api/chat"))
            .json(&serde_json::json!({
                "agent": agent,
                "message": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four twenty-five"
            }))
            .send()
            .unwrap()
    };
    // The first answer spends more than the 40-token budget holds.
    assert_eq!(chat("general").status(), StatusCode::OK);
    let refused = chat("general");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let error = crate::support::error_of(refused);
    assert!(
        error.contains("agent `general` used its token budget of 40/s"),
        "{error}"
    );
    // Another agent has its own budget.
    assert_eq!(chat("coder").status(), StatusCode::OK);
    // The budget refills with time: general is answered again.
    crate::support::poll_until(
        std::time::Duration::from_secs(10),
        "general's budget to refill",
        || (chat("general").status() == StatusCode::OK).then_some(()),
    );
    let samples = scrape(&host);
    let spent = value(
        &samples,
        "llmchat_llm_agent_tokens_total",
        &[("agent", "general"), ("direction", "out")],
    )
    .unwrap_or(0.0);
    assert!(
        spent >= 50.0,
        "general's completion tokens are counted: {spent}"
    );
}
