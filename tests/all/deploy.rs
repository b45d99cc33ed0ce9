//! Deploying components into a running host through the admin API: `PUT /admin/components/
//! {name}` (raw bytes + query, or multipart with a JSON spec), `GET /admin/components`,
//! `DELETE`, `POST .../rollback`. Against the real binary: a deployed component serves at
//! once, refused deploys change nothing, the token guards every call, deployments survive a
//! restart and reach every host on one Redis within a second, and 200 redeploys under load
//! fail no request and no job.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::redis::RedisServer;
use crate::support::{Host, client, component, component_toml, error_of, poll_until, route_toml};

const WAIT: Duration = Duration::from_secs(20);
const HELLO: &str = "Hello, world!\n";
const GROWING: &str = "calls=1 static_bytes=1048576";

/// `hello` from the manifest at `/hello`: the component the refused deploys must not disturb.
fn manifest() -> String {
    format!(
        "{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/hello", "hello")
    )
}

fn redis_manifest(redis: &RedisServer) -> String {
    format!("[redis]\nurl = {:?}\n{}", redis.url(), manifest())
}

/// The bytes of the built component `name`.
fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("reading a built component")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn components_url(host: &Host, rest: &str) -> String {
    host.url(&format!("/admin/components{rest}"))
}

/// `PUT /admin/components/{name}` with the raw bytes and the settings as query parameters.
fn put(host: &Host, name: &str, bytes: &[u8], query: &[(&str, &str)]) -> Response {
    put_as(host, name, bytes, query, None)
}

fn put_as(
    host: &Host,
    name: &str,
    bytes: &[u8],
    query: &[(&str, &str)],
    token: Option<&str>,
) -> Response {
    let mut request = client()
        .put(components_url(host, &format!("/{name}")))
        .query(query)
        .header(CONTENT_TYPE, "application/wasm")
        .body(bytes.to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().expect("PUT /admin/components/{name}")
}

/// `PUT /admin/components/{name}` as `multipart/form-data`: a `spec` part (JSON) and a
/// `wasm` part (the bytes), written by hand (the test client has no multipart feature).
fn put_multipart(host: &Host, name: &str, bytes: &[u8], spec: &Value) -> Response {
    let boundary = "llmchat-deploy-test-5c1f0e9a7b";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\
             Content-Type: application/json\r\n\r\n{spec}\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"wasm\"; \
             filename=\"component.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    client()
        .put(components_url(host, &format!("/{name}")))
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .expect("PUT multipart")
}

fn delete(host: &Host, name: &str) -> Response {
    client()
        .delete(components_url(host, &format!("/{name}")))
        .send()
        .expect("DELETE component")
}

fn rollback(host: &Host, name: &str) -> Response {
    client()
        .post(components_url(host, &format!("/{name}/rollback")))
        .send()
        .expect("POST rollback")
}

/// Asserts the status (showing the body when it differs) and returns the JSON body.
fn json_with(response: Response, status: StatusCode, what: &str) -> Value {
    let got = response.status();
    let text = response.text().expect("a response body");
    assert_eq!(got, status, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Asserts a refusal: its status, and an `error` that contains `needle`.
fn refused(response: Response, status: StatusCode, needle: &str, what: &str) -> String {
    let got = response.status();
    let text = response.text().expect("a response body");
    assert_eq!(got, status, "{what}: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no `error` string: {text}"))
        .to_string();
    assert!(
        error.contains(needle),
        "{what}: the error should name {needle:?}: {error}"
    );
    error
}

/// `GET path`: the status and the body text.
fn get(host: &Host, path: &str) -> (StatusCode, String) {
    let response = client().get(host.url(path)).send().expect("GET");
    let status = response.status();
    (status, response.text().expect("a body"))
}

fn assert_serves(host: &Host, path: &str, body: &str) {
    assert_eq!(
        get(host, path),
        (StatusCode::OK, body.to_string()),
        "GET {path}"
    );
}

fn assert_not_found(host: &Host, path: &str) {
    assert_eq!(get(host, path).0, StatusCode::NOT_FOUND, "GET {path}");
}

/// `GET /admin/components`: the rows, sorted by name.
fn components(host: &Host) -> Vec<Value> {
    let body = json_with(
        client()
            .get(components_url(host, ""))
            .send()
            .expect("GET /admin/components"),
        StatusCode::OK,
        "GET /admin/components",
    );
    body["components"]
        .as_array()
        .unwrap_or_else(|| panic!("a `components` array: {body}"))
        .clone()
}

fn names(host: &Host) -> Vec<String> {
    components(host)
        .iter()
        .map(|c| c["name"].as_str().expect("a name").to_string())
        .collect()
}

fn listed(host: &Host, name: &str) -> Option<Value> {
    components(host).into_iter().find(|c| c["name"] == name)
}

/// The listing without the invocation counts, which serving requests changes.
fn snapshot(host: &Host) -> Vec<Value> {
    components(host)
        .into_iter()
        .map(|mut c| {
            c.as_object_mut().expect("an object").remove("invocations");
            c
        })
        .collect()
}

fn routes(row: &Value) -> Vec<String> {
    row["triggers"]["http"]
        .as_array()
        .unwrap_or_else(|| panic!("`triggers.http` is an array: {row}"))
        .iter()
        .map(|t| t["route"].as_str().expect("a route").to_string())
        .collect()
}

fn exports(row: &Value) -> Vec<String> {
    row["exports"]
        .as_array()
        .unwrap_or_else(|| panic!("an `exports` array: {row}"))
        .iter()
        .map(|e| e.as_str().expect("an export").to_string())
        .collect()
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is a string: {value}"))
}

/// The line of `log` with `event` for component `name` (quoted or not) at `version`.
fn log_line<'a>(log: &'a str, event: &str, name: &str, version: &str) -> Option<&'a str> {
    let names = [format!("name={name} "), format!("name=\"{name}\" ")];
    let version = format!("version={version}");
    log.lines().find(|line| {
        line.contains(event)
            && names.iter().any(|n| line.contains(n.as_str()))
            && line.split_whitespace().any(|word| word == version)
    })
}

