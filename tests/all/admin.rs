//! The admin API and the `llmchat enqueue` / `queues` / `dead` commands, against the real
//! binary on the embedded memory backend: jobs run by `fixture-processor`, dead letters
//! retried and purged, clear errors for bad input, and the token and loopback rules.

use std::process::{Command, Output};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{Value, json};

use crate::support::{Host, client, component, component_toml, error_of, poll_until, route_toml};

const WAIT: Duration = Duration::from_secs(20);

/// Queue `jobs` processed by `fixture-processor` (component `p`), and `hello` behind a
/// catch-all `/...` route that must not shadow the admin API.
fn manifest() -> String {
    format!(
        "{}{}{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\nbackoff = \"fixed:10ms\"\n\
         max_attempts = 2\nmax_payload = \"1KiB\"\n",
        component_toml("p", &component("fixture-processor"), ""),
        component_toml("hello", &component("hello"), ""),
        route_toml("/...", "hello"),
    )
}

fn enqueue(host: &Host, body: Value) -> reqwest::blocking::Response {
    client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&body)
        .send()
        .expect("POST jobs")
}

fn enqueue_id(host: &Host, payload: Value) -> String {
    let response = enqueue(host, json!({ "payload": payload }));
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().unwrap();
    assert_eq!(body["duplicate"], false);
    body["id"].as_str().expect("an id").to_string()
}

fn get_json(host: &Host, path: &str) -> Value {
    let response = client().get(host.url(path)).send().expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().expect("a JSON body")
}

/// The `jobs` row of `GET /admin/queues`.
fn stats(host: &Host) -> Value {
    get_json(host, "/admin/queues")["queues"][0].clone()
}

fn wait_for_stat(host: &Host, name: &str, value: u64) {
    poll_until(WAIT, &format!("{name} == {value}"), || {
        (stats(host)[name] == value).then_some(())
    });
}

fn dead_jobs(host: &Host) -> Vec<Value> {
    get_json(host, "/admin/queues/jobs/dead")["jobs"]
        .as_array()
        .expect("a jobs array")
        .clone()
}

/// Runs `llmchat ARGS --host BASE`, with `LLMCHAT_ADMIN_TOKEN` only when `token` is given.
pub(crate) fn cli(base: &str, args: &[&str], token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmchat"));
    command
        .args(args)
        .args(["--host", base])
        .env_remove("LLMCHAT_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("LLMCHAT_ADMIN_TOKEN", token);
    }
    command.output().expect("running llmchat")
}

/// stdout of a command that must succeed.
pub(crate) fn cli_ok(base: &str, args: &[&str], token: Option<&str>) -> String {
    let out = cli(base, args, token);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "llmchat {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// (exit code, stderr) of a command that must fail.
pub(crate) fn cli_err(base: &str, args: &[&str], token: Option<&str>) -> (i32, String) {
    let out = cli(base, args, token);
    assert!(!out.status.success(), "llmchat {args:?} should fail");
    let code = out.status.code().expect("an exit code");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn enqueued_jobs_are_processed_and_counted() {
    let host = Host::start(&manifest());
    assert!(
        host.log()
            .contains("admin API: loopback clients only (set LLMCHAT_ADMIN_TOKEN"),
        "{}",
        host.log()
    );
    enqueue_id(&host, json!({ "action": "ok" }));
    wait_for_stat(&host, "processed", 1);

    let all = get_json(&host, "/admin/queues");
    assert_eq!(all["backend"], "memory");
    let row = &all["queues"][0];
    assert_eq!(
        (&row["queue"], &row["component"]),
        (&json!("jobs"), &json!("p"))
    );
    assert_eq!(row["concurrency"], 5);
    for count in [
        "waiting",
        "in_flight",
        "delayed",
        "dead",
        "failed",
        "retried",
    ] {
        assert_eq!(row[count], 0, "{count}");
    }

    let first = enqueue(
        &host,
        json!({ "payload": { "action": "ok" }, "dedup_key": "k", "delay": "1h" }),
    );
    let first: Value = first.json().unwrap();
    let second: Value = enqueue(&host, json!({ "payload": 1, "dedup_key": "k" }))
        .json()
        .unwrap();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["duplicate"], true);
    assert_eq!(stats(&host)["delayed"], 1);
}

#[test]
fn failed_jobs_are_dead_lettered_then_retried_or_purged() {
    let host = Host::start(&manifest());
    let id = enqueue_id(&host, json!({ "action": "fail" }));
    wait_for_stat(&host, "dead", 1);
    let dead = dead_jobs(&host);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], id.as_str());
    assert_eq!(dead[0]["payload"], json!({ "action": "fail" }));
    assert_eq!(dead[0]["error"], "permanent failure requested");
    assert_eq!(
        (&dead[0]["attempt"], &dead[0]["max_attempts"]),
        (&json!(1), &json!(2))
    );

    let retry = |body: Value| {
        client()
            .post(host.url("/admin/queues/jobs/dead/retry"))
            .json(&body)
            .send()
            .expect("POST retry")
    };
    let one: Value = retry(json!({ "id": id })).json().unwrap();
    assert_eq!(one, json!({ "retried": 1 }));
    // It fails again, for good.
    wait_for_stat(&host, "failed", 2);
    let missing = retry(json!({ "id": "no-such-job" }));
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(error_of(missing).contains("no-such-job"));
    let neither = retry(json!({}));
    assert_eq!(neither.status(), StatusCode::BAD_REQUEST);

    enqueue_id(&host, json!({ "action": "retry" }));
    wait_for_stat(&host, "dead", 2);
    assert_eq!(
        stats(&host)["retried"],
        1,
        "one retry before its second attempt failed"
    );
    let all: Value = retry(json!({ "all": true })).json().unwrap();
    assert_eq!(all, json!({ "retried": 2 }));
    wait_for_stat(&host, "failed", 5);
    wait_for_stat(&host, "dead", 2);

    let limited = get_json(&host, "/admin/queues/jobs/dead?limit=1");
    assert_eq!(limited["jobs"].as_array().unwrap().len(), 1);
    let purged = client()
        .delete(host.url("/admin/queues/jobs/dead"))
        .send()
        .unwrap();
    assert_eq!(purged.json::<Value>().unwrap(), json!({ "purged": 2 }));
    assert!(dead_jobs(&host).is_empty());
    assert_eq!(stats(&host)["dead"], 0);
}

