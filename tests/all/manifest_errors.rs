//! A bad manifest or component stops `llmchat up` with a non-zero exit and a message that
//! names the file and the field.

use std::process::Output;

use crate::support::{component, component_toml, llmchat_command, route_toml};

fn up(manifest: &str, files: &[(&str, &[u8])]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let path = dir.path().join("llmchat.toml");
    std::fs::write(&path, manifest).unwrap();
    let output = llmchat_command(&path)
        .env_remove("LLMCHAT_TEST_UNSET_KEY")
        .output()
        .expect("running llmchat");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "llmchat must refuse this manifest:\n{manifest}\n{stderr}"
    );
    assert!(
        stderr.contains(&path.display().to_string()) || stderr.contains("llmchat.toml"),
        "{stderr}"
    );
    (output, stderr)
}

#[test]
fn unknown_field_is_named() {
    let hello = component("hello");
    let (_, err) = up(&component_toml("hello", &hello, "memory = \"64MiB\""), &[]);
    assert!(err.contains("unknown field `memory`"), "{err}");
}

#[test]
fn bad_size_and_duration_are_named() {
    let hello = component("hello");
    let (_, err) = up(
        &component_toml("hello", &hello, "memory_limit = \"lots\""),
        &[],
    );
    assert!(
        err.contains("memory_limit") && err.contains("lots"),
        "{err}"
    );
    let (_, err) = up(&component_toml("hello", &hello, "timeout = \"30\""), &[]);
    assert!(
        err.contains("timeout") && err.contains("unit is required"),
        "{err}"
    );
}

#[test]
fn missing_component_file_is_named() {
    let (_, err) = up("[component.chat]\nsource = \"missing.wasm\"\n", &[]);
    assert!(
        err.contains("[component.chat]") && err.contains("source") && err.contains("missing.wasm"),
        "{err}"
    );
}

#[test]
fn invalid_component_file_is_named() {
    let (_, err) = up(
        "[component.junk]\nsource = \"junk.wasm\"\n",
        &[("junk.wasm", b"not wasm at all")],
    );
    assert!(
        err.contains("component `junk`") && err.contains("junk.wasm"),
        "{err}"
    );
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[test]
fn http_route_to_a_component_without_an_http_export_is_refused() {
    let manifest = format!(
        "{}{}",
        component_toml("cli", &component("fixture-trivial"), ""),
        route_toml("/x", "cli")
    );
    let (_, err) = up(&manifest, &[]);
    assert!(
        err.contains("component `cli`") && err.contains("wasi:http/incoming-handler"),
        "{err}"
    );
}

#[test]
fn missing_api_key_variable_is_named() {
    let manifest = "[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"LLMCHAT_TEST_UNSET_KEY\"\n";
    let (_, err) = up(manifest, &[]);
    assert!(err.contains("LLMCHAT_TEST_UNSET_KEY"), "{err}");
}

#[test]
fn an_unset_variable_without_a_default_is_named_with_its_line() {
    let manifest = format!(
        "{}[[trigger.http]]\nroute = \"${{LLMCHAT_TEST_UNSET_ROUTE}}\"\ncomponent = \"hello\"\n",
        component_toml("hello", &component("hello"), "")
    );
    let (_, stderr) = up(&manifest, &[]);
    assert!(
        stderr.contains("environment variable `LLMCHAT_TEST_UNSET_ROUTE` is not set")
            && stderr.contains("has no default (write `${LLMCHAT_TEST_UNSET_ROUTE:-default}`)"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_trusted_proxy_is_named() {
    let manifest = format!(
        "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0/8\"]\n{}",
        component_toml("hello", &component("hello"), "")
    );
    let (_, err) = up(&manifest, &[]);
    assert!(
        err.contains("\"10.0.0/8\" is not an IP address or a CIDR range"),
        "{err}"
    );
    assert!(err.contains("trusted_proxies"), "{err}");
}