/// The row of `queue` in `GET /admin/queues`.
fn queue_row(host: &Host, queue: &str) -> Value {
    let body = json_with(
        client()
            .get(host.url("/admin/queues"))
            .send()
            .expect("GET /admin/queues"),
        StatusCode::OK,
        "GET /admin/queues",
    );
    body["queues"]
        .as_array()
        .expect("a queues array")
        .iter()
        .find(|q| q["queue"] == queue)
        .cloned()
        .unwrap_or_else(|| panic!("queue `{queue}` is listed: {body}"))
}

fn enqueue(host: &Host, queue: &str, payload: Value) -> Response {
    client()
        .post(host.url(&format!("/admin/queues/{queue}/jobs")))
        .json(&json!({ "payload": payload }))
        .send()
        .expect("POST jobs")
}

/// A local HTTP server for `fixture-outbound` to fetch from: `GET /greeting` answers
/// `hello from upstream`, `GET /teapot` 418. Stops when dropped.
struct Upstream {
    origin: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Upstream {
    fn start() -> Upstream {
        let app = axum::Router::new()
            .route(
                "/greeting",
                axum::routing::get(|| async { "hello from upstream" }),
            )
            .route(
                "/teapot",
                axum::routing::get(|| async {
                    (axum::http::StatusCode::IM_A_TEAPOT, "short and stout")
                }),
            );
        let (addr, stop) = crate::support::serve_on_loopback(app);
        Upstream {
            origin: format!("http://{addr}"),
            _stop: stop,
        }
    }
}

#[test]
fn a_deployed_component_serves_at_once_and_is_listed() {
    let host = Host::start(&manifest());
    let bytes = wasm("hello");
    assert_not_found(&host, "/hello2");

    // No token configured: a loopback client may deploy.
    let first = json_with(
        put(
            &host,
            "hello2",
            &bytes,
            &[("route", "/hello2"), ("config.version", "1")],
        ),
        StatusCode::CREATED,
        "first deploy",
    );
    assert_eq!(first["name"], "hello2");
    assert_eq!(str_of(&first, "hash"), sha256_hex(&bytes));
    let v1 = str_of(&first, "version").to_string();
    assert!(!v1.is_empty());
    assert!(first["previous"].is_null(), "{first}");
    assert!(first["deployed_at_ms"].as_u64().is_some(), "{first}");
    assert!(first["elapsed_ms"].as_u64().is_some(), "{first}");
    assert_eq!(exports(&first), ["http"]);
    assert_eq!(routes(&first), ["/hello2"]);
    assert_serves(&host, "/hello2", HELLO);
    assert_serves(&host, "/hello", HELLO);

    assert_eq!(names(&host), ["hello", "hello2"]);
    let manifest_row = listed(&host, "hello").unwrap();
    assert_eq!(manifest_row["origin"], "manifest");
    assert!(manifest_row["deployed_at_ms"].is_null(), "{manifest_row}");
    assert_eq!(str_of(&manifest_row, "hash"), sha256_hex(&bytes));
    let row = listed(&host, "hello2").unwrap();
    assert_eq!(row["origin"], "deployed");
    assert_eq!(str_of(&row, "hash"), sha256_hex(&bytes));
    assert_eq!(row["version"], v1.as_str());
    assert_eq!(row["deployed_at_ms"], first["deployed_at_ms"]);
    assert_eq!(routes(&row), ["/hello2"]);
    assert_eq!(exports(&row), ["http"]);
    assert_eq!(row["versions"], 1);
    assert_eq!(row["memory_limit"], "64MiB", "the default: {row}");
    assert!(row["invocations"].as_u64().unwrap() >= 1, "{row}");

    // A redeploy with a new config and no triggers keeps the route.
    let second = json_with(
        put(&host, "hello2", &bytes, &[("config.version", "2")]),
        StatusCode::OK,
        "redeploy",
    );
    let v2 = str_of(&second, "version").to_string();
    assert_ne!(v2, v1, "a new deployment is a new version");
    assert_eq!(second["previous"], v1.as_str());
    assert_eq!(routes(&second), ["/hello2"], "triggers are kept");
    assert_serves(&host, "/hello2", HELLO);
    let row = listed(&host, "hello2").unwrap();
    assert_eq!(row["version"], v2.as_str());
    assert_eq!(row["versions"], 2);
    assert_eq!(names(&host), ["hello", "hello2"]);

    let log = host.log();
    let line = log_line(&log, "component deployed", "hello2", &v2)
        .unwrap_or_else(|| panic!("no `component deployed` line for {v2}:\n{log}"));
    let hash = line
        .split("hash=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|h| h.trim_matches('"'))
        .unwrap_or_else(|| panic!("a hash in {line:?}"));
    assert!(
        hash.len() >= 12 && sha256_hex(&bytes).starts_with(hash),
        "{line}"
    );
}

#[test]
fn the_multipart_form_deploys_a_queue_processor() {
    let host = Host::start(&manifest());
    let missing = enqueue(&host, "work", json!({ "action": "ok" }));
    assert_eq!(
        missing.status(),
        StatusCode::NOT_FOUND,
        "no queue before the deploy"
    );

    let bytes = wasm("fixture-processor");
    let spec = json!({
        "memory_limit": "32MiB",
        "max_instances": 4,
        "config": { "version": "1" },
        "triggers": {
            "queue": [{ "queue": "work", "concurrency": 2, "max_attempts": 2, "backoff": "fixed:10ms" }]
        }
    });
    let deployed = json_with(
        put_multipart(&host, "proc", &bytes, &spec),
        StatusCode::CREATED,
        "multipart deploy",
    );
    assert_eq!(str_of(&deployed, "hash"), sha256_hex(&bytes));
    assert_eq!(exports(&deployed), ["processor"]);
    assert_eq!(deployed["triggers"]["queue"][0]["queue"], "work");
    let row = listed(&host, "proc").unwrap();
    assert_eq!(row["origin"], "deployed");
    assert_eq!(row["memory_limit"], "32MiB");
    assert_eq!(row["max_instances"], 4);

    for _ in 0..3 {
        let response = enqueue(&host, "work", json!({ "action": "ok" }));
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    poll_until(WAIT, "3 jobs processed by the deployed processor", || {
        (queue_row(&host, "work")["processed"] == 3).then_some(())
    });
    let row = queue_row(&host, "work");
    assert_eq!(row["component"], "proc");
    assert_eq!((&row["failed"], &row["dead"]), (&json!(0), &json!(0)));

    let unknown = put_multipart(
        &host,
        "proc",
        &bytes,
        &json!({ "memory_limit": "32MiB", "memroy": "1MiB" }),
    );
    refused(
        unknown,
        StatusCode::BAD_REQUEST,
        "memroy",
        "an unknown spec field",
    );
}

#[test]
fn a_configured_token_guards_every_deploy_call() {
    let host = Host::start_with_env(&manifest(), &[("LLMCHAT_ADMIN_TOKEN", "secret")]);
    let bytes = wasm("hello");
    let query = [("route", "/hello2")];

    let none = put_as(&host, "hello2", &bytes, &query, None);
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(none), "admin API needs a bearer token");
    let wrong = put_as(&host, "hello2", &bytes, &query, Some("secreT"));
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_not_found(&host, "/hello2");
    for (method, path) in [
        ("GET", ""),
        ("DELETE", "/hello"),
        ("POST", "/hello/rollback"),
    ] {
        let response = client()
            .request(method.parse().unwrap(), components_url(&host, path))
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    assert_serves(&host, "/hello", HELLO);

    let listing = |token: &str| {
        client()
            .get(components_url(&host, ""))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let before = json_with(listing("secret"), StatusCode::OK, "listing with the token");
    assert_eq!(
        before["components"].as_array().unwrap().len(),
        1,
        "nothing deployed: {before}"
    );

    let right = put_as(&host, "hello2", &bytes, &query, Some("secret"));
    json_with(right, StatusCode::CREATED, "deploy with the token");
    assert_serves(&host, "/hello2", HELLO);
    let after = json_with(listing("secret"), StatusCode::OK, "listing with the token");
    assert_eq!(after["components"][1]["name"], "hello2", "{after}");
}

#[test]
fn deploys_that_cannot_work_are_refused_and_change_nothing() {
    let host = Host::start(&manifest());
    let upstream = Upstream::start();
    let hello = wasm("hello");
    // Deployed ones too, so "unchanged" covers deployed rows as well: a route, a queue and
    // a schedule (hourly: no tick comes during the test).
    json_with(
        put(&host, "hello2", &hello, &[("route", "/hello2")]),
        StatusCode::CREATED,
        "deploy hello2",
    );
    json_with(
        put(
            &host,
            "jobs",
            &wasm("fixture-noop-processor"),
            &[("queue", "jobs")],
        ),
        StatusCode::CREATED,
        "deploy jobs",
    );
    let health = wasm("health");
    json_with(
        put(&host, "health", &health, &[("every", "1h")]),
        StatusCode::CREATED,
        "`probe` is granted to a monitor with a schedule",
    );
    let before = snapshot(&host);
    let unchanged = |what: &str| {
        assert_serves(&host, "/hello", HELLO);
        assert_serves(&host, "/hello2", HELLO);
        assert_eq!(snapshot(&host), before, "after {what}");
    };

    // Not a component at all: a new name, and over an existing one.
    let garbage = b"this is not a wasm component, just text".to_vec();
    for name in ["junk", "hello"] {
        let response = put(&host, name, &garbage, &[("route", "/junk")]);
        let error = refused(
            response,
            StatusCode::BAD_REQUEST,
            "component",
            "garbage bytes",
        );
        assert!(
            error.contains("not a"),
            "says it is not a component: {error}"
        );
        unchanged("garbage bytes");
    }
    assert_not_found(&host, "/junk");

    // The wrong world for its triggers.
    let trivial = wasm("fixture-trivial");
    let response = put(&host, "trivial", &trivial, &[("route", "/trivial")]);
    refused(
        response,
        StatusCode::BAD_REQUEST,
        "wasi:http/incoming-handler",
        "a route to a `wasi:cli/run` component",
    );
    assert_not_found(&host, "/trivial");
    unchanged("a route to fixture-trivial");
    // A plain redeploy keeps the triggers, which the new bytes must fit.
    let response = put(&host, "hello2", &trivial, &[]);
    refused(
        response,
        StatusCode::BAD_REQUEST,
        "wasi:http/incoming-handler",
        "fixture-trivial behind hello2's route",
    );
    unchanged("fixture-trivial behind hello2's route");
    let response = put(&host, "worker", &hello, &[("queue", "work")]);
    refused(
        response,
        StatusCode::BAD_REQUEST,
        "llmchat:runtime/processor",
        "a queue for an HTTP component",
    );
    unchanged("a queue for hello");

    // An import the component is not granted.
    let outbound = wasm("fixture-outbound");
    let response = put(&host, "out", &outbound, &[("route", "/out")]);
    refused(
        response,
        StatusCode::BAD_REQUEST,
        "wasi:http/outgoing-handler",
        "outgoing HTTP without allowed_outbound_hosts",
    );
    assert_not_found(&host, "/out");
    unchanged("ungranted outgoing HTTP");

    // `probe` only goes with a schedule.
    let response = put(&host, "health2", &health, &[]);
    refused(
        response,
        StatusCode::BAD_REQUEST,
        "llmchat:runtime/probe",
        "probe without a schedule",
    );
    unchanged("probe without a schedule");

    // A route, a queue or a schedule name another component holds.
    let growing = wasm("fixture-growing-static");
    for route in ["/hello", "/hello2"] {
        let response = put(&host, "grow", &growing, &[("route", route)]);
        refused(response, StatusCode::CONFLICT, route, "a taken route");
        unchanged("a taken route");
    }
    let response = put(
        &host,
        "jobs2",
        &wasm("fixture-processor"),
        &[("queue", "jobs")],
    );
    refused(response, StatusCode::CONFLICT, "jobs", "a taken queue");
    unchanged("a taken queue");
    let spec = json!({ "triggers": { "schedule": [{ "every": "1h", "name": "health" }] } });
    let response = put_multipart(&host, "mon", &wasm("fixture-monitor"), &spec);
    refused(
        response,
        StatusCode::CONFLICT,
        "health",
        "a taken schedule name",
    );
    unchanged("a taken schedule name");

    // Granted, the same component is accepted and can reach that origin only.
    let granted = put(
        &host,
        "out",
        &outbound,
        &[
            ("route", "/out"),
            ("allowed_outbound_hosts", upstream.origin.as_str()),
        ],
    );
    json_with(granted, StatusCode::CREATED, "outgoing HTTP, granted");
    let fetch = |path: &str| {
        let url = format!("{}{path}", upstream.origin);
        let response = client()
            .get(host.url("/out"))
            .query(&[("url", url.as_str())])
            .send()
            .expect("GET /out");
        let status = response.status();
        (status, response.text().unwrap())
    };
    assert_eq!(
        fetch("/greeting"),
        (StatusCode::OK, "hello from upstream".to_string())
    );
    assert_eq!(
        fetch("/teapot"),
        (StatusCode::IM_A_TEAPOT, "short and stout".to_string())
    );
    let other = Upstream::start();
    let denied = client()
        .get(host.url("/out"))
        .query(&[("url", format!("{}/greeting", other.origin).as_str())])
        .send()
        .unwrap();
    assert_eq!(
        denied.status(),
        StatusCode::BAD_GATEWAY,
        "an origin not granted is refused: {}",
        denied.text().unwrap()
    );
    assert_serves(&host, "/hello", HELLO);
    assert_serves(&host, "/hello2", HELLO);
}

#[test]
fn bad_settings_and_names_are_refused_naming_them() {
    let host = Host::start(&manifest());
    let before = snapshot(&host);
    let growing = wasm("fixture-growing-static");
    for (field, value) in [
        ("memory", "lots"),
        ("timeout", "soon"),
        ("max_instances", "many"),
    ] {
        let response = put(
            &host,
            "grow",
            &growing,
            &[("route", "/grow"), (field, value)],
        );
        refused(
            response,
            StatusCode::BAD_REQUEST,
            field,
            &format!("{field}={value}"),
        );
    }
    let response = put(
        &host,
        "grow",
        &growing,
        &[("route", "/grow"), ("rout", "/x")],
    );
    refused(
        response,
        StatusCode::BAD_REQUEST,
        "rout",
        "an unknown parameter",
    );
    let long = "g".repeat(65);
    for name in ["Grow", "gr%20ow", long.as_str()] {
        let response = put(&host, name, &growing, &[("route", "/grow")]);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "name {name:?}");
    }
    assert_not_found(&host, "/grow");
    assert_eq!(snapshot(&host), before);
}

#[test]
fn a_component_over_the_size_limit_is_refused_with_413() {
    let manifest = format!("[deploy]\nmax_component_size = \"64KiB\"\n{}", manifest());
    let host = Host::start(&manifest);
    let before = snapshot(&host);
    let hello = wasm("hello");
    assert!(
        hello.len() > 64 * 1024,
        "hello.wasm is {} bytes",
        hello.len()
    );
    for name in ["big", "hello"] {
        let response = put(&host, name, &hello, &[("route", "/big")]);
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{name}: {}",
            response.text().unwrap()
        );
        assert_not_found(&host, "/big");
        assert_serves(&host, "/hello", HELLO);
        assert_eq!(snapshot(&host), before);
    }
    // Under the limit is fine.
    let small = wasm("fixture-noop-processor");
    assert!(small.len() < 64 * 1024, "{} bytes", small.len());
    json_with(
        put(&host, "small", &small, &[("queue", "small")]),
        StatusCode::CREATED,
        "a component under the limit",
    );
}

#[test]
fn a_deleted_component_stops_serving() {
    let host = Host::start(&manifest());
    let hello = wasm("hello");
    json_with(
        put(&host, "hello2", &hello, &[("route", "/hello2")]),
        StatusCode::CREATED,
        "deploy",
    );
    assert_serves(&host, "/hello2", HELLO);

    let deleted = json_with(delete(&host, "hello2"), StatusCode::OK, "delete");
    assert_eq!(deleted, json!({ "deleted": "hello2" }));
    assert_not_found(&host, "/hello2");
    assert_eq!(names(&host), ["hello"]);
    assert_serves(&host, "/hello", HELLO);

    for name in ["hello2", "nope"] {
        let response = delete(&host, name);
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "DELETE {name}");
        assert!(error_of(response).contains(name));
    }
    let response = rollback(&host, "nope");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "rollback nope");
    assert!(error_of(response).contains("nope"));

