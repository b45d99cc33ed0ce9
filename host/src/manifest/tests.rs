//! Manifest parsing and validation: every bad value names its table and field.
use super::*;
use std::time::Duration;

fn parse_in(dir: &Path, text: &str) -> Result<Manifest> {
    Manifest::parse(text, &dir.join("llmchat.toml"))
}

fn dir_with_wasm() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.wasm"), b"\0asm").unwrap();
    dir
}

fn err(dir: &Path, text: &str) -> String {
    format!("{:#}", parse_in(dir, text).unwrap_err())
}

#[test]
fn full_manifest_parses_with_defaults() {
    let dir = dir_with_wasm();
    let m = parse_in(
        dir.path(),
        r#"
        [component.chat]
        source = "a.wasm"
        memory_limit = "32MiB"
        [component.chat.config]
        greeting = "hi"
        agents = [{ id = "general" }]
        [[trigger.http]]
        route = "/api/..."
        component = "chat"
        "#,
    )
    .unwrap();
    let chat = &m.components["chat"];
    assert_eq!(chat.memory_limit, ByteSize::mib(32));
    assert_eq!(chat.timeout, Duration::from_secs(30));
    assert_eq!(chat.source, dir.path().join("a.wasm"));
    assert_eq!(chat.config["greeting"], "hi");
    assert_eq!(chat.config["agents"], r#"[{"id":"general"}]"#);
    assert_eq!(
        m.llm.providers["echo"],
        LlmSettings::Echo { word_delay: None }
    );
}

#[test]
fn unknown_field_is_named() {
    let dir = dir_with_wasm();
    let e = err(
        dir.path(),
        "[component.chat]\nsource = \"a.wasm\"\nmemory = \"1MiB\"\n",
    );
    assert!(
        e.contains("unknown field `memory`") && e.contains("llmchat.toml"),
        "{e}"
    );
}

#[test]
fn bad_size_and_duration_are_named() {
    let dir = dir_with_wasm();
    let e = err(
        dir.path(),
        "[component.c]\nsource = \"a.wasm\"\nmemory_limit = \"64 parsecs\"\n",
    );
    assert!(
        e.contains("memory_limit") && e.contains("64 parsecs"),
        "{e}"
    );
    let e = err(
        dir.path(),
        "[component.c]\nsource = \"a.wasm\"\ntimeout = \"soon\"\n",
    );
    assert!(e.contains("timeout") && e.contains("soon"), "{e}");
}

#[test]
fn missing_source_file_is_named() {
    let dir = dir_with_wasm();
    let e = err(dir.path(), "[component.c]\nsource = \"nope.wasm\"\n");
    assert!(
        e.contains("[component.c]") && e.contains("source") && e.contains("nope.wasm"),
        "{e}"
    );
}

#[test]
fn trigger_must_name_a_declared_component() {
    let dir = dir_with_wasm();
    let e = err(
        dir.path(),
        "[[trigger.http]]\nroute = \"/x\"\ncomponent = \"ghost\"\n",
    );
    assert!(e.contains("ghost") && e.contains("trigger.http"), "{e}");
}

#[test]
fn routes_are_checked() {
    let dir = dir_with_wasm();
    let base = "[component.c]\nsource = \"a.wasm\"\n";
    for (route, want) in [("x", "must start with '/'"), ("/a/.../b", "last segment")] {
        let e = err(
            dir.path(),
            &format!("{base}[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"c\"\n"),
        );
        assert!(e.contains(want), "{e}");
    }
    let dup = format!(
        "{base}[[trigger.http]]\nroute = \"/a\"\ncomponent = \"c\"\n[[trigger.http]]\nroute = \"/a\"\ncomponent = \"c\"\n"
    );
    assert!(err(dir.path(), &dup).contains("declared twice"));
}

#[test]
fn routes_on_the_hosts_own_paths_are_refused_naming_them() {
    let dir = dir_with_wasm();
    let base = "[component.c]\nsource = \"a.wasm\"\n";
    for (route, path) in [
        ("/admin", "/admin"),
        ("/admin/...", "/admin"),
        ("/admin/queues", "/admin"),
        ("/metrics", "/metrics"),
        ("/health", "/health"),
        ("/ready", "/ready"),
        ("/dashboard/...", "/dashboard"),
    ] {
        let e = err(
            dir.path(),
            &format!("{base}[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"c\"\n"),
        );
        let want = format!(
            "route {route:?} of component `c` is reserved for the host's own endpoint {path}"
        );
        assert!(e.contains(&want), "{route}: {e}");
    }
    let catch_all = format!("{base}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n");
    assert_eq!(
        parse_in(dir.path(), &catch_all)
            .unwrap()
            .triggers
            .http
            .len(),
        1
    );
}

#[test]
fn limits_are_range_checked() {
    let dir = dir_with_wasm();
    let e = err(
        dir.path(),
        "[component.c]\nsource = \"a.wasm\"\nmax_instances = 0\n",
    );
    assert!(e.contains("max_instances"), "{e}");
    let e = err(
        dir.path(),
        "[component.c]\nsource = \"a.wasm\"\nmemory_limit = \"16KiB\"\n",
    );
    assert!(e.contains("memory_limit"), "{e}");
}

#[test]
fn max_resources_defaults_to_ten_thousand_and_is_range_checked() {
    let dir = dir_with_wasm();
    let m = parse_in(dir.path(), "[component.c]\nsource = \"a.wasm\"\n").unwrap();
    assert_eq!(m.components["c"].max_resources, 10_000);
    let m = parse_in(
        dir.path(),
        "[component.c]\nsource = \"a.wasm\"\nmax_resources = 500\n",
    )
    .unwrap();
    assert_eq!(m.components["c"].max_resources, 500);
    let e = err(
        dir.path(),
        "[component.c]\nsource = \"a.wasm\"\nmax_resources = 2000000\n",
    );
    assert!(e.contains("max_resources") && e.contains("2000000"), "{e}");
}

#[test]
fn queue_triggers_parse_with_defaults_and_are_checked() {
    let dir = dir_with_wasm();
    let base = "[component.p]\nsource = \"a.wasm\"\n";
    let m = parse_in(
        dir.path(),
        &format!(
            "{base}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\nbackoff = \"fixed:2s\"\n"
        ),
    )
    .unwrap();
    let t = &m.triggers.queue[0];
    assert_eq!((t.concurrency, t.max_attempts), (5, 3));
    assert_eq!(
        t.backoff,
        crate::manifest::Backoff::Fixed(Duration::from_secs(2))
    );
    for (extra, want) in [
        ("backoff = \"linear:1s\"", "backoff"),
        ("concurrency = 0", "concurrency"),
        ("visibility = \"10ms\"", "visibility"),
        ("queue2 = 1", "unknown field"),
    ] {
        let e = err(
            dir.path(),
            &format!("{base}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n{extra}\n"),
        );
        assert!(e.contains(want), "{extra}: {e}");
    }
    let e = err(
        dir.path(),
        &format!("{base}[[trigger.queue]]\nqueue = \"Bad Name\"\ncomponent = \"p\"\n"),
    );
    assert!(e.contains("queue"), "{e}");
    let twice = format!(
        "{base}[[trigger.queue]]\nqueue = \"q\"\ncomponent = \"p\"\n[[trigger.queue]]\nqueue = \"q\"\ncomponent = \"p\"\n"
    );
    assert!(err(dir.path(), &twice).contains("two triggers"));
}

#[test]
fn retention_and_repeat_entries_parse_and_bad_ones_are_named() {
    let dir = dir_with_wasm();
    let base = "[component.p]\nsource = \"a.wasm\"\n[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n";
    let m = parse_in(
        dir.path(),
        &format!(
            "{base}keep_completed = {{ count = 1000, age = \"1h\" }}\n\
             repeat = [{{ every = \"5m\", payload = {{ kind = \"digest\" }} }}, {{ cron = \"0 3 * * *\", payload = 1 }}]\n"
        ),
    )
    .unwrap();
    let t = &m.triggers.queue[0];
    assert_eq!(t.keep_completed.count, 1000);
    assert_eq!(t.keep_completed.age_ms(), Some(3_600_000));
    assert_eq!(
        t.keep_failed.count, 10_000,
        "dead letters: today's bound by default"
    );
    assert_eq!(t.repeat.len(), 2);
    assert_eq!(t.repeat[0].payload, r#"{"kind":"digest"}"#);
    assert!(
        t.repeat[0].key.starts_with("repeat:jobs:"),
        "{}",
        t.repeat[0].key
    );
    assert_ne!(t.repeat[0].key, t.repeat[1].key);
    let defaults = parse_in(dir.path(), base).unwrap();
    assert!(
        !defaults.triggers.queue[0].keep_completed.keeps(),
        "nothing kept by default"
    );
    for (extra, want) in [
        (
            "keep_completed = { count = 2000000 }",
            "keep_completed`: count 2000000 is above",
        ),
        (
            "keep_completed = { count = 5, age = \"0s\" }",
            "age must be greater than zero",
        ),
        (
            "keep_failed = { count = 0 }",
            "keep_failed`: count must be at least 1",
        ),
        (
            "keep_completed = { count = 5, ttl = \"1h\" }",
            "unknown field `ttl`",
        ),
        (
            "repeat = [{ payload = 1 }]",
            "`every` or `cron` is required",
        ),
        (
            "repeat = [{ every = \"1s\", cron = \"* * * * *\", payload = 1 }]",
            "give one, not both",
        ),
        (
            "repeat = [{ cron = \"61 * * * *\", payload = 1 }]",
            "not a cron expression",
        ),
        ("repeat = [{ every = \"1s\" }]", "missing field `payload`"),
        (
            "max_payload = \"8B\"\nrepeat = [{ every = \"1s\", payload = \"a long string\" }]",
            "above the queue's max_payload",
        ),
        (
            "repeat = [{ every = \"1s\", payload = 1 }, { every = \"1s\", payload = 1 }]",
            "entry 2: the same schedule and payload twice",
        ),
    ] {
        let e = err(dir.path(), &format!("{base}{extra}\n"));
        assert!(e.contains(want), "{extra}: {e}");
    }
}

#[test]
fn redis_settings_are_checked() {
    let dir = dir_with_wasm();
    let e = err(dir.path(), "[redis]\nurl = \"http://x\"\n");
    assert!(e.contains("url"), "{e}");
    let m = parse_in(
        dir.path(),
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\nconnections = 3\n",
    )
    .unwrap();
    assert_eq!(m.redis.connections, 3);
}

#[test]
fn connection_limits_have_defaults_and_name_bad_values() {
    let dir = dir_with_wasm();
    let m = parse_in(dir.path(), "").unwrap();
    assert_eq!(m.http.header_read_timeout.0, Duration::from_secs(10));
    assert_eq!(m.http.idle_timeout.0, Duration::from_secs(60));
    assert_eq!(m.http.max_connections, 10_000);
    let m = parse_in(
        dir.path(),
        "[http]\nheader_read_timeout = \"2s\"\nidle_timeout = \"500ms\"\nmax_connections = 64\n",
    )
    .unwrap();
    assert_eq!(m.http.header_read_timeout.0, Duration::from_secs(2));
    assert_eq!(m.http.idle_timeout.0, Duration::from_millis(500));
    assert_eq!(m.http.max_connections, 64);
    let cases = [
        (
            "header_read_timeout = \"0s\"",
            "field `header_read_timeout`",
        ),
        ("header_read_timeout = \"soon\"", "soon"),
        ("idle_timeout = 30", "needs a unit"),
        ("idle_timeout = \"0ms\"", "field `idle_timeout`"),
        (
            "max_connections = 0",
            "field `max_connections`: 0 is outside",
        ),
        ("max_conns = 5", "unknown field `max_conns`"),
    ];
    for (line, expected) in cases {
        let e = err(dir.path(), &format!("[http]\n{line}\n"));
        assert!(
            e.contains(expected) && e.contains("llmchat.toml"),
            "{line}: {e}"
        );
    }
}

#[test]
fn tls_files_are_relative_to_the_manifest_and_h2c_is_off_by_default() {
    let dir = dir_with_wasm();
    let m = parse_in(dir.path(), "").unwrap();
    assert_eq!(m.http.tls, None);
    assert!(!m.http.h2c);
    let m = parse_in(
        dir.path(),
        "[http]\ntls = { cert = \"tls/cert.pem\", key = \"/etc/llmchat/key.pem\" }\nh2c = true\n",
    )
    .unwrap();
    let tls = m.http.tls.expect("tls");
    assert_eq!(tls.cert, dir.path().join("tls/cert.pem"));
    assert_eq!(tls.key, Path::new("/etc/llmchat/key.pem"));
    assert!(m.http.h2c);
    for (table, expected) in [
        ("tls = { cert = \"c.pem\" }", "missing field `key`"),
        (
            "tls = { cert = \"c.pem\", key = \"k.pem\", ca = \"x\" }",
            "unknown field `ca`",
        ),
    ] {
        let e = err(dir.path(), &format!("[http]\n{table}\n"));
        assert!(e.contains(expected), "{table}: {e}");
    }
}

#[test]
fn openai_provider_needs_base_url_and_model() {
    let dir = dir_with_wasm();
    let e = err(dir.path(), "[llm]\nprovider = \"openai\"\nmodel = \"m\"\n");
    assert!(e.contains("base_url"), "{e}");
    let m = parse_in(
        dir.path(),
        "[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\napi_key_env = \"K\"\n",
    )
    .unwrap();
    assert!(matches!(
        m.llm.providers["openai"],
        LlmSettings::Openai { .. }
    ));
}

#[test]
fn rate_limits_and_schedules_name_what_is_wrong() {
    let dir = dir_with_wasm();
    let base = "[component.a]\nsource = \"a.wasm\"\n";
    let cases = [
        (
            "[[trigger.http]]\nroute = \"/a\"\ncomponent = \"a\"\nrate_limit = \"lots\"\n",
            "invalid rate \"lots\"",
        ),
        (
            "[[trigger.http]]\nroute = \"/a\"\ncomponent = \"a\"\nrate_limit = \"5/s\"\nrate_limit_key = \"cookie\"\n",
            "rate_limit_key",
        ),
        (
            "[[trigger.http]]\nroute = \"/a\"\ncomponent = \"a\"\nburst = 5\n",
            "need a `rate_limit`",
        ),
        (
            "[[trigger.schedule]]\ncomponent = \"a\"\ncron = \"not cron\"\n",
            "field `cron`",
        ),
        (
            "[[trigger.schedule]]\ncomponent = \"a\"\nevery = \"1s\"\ncron = \"0 3 * * *\"\n",
            "give one, not both",
        ),
        (
            "[[trigger.schedule]]\ncomponent = \"a\"\nevery = \"1ms\"\n",
            "below the minimum",
        ),
        ("[dashboard]\nsamples = 0\n", "field `samples`"),
    ];
    for (extra, expected) in cases {
        let e = err(dir.path(), &format!("{base}{extra}"));
        assert!(e.contains(expected), "{extra}: {e}");
    }
    let ok = parse_in(
        dir.path(),
        &format!("{base}[[trigger.http]]\nroute = \"/a\"\ncomponent = \"a\"\nrate_limit = \"100/min\"\nrate_limit_key = \"header:x-api-key\"\n"),
    )
    .unwrap();
    assert_eq!(ok.triggers.http[0].rate_limit.unwrap().count, 100);
}

#[test]
fn the_redis_prefix_defaults_to_llmchat_and_is_a_plain_name() {
    let dir = dir_with_wasm();
    assert_eq!(parse_in(dir.path(), "").unwrap().redis.prefix, "llmchat");
    let m = parse_in(dir.path(), "[redis]\nprefix = \"myapp:staging\"\n").unwrap();
    assert_eq!(m.redis.prefix, "myapp:staging");
    for bad in ["", "a{b}", "a b", "x*"] {
        let e = err(dir.path(), &format!("[redis]\nprefix = {bad:?}\n"));
        assert!(
            e.contains("in [redis]: field `prefix`: ") && e.contains("must be 1 to 64 of"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn redis_tls_files_are_anchored_at_the_manifest_and_must_exist_and_pair_up() {
    let dir = dir_with_wasm();
    std::fs::write(dir.path().join("ca.pem"), b"").unwrap();
    let m = parse_in(dir.path(), "[redis]\nca_file = \"ca.pem\"\n").unwrap();
    assert_eq!(m.redis.ca_file, Some(dir.path().join("ca.pem")));
    assert!(m.redis.has_tls_files());
    let e = err(dir.path(), "[redis]\nca_file = \"nope.pem\"\n");
    assert!(
        e.contains("in [redis]: field `ca_file`: file `") && e.contains("nope.pem` does not exist"),
        "{e}"
    );
    let e = err(dir.path(), "[redis]\nclient_cert_file = \"ca.pem\"\n");
    assert!(
        e.contains("`client_cert_file` and `client_key_file` go together"),
        "{e}"
    );
}

#[test]
fn redis_url_takes_one_node_or_a_clusters_seeds_and_bad_combinations_are_named() {
    let dir = dir_with_wasm();
    let m = parse_in(
        dir.path(),
        "[redis]\nurl = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]\nreplica_acks = 1\n",
    )
    .unwrap();
    assert_eq!(
        m.redis.url.as_deref(),
        Some("redis://10.0.0.1:6379,redis://10.0.0.2:6379")
    );
    assert_eq!(m.redis.mode, RedisMode::Auto);
    assert_eq!(m.redis.replica_acks, 1);
    assert_eq!(
        redis_seeds(" redis://a:1 ,, redis://b:2"),
        ["redis://a:1", "redis://b:2"]
    );
    let cases = [
        (
            "[redis]\nurl = [\"redis://a:1\", \"redis://b:2\"]\nmode = \"single\"\n",
            "`mode = \"single\"` takes one URL, and `url` names 2",
        ),
        (
            "[redis]\nurl = [\"redis://a:1\", \"unix:///tmp/r.sock\"]\n",
            "seed nodes are redis:// or rediss:// URLs, not unix sockets",
        ),
        (
            "[redis]\nurl = [\"redis://a:1\", \"http://b:2\"]\n",
            "\"http://b:2\" must start with redis://, rediss:// or unix://",
        ),
        ("[redis]\nurl = []\n", "field `url` is empty"),
        ("[redis]\nmode = \"sharded\"\n", "unknown variant `sharded`"),
        (
            "[redis]\nreplica_acks = 1\nreplica_timeout = \"5s\"\ncommand_timeout = \"5s\"\n",
            "`replica_timeout` (5s) must be shorter than `command_timeout` (5s)",
        ),
    ];
    for (text, expected) in cases {
        let e = err(dir.path(), text);
        assert!(e.contains(expected), "{text}: {e}");
    }
}
