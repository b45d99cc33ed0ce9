//! `[[trigger.schedule]]` on the real binary: monitor components run once per tick, are
//! skipped rather than overlapped, fail only their own tick, run once per tick across
//! hosts, and publish their samples and alerts. Also the scheduler's invariants: tasks and
//! timers do not grow with queues × concurrency × monitors, and nothing is left at exit.

use std::time::Duration;

use redis::Commands;
use serde_json::Value;

use crate::support::prometheus::{Sample, schedule_ticks as ticks, scrape, sum, value};
use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, get_json, poll_until, route_toml};

const WAIT: Duration = Duration::from_secs(30);

/// A `fixture-monitor` component named `name` doing `action`, with extra config lines.
fn monitor(name: &str, action: &str, extra_config: &str, limits: &str) -> String {
    format!(
        "{}[component.{name}.config]\naction = {action:?}\n{extra_config}\n",
        component_toml(name, &component("fixture-monitor"), limits)
    )
}

fn schedule(component: &str, every: &str, timeout: &str) -> String {
    format!(
        "[[trigger.schedule]]\ncomponent = {component:?}\nevery = {every:?}\ntimeout = {timeout:?}\n"
    )
}

/// Scrapes until `check` holds, and returns that scrape.
fn scrape_until(host: &Host, what: &str, check: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    poll_until(WAIT, what, || {
        let samples = scrape(host);
        check(&samples).then_some(samples)
    })
}

#[test]
fn a_slow_monitor_is_skipped_never_overlapped() {
    // Every 100 ms, each run takes 350 ms: about two ticks of three are skipped. The
    // fixture fails its run if another run of it is going at the same time.
    let manifest = format!(
        "{}{}",
        monitor("slow", "sleep", "sleep_ms = \"350\"", ""),
        schedule("slow", "100ms", "5s")
    );
    let host = Host::start(&manifest);
    let samples = scrape_until(&host, "3 runs of the slow monitor", |s| {
        ticks(s, "slow", "ok") >= 3.0
    });
    assert!(
        ticks(&samples, "slow", "skipped") >= 3.0,
        "ticks during a run must be skipped: {:?}",
        ticks(&samples, "slow", "skipped")
    );
    assert_eq!(
        ticks(&samples, "slow", "failed"),
        0.0,
        "a run overlapped:\n{}",
        host.log()
    );
    assert!(
        host.log()
            .contains("tick skipped: the previous run is still going")
    );
}

#[test]
fn a_monitor_that_bombs_or_spins_fails_only_its_own_tick() {
    let manifest = format!(
        "{}{}{}{}{}{}{}{}",
        monitor("bomb", "bomb", "", "memory_limit = \"16MiB\""),
        schedule("bomb", "150ms", "5s"),
        monitor("spin", "loop", "", ""),
        schedule("spin", "150ms", "200ms"),
        monitor("steady", "ok", "", ""),
        schedule("steady", "50ms", "5s"),
        component_toml("hello", &component("hello"), ""),
        route_toml("/hello", "hello"),
    );
    let host = Host::start(&manifest);
    let samples = scrape_until(&host, "2 failed ticks of bomb and spin", |s| {
        ticks(s, "bomb", "failed") >= 2.0 && ticks(s, "spin", "failed") >= 2.0
    });
    let errors = |component: &str, kind: &str| {
        value(
            &samples,
            "llmchat_component_errors_total",
            &[("component", component), ("kind", kind)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        errors("bomb", "memory") >= 2.0,
        "the bomb hits its memory cap"
    );
    assert!(
        errors("spin", "timeout") >= 2.0,
        "the loop is ended by its timeout"
    );
    assert_eq!(ticks(&samples, "bomb", "ok"), 0.0);
    // Meanwhile the steady monitor keeps its pace and the host keeps serving.
    let steady_before = ticks(&samples, "steady", "ok");
    scrape_until(&host, "5 more steady runs", |s| {
        ticks(s, "steady", "ok") >= steady_before + 5.0
    });
    let samples = scrape(&host);
    assert_eq!(ticks(&samples, "steady", "failed"), 0.0);
    let hello = client().get(host.url("/hello")).send().unwrap();
    assert!(hello.status().is_success());
    let alerts = sum(
        &samples,
        "llmchat_monitor_alerts_total",
        &[("monitor", "bomb")],
    );
    assert!(alerts >= 2.0, "a failed tick raises an alert: {alerts}");
    let history: Value = get_json(&host.url("/dashboard/history"));
    let messages: Vec<&str> = history["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("memory limit")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("timed out")),
        "{messages:?}"
    );
}

#[test]
fn samples_and_alerts_of_a_report_are_published() {
    let manifest = format!(
        "{}{}",
        monitor("alarm", "alert", "", ""),
        schedule("alarm", "50ms", "5s")
    );
    let host = Host::start(&manifest);
    let samples = scrape_until(&host, "an alert of the alarm monitor", |s| {
        sum(
            s,
            "llmchat_monitor_alerts_total",
            &[("monitor", "alarm"), ("severity", "critical")],
        ) >= 1.0
    });
    let published: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == "llmchat_monitor_sample"
                && s.labels.iter().any(|(k, v)| k == "monitor" && v == "alarm")
        })
        .collect();
    assert!(!published.is_empty(), "no sample of the alarm monitor");
    assert!(
        published.iter().any(|s| s.labels.len() > 2),
        "the fixture's own label is kept: {published:?}"
    );
    assert!(host.log().contains("alert: fixture alert"));
}