    // The name and the route are free again.
    json_with(
        put(&host, "hello2", &hello, &[("route", "/hello2")]),
        StatusCode::CREATED,
        "deploy after delete",
    );
    assert_serves(&host, "/hello2", HELLO);
}

#[test]
fn rollback_returns_to_the_previous_version() {
    let host = Host::start(&manifest());
    let hello = wasm("hello");
    let growing = wasm("fixture-growing-static");

    let v1 = json_with(
        put(
            &host,
            "app",
            &hello,
            &[("route", "/app"), ("config.version", "1")],
        ),
        StatusCode::CREATED,
        "v1",
    );
    let nothing_before = rollback(&host, "app");
    refused(
        nothing_before,
        StatusCode::CONFLICT,
        "",
        "rollback of a first version",
    );
    assert_serves(&host, "/app", HELLO);

    // v2: other code behind the same route.
    let v2 = json_with(
        put(&host, "app", &growing, &[("config.version", "2")]),
        StatusCode::OK,
        "v2",
    );
    assert_eq!(v2["previous"], v1["version"]);
    assert_serves(&host, "/app", GROWING);
    assert_eq!(
        str_of(&listed(&host, "app").unwrap(), "hash"),
        sha256_hex(&growing)
    );

    let back = json_with(rollback(&host, "app"), StatusCode::OK, "rollback to v1");
    assert_eq!(str_of(&back, "hash"), sha256_hex(&hello));
    assert_eq!(routes(&back), ["/app"]);
    assert_serves(&host, "/app", HELLO);
    let row = listed(&host, "app").unwrap();
    assert_eq!(str_of(&row, "hash"), sha256_hex(&hello));
    assert_eq!(row["memory_limit"], "64MiB");

    // v3 moves the route and lowers the memory cap; rolling back restores both.
    json_with(
        put(
            &host,
            "app",
            &hello,
            &[("route", "/moved"), ("memory", "16MiB")],
        ),
        StatusCode::OK,
        "v3",
    );
    assert_not_found(&host, "/app");
    assert_serves(&host, "/moved", HELLO);
    assert_eq!(listed(&host, "app").unwrap()["memory_limit"], "16MiB");
    let back = json_with(rollback(&host, "app"), StatusCode::OK, "rollback of v3");
    assert_eq!(routes(&back), ["/app"]);
    assert_serves(&host, "/app", HELLO);
    assert_not_found(&host, "/moved");
    let row = listed(&host, "app").unwrap();
    assert_eq!(row["memory_limit"], "64MiB", "{row}");
    assert_eq!(routes(&row), ["/app"]);
}

