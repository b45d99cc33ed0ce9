//! `[http] trusted_proxies`: behind a load balancer the client is the address it forwarded,
//! for the rate limits, the access log and the admin API's loopback rule alike; from any
//! other peer, a forwarded header is ignored. The test client connects from 127.0.0.1, which
//! plays the proxy when it is trusted and a forging client when it is not.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Host, client, component, component_toml};

/// `hello` on `/hello`, one request per minute per client, with the access log on.
fn manifest(trusted: &str) -> String {
    format!(
        "[http]\naccess_log = true\ntrusted_proxies = {trusted}\n{}\
         [[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\nrate_limit = \"1/min\"\n",
        component_toml("hello", &component("hello"), "")
    )
}

fn get(host: &Host, path: &str, forwarded_for: Option<&str>) -> StatusCode {
    let mut request = client().get(host.url(path));
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    request.send().expect("GET").status()
}

/// The `client` of each access-log line, in order.
fn logged_clients(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "llmchat::access")
        .map(|line| line["fields"]["client"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_trusted_proxy_names_the_client_of_rate_limits_the_access_log_and_the_admin_api() {
    let host = Host::start_with_env(
        &manifest("[\"127.0.0.1\"]"),
        &[("LLMCHAT_LOG_FORMAT", "json")],
    );
    assert_eq!(get(&host, "/hello", Some("203.0.113.7")), StatusCode::OK);
    assert_eq!(
        get(&host, "/hello", Some("198.51.100.1, 203.0.113.7")),
        StatusCode::TOO_MANY_REQUESTS,
        "the same client (an entry it forged on the left changes nothing): its bucket is empty"
    );
    assert_eq!(
        get(&host, "/hello", Some("203.0.113.8")),
        StatusCode::OK,
        "another client behind the same proxy has its own bucket"
    );
    assert_eq!(
        get(&host, "/admin/components", Some("203.0.113.7")),
        StatusCode::FORBIDDEN,
        "a remote client behind a local proxy is not a loopback client"
    );
    assert_eq!(
        get(&host, "/admin/components", None),
        StatusCode::OK,
        "the proxy itself, naming no one, is"
    );
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");
    assert_eq!(
        logged_clients(&log),
        ["203.0.113.7", "203.0.113.7", "203.0.113.8"],
        "{log}"
    );
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let host = Host::start_with_env(
        &manifest("[\"10.0.0.0/8\"]"),
        &[("LLMCHAT_LOG_FORMAT", "json")],
    );
    assert_eq!(get(&host, "/hello", Some("203.0.113.7")), StatusCode::OK);
    assert_eq!(
        get(&host, "/hello", Some("203.0.113.8")),
        StatusCode::TOO_MANY_REQUESTS,
        "a forged address does not buy a new bucket"
    );
    assert_eq!(
        get(&host, "/admin/components", Some("203.0.113.7")),
        StatusCode::OK,
        "nor does it lock the loopback peer out"
    );
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{log}");
    assert_eq!(logged_clients(&log), ["127.0.0.1", "127.0.0.1"], "{log}");
}
