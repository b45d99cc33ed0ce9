//! Configuration from the environment, as a container runs the host: `LLMCHAT_MANIFEST`
//! and `LLMCHAT_LISTEN` instead of flags, `${VAR}` / `${VAR:-default}` in the manifest's
//! strings, `LLMCHAT_HOST` for the CLI, and component secrets from a variable or a file.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::support::prometheus::{schedule_ticks, scrape};
use crate::support::{Host, client, component, component_toml, get_json, poll_until};

const WAIT: Duration = Duration::from_secs(30);

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

const TOKEN: &str = "tok-5ecret-Vq81";

/// Ticks of the `counter` schedule on `host` that ended with `outcome`.
fn ticks(host: &Host, outcome: &str) -> f64 {
    schedule_ticks(&scrape(host), "counter", outcome)
}

#[test]
fn a_component_reads_its_secrets_through_config_and_nothing_else_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    // The monitor fixture fails every tick unless `config.get("action")` names an action:
    // here it comes from a secret.
    let manifest = format!(
        "{}[component.counter.secrets]\naction = {{ env = \"LLMCHAT_TEST_MONITOR_ACTION\" }}\n\
         token = {{ file = {token:?} }}\n\
         [[trigger.schedule]]\ncomponent = \"counter\"\nevery = \"50ms\"\ntimeout = \"5s\"\n",
        component_toml("counter", &component("fixture-monitor"), "")
    );
    let host = Host::start_with_env(&manifest, &[("LLMCHAT_TEST_MONITOR_ACTION", "count")]);
    poll_until(WAIT, "3 ticks run with the secret action", || {
        (ticks(&host, "ok") >= 3.0).then_some(())
    });

    // A new version deployed over the manifest component keeps the manifest's secrets.
    let response = client()
        .put(host.url("/admin/components/counter"))
        .header(CONTENT_TYPE, "application/wasm")
        .body(std::fs::read(component("fixture-monitor")).unwrap())
        .send()
        .expect("PUT counter");
    assert_eq!(response.status(), StatusCode::OK);
    let after_deploy = ticks(&host, "ok");
    poll_until(WAIT, "3 more ticks on the deployed version", || {
        (ticks(&host, "ok") >= after_deploy + 3.0).then_some(())
    });
    assert_eq!(ticks(&host, "failed"), 0.0, "{}", host.log());

    let listed = client()
        .get(host.url("/admin/components"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /admin/components");
    assert!(
        listed.contains("counter") && !listed.contains(TOKEN),
        "{listed}"
    );
    let cli = Command::new(env!("CARGO_BIN_EXE_llmchat"))
        .args(["components", "--host", &host.base])
        .env_remove("LLMCHAT_ADMIN_TOKEN")
        .output()
        .expect("llmchat components");
    assert!(!String::from_utf8_lossy(&cli.stdout).contains(TOKEN));
    let (_, log) = host.terminate_and_log();
    assert!(!log.contains(TOKEN), "the secret is in the log:\n{log}");
}