#[test]
fn deployments_survive_a_restart() {
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("a UTF-8 path");
    let env = [("LLMCHAT_STATE_DIR", state_dir)];
    let host = Host::start_with_env(&manifest(), &env);
    let hello = wasm("hello");
    let growing = wasm("fixture-growing-static");
    json_with(
        put(&host, "hello2", &hello, &[("route", "/hello2")]),
        StatusCode::CREATED,
        "deploy hello2",
    );
    let latest = json_with(
        put(&host, "hello2", &growing, &[("config.version", "2")]),
        StatusCode::OK,
        "redeploy hello2",
    );
    json_with(
        put(&host, "gone", &hello, &[("route", "/gone")]),
        StatusCode::CREATED,
        "deploy gone",
    );
    json_with(delete(&host, "gone"), StatusCode::OK, "delete gone");
    let before = snapshot(&host);
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");

    let host = Host::start_with_env(&manifest(), &env);
    // Serving as soon as it listens, without a redeploy.
    assert_serves(&host, "/hello2", GROWING);
    assert_not_found(&host, "/gone");
    assert_serves(&host, "/hello", HELLO);
    let row = listed(&host, "hello2").unwrap();
    assert_eq!(row["version"], latest["version"]);
    assert_eq!(row["origin"], "deployed");
    assert_eq!(names(&host), ["hello", "hello2"]);
    assert_eq!(snapshot(&host), before, "the listing survives the restart");
    // The previous version survives too: rollback goes back to hello.
    json_with(
        rollback(&host, "hello2"),
        StatusCode::OK,
        "rollback after restart",
    );
    assert_serves(&host, "/hello2", HELLO);
}

