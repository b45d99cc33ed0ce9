//! Configuration from the environment, as a container runs the host: `LLMCHAT_MANIFEST`
//! and `LLMCHAT_LISTEN` instead of flags, `${VAR}` / `${VAR:-default}` in the manifest's
//! strings, and `LLMCHAT_HOST` for the CLI.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;

use crate::support::{Host, client, component, component_toml, get_json};

#[test]
fn a_host_configured_only_by_the_environment_serves_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.toml");
    let manifest = format!(
        "{}memory_limit = \"${{HELLO_MEMORY:-24MiB}}\"\n\
         [[trigger.http]]\nroute = \"${{HELLO_ROUTE}}\"\ncomponent = \"hello\"\n\
         # ${{NOT_SET_AND_IN_A_COMMENT}}\n",
        component_toml("hello", &component("hello"), "")
    );
    std::fs::write(&path, manifest).unwrap();
    // `llmchat up` with neither `-f` nor `--listen`: both come from the environment.
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmchat"));
    command
        .arg("up")
        .env(
            "LLMCHAT_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifact-cache"),
        )
        .env_remove("RUST_BACKTRACE")
        .env_remove("REDIS_URL")
        .env_remove("LLMCHAT_ADMIN_TOKEN")
        .env("LLMCHAT_MANIFEST", &path)
        .env("LLMCHAT_LISTEN", "127.0.0.1:0")
        .env("HELLO_ROUTE", "/greet");
    let host = Host::spawn(command, dir).unwrap_or_else(|log| panic!("did not start:\n{log}"));

    let response = client().get(host.url("/greet")).send().expect("GET /greet");
    assert_eq!(response.status(), StatusCode::OK);
    let response = client().get(host.url("/hello")).send().expect("GET /hello");
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "the route came from HELLO_ROUTE"
    );

    // The CLI finds the host through LLMCHAT_HOST.
    let output = Command::new(env!("CARGO_BIN_EXE_llmchat"))
        .arg("components")
        .env("LLMCHAT_HOST", &host.base)
        .env_remove("LLMCHAT_ADMIN_TOKEN")
        .output()
        .expect("running llmchat components");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("hello") && stdout.contains("/greet"),
        "{stdout}"
    );
    let listed = get_json(&host.url("/admin/components"));
    assert_eq!(
        listed["components"][0]["memory_limit"], "24MiB",
        "the default of ${{HELLO_MEMORY:-24MiB}}"
    );
}