#[test]
fn two_hosts_on_one_redis_run_each_tick_exactly_once() {
    let redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\n{}{}",
        redis.url(),
        monitor("counter", "count", "", ""),
        schedule("counter", "50ms", "5s")
    );
    let a = Host::start(&manifest);
    let b = Host::start(&manifest);
    let runs = |h: &Host| ticks(&scrape(h), "counter", "ok");
    poll_until(WAIT, "40 ticks run across both hosts", || {
        (runs(&a) + runs(&b) >= 40.0).then_some(())
    });
    let (sa, sb) = (scrape(&a), scrape(&b));
    let (a_status, _) = a.terminate_and_log();
    let (b_status, _) = b.terminate_and_log();
    assert!(a_status.success() && b_status.success());
    // The fixture fails a run that finds its tick's counter already at 1.
    assert_eq!(
        ticks(&sa, "counter", "failed") + ticks(&sb, "counter", "failed"),
        0.0
    );
    assert!(
        ticks(&sa, "counter", "elsewhere") + ticks(&sb, "counter", "elsewhere") >= 10.0,
        "both hosts contended for the ticks"
    );
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys("llmchat:kv:counter:tick:*").unwrap();
    assert!(keys.len() >= 40, "{} ticks recorded", keys.len());
    for key in &keys {
        let n: i64 = conn.get(key).unwrap();
        assert_eq!(n, 1, "{key} ran {n} times");
    }
    // Consecutive ticks, none missing between the first and the last.
    let mut times: Vec<u64> = keys
        .iter()
        .map(|k| k.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    times.sort_unstable();
    let span = (times[times.len() - 1] - times[0]) / 50 + 1;
    assert!(
        times.len() as u64 >= span * 9 / 10,
        "{} of {span} ticks ran",
        times.len()
    );
}

/// A manifest of `queues` queues × `concurrency` and `monitors` monitors on `redis`.
fn sized_manifest(redis: &RedisServer, queues: usize, concurrency: u32, monitors: usize) -> String {
    let mut m = format!(
        "[redis]\nurl = {:?}\n{}",
        redis.url(),
        component_toml("proc", &component("fixture-processor"), "")
    );
    for q in 0..queues {
        m += &format!(
            "[[trigger.queue]]\nqueue = \"q{q}\"\ncomponent = \"proc\"\nconcurrency = {concurrency}\n"
        );
    }
    for i in 0..monitors {
        m += &monitor(&format!("m{i}"), "ok", "", "");
        m += &schedule(&format!("m{i}"), "1s", "5s");
    }
    m
}

/// The fewest alive tasks and armed timers over several scrapes (a tick may be running
/// during one of them).
fn idle_tasks_and_timers(host: &Host) -> (f64, f64) {
    let mut least = (f64::MAX, f64::MAX);
    for _ in 0..15 {
        let s = scrape(host);
        let tasks = value(&s, "llmchat_tokio_alive_tasks", &[]).expect("tasks gauge");
        let timers = value(&s, "llmchat_timers_armed", &[]).expect("timers gauge");
        least = (least.0.min(tasks), least.1.min(timers));
        std::thread::sleep(Duration::from_millis(70));
    }
    least
}

#[test]
fn tasks_and_timers_do_not_grow_with_queues_concurrency_and_monitors() {
    let (small_redis, large_redis) = (RedisServer::start(), RedisServer::start());
    let small = Host::start(&sized_manifest(&small_redis, 3, 5, 2));
    let large = Host::start(&sized_manifest(&large_redis, 20, 50, 20));
    // Both have run their monitors and queues' maintenance at least once.
    for host in [&small, &large] {
        scrape_until(host, "a tick of every monitor", |s| {
            ticks(s, "m1", "ok") >= 1.0
        });
    }
    let (small_tasks, small_timers) = idle_tasks_and_timers(&small);
    let (large_tasks, large_timers) = idle_tasks_and_timers(&large);
    eprintln!(
        "idle: 3×5 + 2 monitors: {small_tasks} tasks, {small_timers} timers; \
         20×50 + 20 monitors: {large_tasks} tasks, {large_timers} timers"
    );
    assert!(
        (large_tasks - small_tasks).abs() <= 2.0,
        "tasks: {small_tasks} for 3×5 + 2 monitors, {large_tasks} for 20×50 + 20 monitors"
    );
    assert!(
        (large_timers - small_timers).abs() <= 2.0,
        "timers: {small_timers} for 3×5 + 2 monitors, {large_timers} for 20×50 + 20 monitors"
    );
    let entries = |h: &Host| value(&scrape(h), "llmchat_scheduler_entries", &[]).unwrap();
    // One entry per monitor, plus the same fixed duties on both.
    assert_eq!(entries(&large) - entries(&small), 18.0);
}