#[test]
fn a_deploy_reaches_every_host_on_one_redis_within_a_second() {
    let redis = RedisServer::start();
    let a = Host::start(&redis_manifest(&redis));
    let b = Host::start(&redis_manifest(&redis));
    let hello = wasm("hello");
    assert_not_found(&b, "/hello2");

    let sent = Instant::now();
    let deployed = json_with(
        put(&a, "hello2", &hello, &[("route", "/hello2")]),
        StatusCode::CREATED,
        "deploy to host A",
    );
    let answered = Instant::now();
    let deadline = answered + Duration::from_secs(1);
    let mut polls = 0u32;
    loop {
        polls += 1;
        if get(&b, "/hello2") == (StatusCode::OK, HELLO.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host B did not serve /hello2 within 1 s of the deploy ({polls} polls); B's log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let seen = Instant::now();
    eprintln!(
        "deploy propagation to a second host: {:?} after the PUT was answered \
         ({:?} after it was sent; the PUT took {:?}; {polls} polls)",
        seen - answered,
        seen - sent,
        answered - sent
    );
    let version = str_of(&deployed, "version");
    let row = listed(&b, "hello2").unwrap();
    assert_eq!(row["version"], version);
    assert_eq!(str_of(&row, "hash"), sha256_hex(&hello));
    assert_eq!(row["origin"], "deployed");
    poll_until(WAIT, "the cluster update in B's log", || {
        log_line(
            &b.log(),
            "component updated from the cluster",
            "hello2",
            version,
        )
        .map(|_| ())
    });

    // A host that starts later, with a fresh state folder, gets it from Redis.
    let c = Host::start(&redis_manifest(&redis));
    assert_serves(&c, "/hello2", HELLO);
}

/// Counts of one load thread, and the first few failures it saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    bodies: Mutex<std::collections::BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(what);
        }
    }
}

