//! The host's log as an operator's log shipper reads it: `LLMCHAT_LOG_FORMAT=json` (or
//! `--log-format json`) makes every stderr line one JSON object, and a guest's own log lines
//! name the component that wrote them.

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
    let response = client()
        .get(host.url("/?line=20&lines=2"))
        .send()
        .expect("GET the log fixture");
    assert_eq!(response.status(), StatusCode::OK);
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
    assert_eq!(guest.len(), 2, "the fixture's two log lines:\n{log}");
    for line in guest {
        assert_eq!(line["fields"]["component"], "flood", "{line}");
        assert_eq!(message(line).len(), 20, "{line}");
    }
}
