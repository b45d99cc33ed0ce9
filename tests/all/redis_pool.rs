//! The one Redis pool: a hard cap on commands in flight, a bounded wait that ends in a clear
//! `unavailable` error, and HTTP 503 for requests while Redis is gone.

use std::sync::Arc;
use std::time::Duration;

use llmchat_host::manifest::RedisSettings;
use llmchat_host::redis::{RedisError, RedisPool};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::redis::RedisServer;
use crate::support::{Host, client, default_manifest, error_of};

fn settings(max_in_flight: u32, acquire_timeout: &str) -> RedisSettings {
    toml::from_str(&format!(
        "max_in_flight = {max_in_flight}\nacquire_timeout = \"{acquire_timeout}\""
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_commands_never_exceed_the_cap_and_waiting_ends_in_unavailable() {
    let redis = RedisServer::start();
    let pool = Arc::new(RedisPool::new(&settings(4, "150ms"), &redis.url()).unwrap());
    pool.ping().await.unwrap();
    // 40 slow commands at once: each holds its slot for 100 ms.
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(|mut c| async move {
                    llmchat_host::timers::sleep(Duration::from_millis(100)).await;
                    redis::cmd("PING").query_async::<String>(&mut c).await
                })
                .await
            })
        })
        .collect();
    let mut peak = 0;
    while calls.iter().any(|c| !c.is_finished()) {
        let stats = pool.stats();
        assert!(stats.in_flight <= stats.max_in_flight, "{stats:?}");
        peak = peak.max(stats.in_flight);
        llmchat_host::timers::sleep(Duration::from_millis(5)).await;
    }
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(RedisError::Unavailable(m)) => assert!(m.contains("command slots"), "{m}"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(peak, 4, "the cap was reached");
    assert!(
        (4..40).contains(&ok),
        "some waited in time, the rest got `unavailable`: {ok} ok"
    );
    let stats = pool.stats();
    assert_eq!((stats.in_flight, stats.waiters), (0, 0));
    assert_eq!(stats.timeouts, 40 - ok);
}

#[test]
fn requests_get_503_while_redis_is_gone_and_work_again_when_it_returns() {
    let mut redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\nacquire_timeout = \"100ms\"\ncommand_timeout = \"500ms\"\n{}",
        redis.url(),
        default_manifest()
    );
    let host = Host::start(&manifest);
    let chat = || {
        client()
            .post(host.url("/api/chat"))
            .json(&json!({"agent": "general", "message": "hi", "conversation_id": "c"}))
            .send()
            .unwrap()
    };
    assert_eq!(chat().status(), StatusCode::OK);

    redis.stop();
    let response = chat();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(response).contains("unavailable"));
    assert_eq!(
        client()
            .get(host.url("/api/agents"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK,
        "what needs no Redis still works"
    );

    redis.restart();
    crate::support::poll_until(Duration::from_secs(20), "chat to work again", || {
        (chat().status() == StatusCode::OK).then_some(())
    });
}