/// Stops the load threads however the test ends, so they drop the host (which kills it).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn load_thread(stop: &Arc<AtomicBool>, work: impl Fn() + Send + 'static) -> JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            work();
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

#[test]
fn two_hundred_redeploys_under_load_fail_nothing() {
    let redis = RedisServer::start();
    let host = Arc::new(Host::start(&redis_manifest(&redis)));
    // Two versions of each: the web route alternates between two programs whose answers
    // differ, the queue between two processors.
    let web = [wasm("hello"), wasm("fixture-growing-static")];
    let workers = [wasm("fixture-processor"), wasm("fixture-noop-processor")];
    json_with(
        put(&host, "web", &web[0], &[("route", "/web")]),
        StatusCode::CREATED,
        "deploy web",
    );
    json_with(
        put(
            &host,
            "worker",
            &workers[0],
            &[("queue", "work"), ("concurrency", "4")],
        ),
        StatusCode::CREATED,
        "deploy worker",
    );
    assert_serves(&host, "/web", HELLO);

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let requests = Arc::new(Tally::default());
    let jobs = Arc::new(Tally::default());
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (host, requests) = (host.clone(), requests.clone());
        let http = client();
        threads.push(load_thread(&stop, move || {
            match http.get(host.url("/web")).send() {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().unwrap_or_default();
                    if status == StatusCode::OK {
                        requests.ok.fetch_add(1, Ordering::Relaxed);
                        *requests.bodies.lock().unwrap().entry(body).or_default() += 1;
                    } else {
                        requests.fail(format!("{status}: {body}"));
                    }
                }
                Err(error) => requests.fail(format!("GET /web: {error}")),
            }
        }));
    }
    {
        let (host, jobs) = (host.clone(), jobs.clone());
        threads.push(load_thread(&stop, move || {
            let response = enqueue(&host, "work", json!({ "action": "ok" }));
            let status = response.status();
            if status == StatusCode::CREATED {
                jobs.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                jobs.fail(format!(
                    "enqueue: {status}: {}",
                    response.text().unwrap_or_default()
                ));
            }
        }));
    }

    let mut latencies = Vec::new();
    let started = Instant::now();
    for round in 1..=200 {
        let version = round.to_string();
        let query = [("config.version", version.as_str())];
        for (name, versions) in [("web", &web), ("worker", &workers)] {
            let sent = Instant::now();
            let response = put(&host, name, &versions[round % 2], &query);
            latencies.push(sent.elapsed());
            json_with(
                response,
                StatusCode::OK,
                &format!("redeploy {round} of {name}"),
            );
        }
    }
    let redeploying = started.elapsed();
    let (served, enqueued) = (
        requests.ok.load(Ordering::Relaxed),
        jobs.ok.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("a load thread");
    }

    let enqueued_total = jobs.ok.load(Ordering::Relaxed);
    let row = poll_until(WAIT, "every enqueued job processed", || {
        let row = queue_row(&host, "work");
        (row["processed"].as_u64() >= Some(enqueued_total)
            && row["waiting"] == 0
            && row["in_flight"] == 0)
            .then_some(row)
    });
    latencies.sort();
    let bodies = requests.bodies.lock().unwrap().clone();
    eprintln!(
        "400 redeploys (200 rounds of web + worker) in {redeploying:?}: deploy latency \
         p50 {:?}, p99 {:?}, max {:?}; during them {served} HTTP requests answered and \
         {enqueued} jobs enqueued ({} requests and {enqueued_total} jobs in all, {} processed); \
         bodies seen: {bodies:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        requests.ok.load(Ordering::Relaxed),
        row["processed"],
    );

    let failures = requests.failures.lock().unwrap().clone();
    assert_eq!(
        requests.failed.load(Ordering::Relaxed),
        0,
        "failed HTTP requests, the first ones: {failures:?}\n{}",
        host.log()
    );
    let failures = jobs.failures.lock().unwrap().clone();
    assert_eq!(
        jobs.failed.load(Ordering::Relaxed),
        0,
        "refused enqueues: {failures:?}"
    );
    assert!(
        served > 0 && enqueued > 0,
        "the load ran during the redeploys"
    );
    assert_eq!(
        bodies.keys().cloned().collect::<Vec<_>>(),
        [HELLO.to_string(), GROWING.to_string()],
        "both versions answered during the redeploys"
    );
    assert_eq!(row["processed"], enqueued_total, "{row}");
    assert_eq!(
        (&row["failed"], &row["dead"]),
        (&json!(0), &json!(0)),
        "{row}"
    );
}

