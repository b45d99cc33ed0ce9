//! The host's log as an operator's log shipper reads it: `LLMCHAT_LOG_FORMAT=json` (or
//! `--log-format json`) makes every stderr line one JSON object, and a guest's own log lines
//! name the component and the invocation that wrote them. With `[http] access_log = true`,
//! each request to a component route leaves one line (target `llmchat::access`) once its
//! body has ended.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Host, client, component, component_toml, route_toml};

#[test]
fn json_logs_are_one_object_per_line_and_guest_lines_name_their_component() {
    let manifest = format!(
        "{}{}",
        component_toml("flood", &component("fixture-log-flood"), ""),
        route_toml("/...", "flood")
    );
    let host = Host::start_with_env(&manifest, &[("LLMCHAT_LOG_FORMAT", "json")]);
    for _ in 0..2 {
        let response = client()
            .get(host.url("/?line=20&lines=2"))
            .send()
            .expect("GET the log fixture");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");

    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    assert!(lines.len() >= 5, "{} lines:\n{log}", lines.len());
    for line in &lines {
        assert!(
            line["timestamp"].is_string()
                && line["level"].is_string()
                && line["target"].is_string(),
            "a line without timestamp, level or target: {line}"
        );
    }
    let message = |line: &Value| {
        line["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        lines
            .iter()
            .any(|l| message(l).starts_with("llmchat listening on http://")),
        "{log}"
    );
    let guest: Vec<&Value> = lines.iter().filter(|l| l["target"] == "guest").collect();
    assert_eq!(guest.len(), 4, "the fixture's two log lines, twice:\n{log}");
    for line in &guest {
        assert_eq!(line["fields"]["component"], "flood", "{line}");
        assert_eq!(message(line).len(), 20, "{line}");
    }
    // Each line names its invocation: the two of one request share it, the requests differ.
    let invocation = |line: &Value| {
        line["fields"]["invocation"]
            .as_u64()
            .unwrap_or_else(|| panic!("no invocation number: {line}"))
    };
    assert_eq!(invocation(guest[0]), invocation(guest[1]), "{log}");
    assert_eq!(invocation(guest[2]), invocation(guest[3]), "{log}");
    assert_ne!(invocation(guest[0]), invocation(guest[2]), "{log}");
}

#[test]
fn the_access_log_has_one_line_per_request_with_its_route_status_bytes_and_client() {
    let manifest = format!(
        "[http]\naccess_log = true\n{}{}",
        component_toml("hello", &component("hello"), ""),
        route_toml("/greet/...", "hello")
    );
    let host = Host::start_with_env(&manifest, &[("LLMCHAT_LOG_FORMAT", "json")]);
    let response = client()
        .get(host.url("/greet/x?y=1"))
        .send()
        .expect("GET /greet/x");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().expect("the body");
    let response = client()
        .post(host.url("/nowhere"))
        .send()
        .expect("POST /nowhere");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");

    let access: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "llmchat::access")
        .map(|line| line["fields"].clone())
        .collect();
    assert_eq!(access.len(), 2, "one line per request:\n{log}");
    let ok = &access[0];
    assert_eq!(ok["method"], "GET", "{ok}");
    assert_eq!(ok["path"], "/greet/x", "{ok}");
    assert_eq!(ok["route"], "/greet/...", "{ok}");
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["bytes"], body.len(), "{ok}");
    assert_eq!(ok["component"], "hello", "{ok}");
    assert_eq!(ok["client"], "127.0.0.1", "{ok}");
    assert_eq!(ok["complete"], true, "{ok}");
    assert!(ok["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{ok}");
    let missing = &access[1];
    assert_eq!(missing["method"], "POST", "{missing}");
    assert_eq!(missing["route"], "unmatched", "{missing}");
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(missing["component"], "-", "{missing}");
    assert!(
        missing["bytes"].as_u64().is_some_and(|b| b > 0),
        "{missing}"
    );
}
