//! The compiled code of a component nobody calls is not kept mapped: a JavaScript engine's
//! code pages (tens of MB once a request has run) leave the host's RSS a few seconds after
//! its last invocation, and the next request maps back what it runs and answers as before.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::{Host, client, component_toml, poll_until, repo_root, route_toml};

const MB: u64 = 1_000_000;

#[test]
fn idle_component_code_is_unmapped_and_maps_back_on_the_next_request() {
    let wasm = repo_root().join("components/target/js/js-counter.wasm");
    let bytes = std::fs::read(&wasm).unwrap_or_else(|e| {
        panic!(
            "reading `{}` ({e}); build it with `just build-components`",
            wasm.display()
        )
    });
    // Artifacts are named after the SHA-256 of the component's bytes.
    let artifact = hex::encode(Sha256::digest(&bytes));
    let host = Host::start(
        &(component_toml("js", &wasm, "memory_limit = \"64MiB\"") + &route_toml("/js", "js")),
    );

    let count = || {
        let response = client().get(host.url("/js")).send().expect("GET /js");
        assert_eq!(response.status(), 200);
        response.text().expect("reading the body")
    };
    let first = count();
    let served = code_rss(host.pid(), &artifact);
    assert!(
        served > 4 * MB,
        "a JS request maps its engine's code: {served} bytes of `{artifact}` mapped"
    );

    let released = poll_until(Duration::from_secs(15), "idle code to be unmapped", || {
        let rss = code_rss(host.pid(), &artifact);
        (rss < MB).then_some(rss)
    });
    println!("idle-code: mapped {served} bytes after a request, {released} once idle");

    assert_eq!(count(), first, "the next request answers as the first did");
    let again = code_rss(host.pid(), &artifact);
    assert!(
        again > 4 * MB,
        "the next request maps the code back: {again} bytes"
    );
}

/// Resident bytes of the read-only mappings (code and metadata) of the artifact whose file
/// name starts with `artifact`; the writable ones are pool slots' memory images.
fn code_rss(pid: u32, artifact: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("reading smaps");
    let mut counting = false;
    let mut total = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            let perms = fields.get(1).copied().unwrap_or("");
            let file = fields.get(5).copied().unwrap_or("");
            let name = file.rsplit('/').next().unwrap_or("");
            counting = name.starts_with(artifact) && !perms.contains('w');
        } else if counting && fields.first() == Some(&"Rss:") {
            total += fields[1].parse::<u64>().unwrap_or(0) * 1024;
        }
    }
    total
}