#[test]
fn a_deploy_route_on_a_host_path_is_refused_naming_it() {
    let host = Host::start(&manifest());
    let hello = wasm("hello");
    json_with(
        put(&host, "hello2", &hello, &[("route", "/hello2")]),
        StatusCode::CREATED,
        "deploy hello2",
    );
    let before = snapshot(&host);
    for route in [
        "/admin",
        "/admin/...",
        "/admin/components/web",
        "/metrics",
        "/metrics/...",
        "/health",
        "/ready",
        "/dashboard",
        "/dashboard/history",
    ] {
        // A new component, and a redeploy of a deployed one; each with a free route too,
        // which must not be served either.
        for name in ["web", "hello2"] {
            let response = put(&host, name, &hello, &[("route", "/web"), ("route", route)]);
            let what = format!("{name} at {route}");
            let error = refused(
                response,
                StatusCode::BAD_REQUEST,
                &format!("route {route:?}"),
                &what,
            );
            assert!(
                error.contains("reserved for the host's own endpoint"),
                "{what}: {error}"
            );
            assert_not_found(&host, "/web");
            assert_serves(&host, "/hello2", HELLO);
            assert_eq!(snapshot(&host), before, "after {what}");
        }
    }
    let spec = json!({ "triggers": { "http": [{ "route": "/metrics", "methods": ["GET"] }] } });
    refused(
        put_multipart(&host, "web", &hello, &spec),
        StatusCode::BAD_REQUEST,
        "route \"/metrics\"",
        "a multipart spec with /metrics",
    );
    assert_eq!(
        snapshot(&host),
        before,
        "after a multipart spec with /metrics"
    );

    // The host's own endpoints still answer as before.
    let (status, metrics) = get(&host, "/metrics");
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("llmchat_"), "{metrics}");
    assert_eq!(get(&host, "/health").0, StatusCode::OK);
    let admin = client()
        .get(host.url("/admin/web"))
        .send()
        .expect("GET /admin/web");
    assert_eq!(admin.status(), StatusCode::NOT_FOUND);
    assert!(error_of(admin).starts_with("no admin route"));
}