#[test]
fn after_sigterm_no_task_is_left() {
    let redis = RedisServer::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\n{}{}{}{}[[trigger.queue]]\nqueue = \"work\"\ncomponent = \"proc\"\n",
        redis.url(),
        monitor("steady", "ok", "", ""),
        schedule("steady", "50ms", "5s"),
        component_toml("hello", &component("hello"), ""),
        route_toml("/hello", "hello"),
    ) + &component_toml("proc", &component("fixture-processor"), "");
    let host = Host::start(&manifest);
    for _ in 0..20 {
        assert!(
            client()
                .get(host.url("/hello"))
                .send()
                .unwrap()
                .status()
                .is_success()
        );
    }
    scrape_until(&host, "monitor runs", |s| ticks(s, "steady", "ok") >= 3.0);
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("tasks_left=0"),
        "tasks were left after shutdown:\n{log}"
    );
}

#[test]
fn the_dashboard_history_stays_bounded() {
    let manifest = format!(
        "[dashboard]\nsample_every = \"10ms\"\nsamples = 20\n{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/hello", "hello"),
    );
    let host = Host::start(&manifest);
    let history = |h: &Host| -> Value { get_json(&h.url("/dashboard/history")) };
    let first = poll_until(WAIT, "a full history", || {
        let h = history(&host);
        (h["samples"].as_array().unwrap().len() == 20).then_some(h)
    });
    assert_eq!(first["capacity"], 20);
    let oldest = first["samples"][0]["t_ms"].as_u64().unwrap();
    // Many more samples later, still 20, the oldest ones dropped.
    let later = poll_until(WAIT, "the window to move past 3 full histories", || {
        let h = history(&host);
        (h["samples"][0]["t_ms"].as_u64().unwrap() > oldest + 600).then_some(h)
    });
    assert_eq!(later["samples"].as_array().unwrap().len(), 20);
}

#[test]
fn the_health_monitor_reports_redis_the_queues_and_the_llm_and_alerts_on_thresholds() {
    let redis = RedisServer::start();
    let llm = crate::support::fake_openai::FakeOpenAi::start();
    let manifest = format!(
        "[redis]\nurl = {:?}\n\
         [llm]\nprovider = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"LLMCHAT_TEST_KEY\"\nmodel = \"fake-model\"\n\
         {}[component.health.config]\ndead_warn = \"1\"\n\
         [[trigger.schedule]]\ncomponent = \"health\"\nevery = \"100ms\"\ntimeout = \"5s\"\n\
         {}[[trigger.queue]]\nqueue = \"work\"\ncomponent = \"proc\"\nmax_attempts = 1\n",
        redis.url(),
        llm.base_url,
        component_toml("health", &component("health"), ""),
        component_toml("proc", &component("fixture-processor"), ""),
    );
    let host = Host::start_with_env(
        &manifest,
        &[("LLMCHAT_TEST_KEY", crate::support::fake_openai::API_KEY)],
    );
    // One job that fails for good: one dead job, the dead_warn threshold.
    let enqueued = client()
        .post(host.url("/admin/queues/work/jobs"))
        .json(&serde_json::json!({ "payload": { "action": "fail" } }))
        .send()
        .unwrap();
    assert!(
        enqueued.status().is_success(),
        "{}",
        enqueued.text().unwrap()
    );
    let health = |s: &[Sample], sample: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("monitor", "health"), ("sample", sample)];
        labels.extend_from_slice(extra);
        value(s, "llmchat_monitor_sample", &labels)
    };
    let samples = scrape_until(&host, "health samples with one dead job", |s| {
        health(s, "queue_dead", &[("queue", "work")]) == Some(1.0)
    });
    assert_eq!(health(&samples, "redis_up", &[]), Some(1.0));
    let latency = health(&samples, "redis_latency_ms", &[]).expect("redis latency");
    assert!(latency > 0.0 && latency < 500.0, "{latency}");
    assert_eq!(
        health(&samples, "llm_up", &[]),
        Some(1.0),
        "GET /v1/models answered"
    );
    assert_eq!(
        health(&samples, "queue_waiting", &[("queue", "work")]),
        Some(0.0)
    );
    let samples = scrape_until(&host, "the dead-job warning", |s| {
        sum(
            s,
            "llmchat_monitor_alerts_total",
            &[("monitor", "health"), ("severity", "warning")],
        ) >= 1.0
    });
    assert_eq!(
        sum(
            &samples,
            "llmchat_monitor_alerts_total",
            &[("monitor", "health"), ("severity", "critical")]
        ),
        0.0,
        "nothing is down:\n{}",
        host.log()
    );
    assert!(host.log().contains("dead jobs"), "{}", host.log());
    // The llm goes away: the next ticks say so, critically.
    drop(llm);
    scrape_until(&host, "llm_up = 0 and a critical alert", |s| {
        health(s, "llm_up", &[]) == Some(0.0)
            && sum(
                s,
                "llmchat_monitor_alerts_total",
                &[("monitor", "health"), ("severity", "critical")],
            ) >= 1.0
    });
}