#[test]
fn bad_admin_requests_get_clear_errors_and_store_nothing() {
    let host = Host::start(&manifest());
    let http = client();
    for (method, path) in [
        ("POST", "/admin/queues/nope/jobs"),
        ("GET", "/admin/queues/nope/dead"),
        ("DELETE", "/admin/queues/nope/dead"),
        ("POST", "/admin/queues/nope/dead/retry"),
    ] {
        let response = http
            .request(method.parse().unwrap(), host.url(path))
            .body(r#"{"payload": 1, "all": true}"#)
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(error_of(response), "unknown queue `nope`");
    }

    let post = |body: &str| {
        http.post(host.url("/admin/queues/jobs/jobs"))
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let malformed = post(r#"{"payload": "#);
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(malformed).starts_with("invalid request body: EOF while parsing"));
    let missing = post("{}");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(missing).contains("missing field `payload`"));
    let typo = post(r#"{"payload": 1, "dedup": "k"}"#);
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(typo).contains("unknown field `dedup`"));
    let delay = post(r#"{"payload": 1, "delay": "5 parsecs"}"#);
    assert_eq!(delay.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(delay).starts_with("`delay`: invalid duration \"5 parsecs\""));
    let backoff = post(r#"{"payload": 1, "backoff": "linear:1s"}"#);
    assert_eq!(backoff.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(backoff).contains("invalid backoff"));

    let big = json!({ "payload": { "text": "x".repeat(2000) } }).to_string();
    let too_large = post(&big);
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(too_large).contains("the limit of queue `jobs` is 1024"));
    let huge = json!({ "payload": "x".repeat(1 << 20) }).to_string();
    assert_eq!(post(&huge).status(), StatusCode::PAYLOAD_TOO_LARGE);

    let row = stats(&host);
    for count in [
        "waiting",
        "in_flight",
        "delayed",
        "dead",
        "processed",
        "failed",
    ] {
        assert_eq!(row[count], 0, "nothing was stored: {count}");
    }
}

#[test]
fn a_catch_all_component_route_never_sees_admin_paths() {
    let host = Host::start(&manifest());
    let http = client();
    for path in ["/admin", "/admin/", "/admin/nope", "/admin/queues/"] {
        let response = http.get(host.url(path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(error_of(response).starts_with("no admin route"), "{path}");
    }
    let wrong_method = http.post(host.url("/admin/queues")).send().unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    for path in ["/administrator", "/x/admin/queues"] {
        let response = http.get(host.url(path)).send().unwrap();
        assert_eq!(response.text().unwrap(), "Hello, world!\n", "{path}");
    }
}

#[test]
fn cli_commands_drive_a_running_host() {
    let host = Host::start(&manifest());
    let base = host.base.as_str();

    let id = cli_ok(base, &["enqueue", "jobs", r#"{"action":"ok"}"#], None);
    let id = id.trim();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "a job id: {id:?}"
    );
    wait_for_stat(&host, "processed", 1);
    let table = cli_ok(base, &["queues"], None);
    let mut lines = table.lines();
    assert_eq!(lines.next(), Some("backend: memory"));
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "QUEUE",
            "COMPONENT",
            "WAITING",
            "IN-FLIGHT",
            "DELAYED",
            "DEAD",
            "PROCESSED",
            "FAILED",
            "RETRIED"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["jobs", "p", "0", "0", "0", "0", "1", "0", "0"]);

    let delayed = [
        "enqueue",
        "jobs",
        "{\"action\":\"ok\"}",
        "--delay",
        "1h",
        "--dedup",
        "d",
    ];
    let first = cli_ok(base, &delayed, None);
    let again = cli_ok(base, &delayed, None);
    assert_eq!(again.trim(), format!("{} (duplicate)", first.trim()));

    let failing = [
        "enqueue",
        "jobs",
        r#"{"action":"fail"}"#,
        "--max-attempts",
        "1",
    ];
    let dead_id = cli_ok(base, &failing, None).trim().to_string();
    wait_for_stat(&host, "dead", 1);
    let listing = cli_ok(base, &["dead", "jobs"], None);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&dead_id))
        .unwrap_or_else(|| panic!("the dead job is listed:\n{listing}"));
    assert!(
        line.contains("1/1") && line.contains("permanent failure requested"),
        "{line}"
    );
    assert!(line.contains(r#"{"action":"fail"}"#), "{line}");

    let retried = cli_ok(base, &["dead", "jobs", "--retry", &dead_id], None);
    assert_eq!(retried.trim(), "retried 1 job");
    wait_for_stat(&host, "failed", 2);
    assert_eq!(
        cli_ok(base, &["dead", "jobs", "--retry-all"], None).trim(),
        "retried 1 job"
    );
    wait_for_stat(&host, "failed", 3);
    wait_for_stat(&host, "dead", 1);
    assert_eq!(
        cli_ok(base, &["dead", "jobs", "--purge"], None).trim(),
        "purged 1 job"
    );
    assert_eq!(
        cli_ok(base, &["dead", "jobs"], None).trim(),
        "no dead jobs in queue `jobs`"
    );

    let (code, stderr) = cli_err(base, &["enqueue", "nope", "{}"], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("404 Not Found: unknown queue `nope`"),
        "{stderr}"
    );
    let (code, stderr) = cli_err(base, &["dead", "jobs", "--retry", "no-such-job"], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("no dead job `no-such-job`"), "{stderr}");
}

#[test]
fn cli_refuses_bad_json_and_names_an_unreachable_host() {
    // A loopback port nobody listens on any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (code, stderr) = cli_err(&closed, &["enqueue", "jobs", "{\"action\":"], None);
    assert_eq!(code, 2, "bad JSON is refused before any request: {stderr}");
    assert!(
        stderr.contains("the job payload is not valid JSON: EOF while parsing"),
        "{stderr}"
    );

    for args in [
        &["enqueue", "jobs", "{}"][..],
        &["queues"],
        &["dead", "jobs"],
    ] {
        let (code, stderr) = cli_err(&closed, args, None);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(&format!("cannot reach llmchat at {closed}: ")),
            "{stderr}"
        );
        assert!(stderr.contains("Connection refused"), "{stderr}");
    }
}

#[test]
fn a_configured_token_is_required_from_every_client() {
    let host = Host::start_with_env(&manifest(), &[("LLMCHAT_ADMIN_TOKEN", "secret")]);
    assert!(host.log().contains("admin API: bearer token required"));
    let http = client();
    let queues = host.url("/admin/queues");

    let none = http.get(&queues).send().unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers()[WWW_AUTHENTICATE], "Bearer");
    assert_eq!(error_of(none), "admin API needs a bearer token");
    let wrong = http.get(&queues).bearer_auth("secreT").send().unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown_path = http.get(host.url("/admin/nope")).send().unwrap();
    assert_eq!(
        unknown_path.status(),
        StatusCode::UNAUTHORIZED,
        "auth comes before routing"
    );
    let right = http.get(&queues).bearer_auth("secret").send().unwrap();
    assert_eq!(right.status(), StatusCode::OK);

    let base = host.base.as_str();
    let out = cli_ok(
        base,
        &["enqueue", "jobs", r#"{"action":"ok"}"#],
        Some("secret"),
    );
    assert_eq!(out.trim().len(), 32, "{out}");
    assert!(cli_ok(base, &["queues"], Some("secret")).starts_with("backend: memory"));
    let (code, stderr) = cli_err(base, &["queues"], None);
    assert_eq!(code, 1);
    assert!(
        stderr
            .contains("401 Unauthorized: admin API needs a bearer token (set LLMCHAT_ADMIN_TOKEN)"),
        "{stderr}"
    );
    let (_, stderr) = cli_err(base, &["queues"], Some("wrong"));
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
}