#[test]
fn a_deploy_that_cannot_be_applied_is_refused_and_stored_nowhere() {
    let redis = RedisServer::start();
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("a UTF-8 path");
    let a = Host::start_with_env(&redis_manifest(&redis), &[("LLMCHAT_STATE_DIR", state_dir)]);
    let monitor = wasm("fixture-monitor");
    let first = json_with(
        put(&a, "mon", &monitor, &[("every", "1h")]),
        StatusCode::CREATED,
        "deploy mon hourly",
    );
    let record = state.path().join("components").join("mon.json");
    let stored = std::fs::read(&record).expect("mon's record on disk");
    let before = snapshot(&a);

    // February 31 never comes: only applying the schedule finds that out.
    let never = [("cron", "0 0 31 2 *")];
    for name in ["mon", "mon2"] {
        let response = put(&a, name, &monitor, &never);
        let error = refused(
            response,
            StatusCode::BAD_REQUEST,
            "never ticks",
            &format!("{name} on a cron that never ticks"),
        );
        assert!(error.contains("0 0 31 2 *"), "{error}");
        assert_eq!(snapshot(&a), before, "after {name}");
    }
    assert_eq!(
        std::fs::read(&record).expect("mon's record on disk"),
        stored,
        "the record on disk is unchanged"
    );
    assert!(
        !state.path().join("components").join("mon2.json").exists(),
        "no record for mon2"
    );

    // Nothing reached Redis: a host that starts now adopts the first version only.
    let b = Host::start(&redis_manifest(&redis));
    assert_eq!(names(&b), ["hello", "mon"]);
    let row = listed(&b, "mon").unwrap();
    assert_eq!(row["version"], first["version"]);
    assert_eq!(
        row["triggers"]["schedule"][0]["when"], "every 3600s",
        "{row}"
    );
}

#[test]
fn a_spec_is_read_as_a_component_table_without_a_source() {
    let host = Host::start(&manifest());
    let hello = wasm("hello");
    let before = snapshot(&host);
    let spec = json!({ "source": "/etc/hostname", "triggers": { "http": [{ "route": "/web" }] } });
    refused(
        put_multipart(&host, "web", &hello, &spec),
        StatusCode::BAD_REQUEST,
        "field `source`",
        "a spec that names a file",
    );
    let spec = json!({ "triggers": { "http": [{ "route": "/web", "component": "hello" }] } });
    refused(
        put_multipart(&host, "web", &hello, &spec),
        StatusCode::BAD_REQUEST,
        "field `component`",
        "a trigger for another component",
    );
    assert_not_found(&host, "/web");
    assert_eq!(snapshot(&host), before);

    // The other `[component.NAME]` fields are taken as the manifest takes them.
    let spec = json!({
        "memory_limit": 33554432,
        "environment": { "GREETING": "hi" },
        "config": { "n": 5 },
        "triggers": { "http": [{ "route": "/web", "component": "web", "max_body_size": "4KiB" }] }
    });
    json_with(
        put_multipart(&host, "web", &hello, &spec),
        StatusCode::CREATED,
        "a spec with the manifest's units",
    );
    assert_serves(&host, "/web", HELLO);
    assert_eq!(listed(&host, "web").unwrap()["memory_limit"], "32MiB");
}
