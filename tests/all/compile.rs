//! Compiling happens in a child process (`llmchat compile`), never in the server: a first
//! start logs one line per component compiled and a restart maps them from the cache; a
//! compiler child that fails (here: out of memory under `LLMCHAT_COMPILE_MEMORY_LIMIT`)
//! stops start-up, or refuses a deploy while the host keeps serving, with an error naming
//! the component; `--no-cache` compiles into a private folder it leaves empty; and the
//! server's peak RSS stays small while a child compiles a 14 MB JavaScript component.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::support::{
    Host, client, component, component_toml, error_of, llmchat_command, repo_root, route_toml,
};

/// `hello` at `/hello`: a small component that every test can serve.
fn hello_manifest() -> String {
    component_toml("hello", &component("hello"), "") + &route_toml("/hello", "hello")
}

/// The `pid=N` of the log line containing `needle`.
fn pid_in_line(log: &str, needle: &str) -> u32 {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}:\n{log}"));
    line.split("pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

fn deploy(host: &Host, name: &str, bytes: &[u8], route: &str) -> reqwest::blocking::Response {
    client()
        .put(host.url(&format!("/admin/components/{name}")))
        .query(&[("route", route)])
        .header(CONTENT_TYPE, "application/wasm")
        .body(bytes.to_vec())
        .send()
        .expect("PUT /admin/components/{name}")
}

fn assert_serves(host: &Host) {
    for path in ["/health", "/hello"] {
        let status = client().get(host.url(path)).send().unwrap().status();
        assert_eq!(status, StatusCode::OK, "GET {path}");
    }
}

/// A field of `/proc/{pid}/status` in bytes (`VmHWM`: peak RSS; `RssAnon`: anonymous RSS).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"));
    kb * 1024
}

#[test]
fn a_first_start_compiles_each_component_in_a_child_and_a_restart_maps_them() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let manifest = hello_manifest();

    let first = Host::start_with_env(&manifest, &[("LLMCHAT_CACHE_DIR", cache_dir)]);
    let log = first.log();
    assert!(log.contains("compiling component `hello` ("), "{log}");
    assert!(log.contains(" MB)"), "the size is logged:\n{log}");
    assert!(log.contains("compiled `hello` in "), "{log}");
    assert!(log.contains("cached=false"), "{log}");
    let child = pid_in_line(&log, "compiling component `hello`");
    assert_ne!(
        child,
        first.pid(),
        "a child process compiled, not the server"
    );
    assert!(first.terminate().success());

    let second = Host::start_with_env(&manifest, &[("LLMCHAT_CACHE_DIR", cache_dir)]);
    let log = second.log();
    assert!(log.contains("cached=true"), "{log}");
    assert!(
        !log.contains("compiling component"),
        "nothing is compiled again:\n{log}"
    );
    assert_serves(&second);
}

#[test]
fn a_compiler_child_out_of_memory_fails_start_up_naming_the_component() {
    let cache = tempfile::tempdir().unwrap();
    let err = Host::try_start(
        &hello_manifest(),
        &[
            ("LLMCHAT_CACHE_DIR", cache.path().to_str().unwrap()),
            ("LLMCHAT_COMPILE_MEMORY_LIMIT", "1MiB"),
        ],
    )
    .err()
    .expect("start-up fails when the component cannot be compiled");
    assert!(
        err.contains("component `hello`") && err.contains("in a child process failed"),
        "{err}"
    );
    assert!(err.contains("LLMCHAT_COMPILE_MEMORY_LIMIT"), "{err}");
}

#[test]
fn a_compiler_child_out_of_memory_refuses_the_deploy_and_the_host_keeps_serving() {
    // `hello` is compiled ahead of time (as `just build` does), so that the host starts
    // under a memory limit too small for any compile.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("llmchat.toml");
    std::fs::write(&manifest_path, hello_manifest()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_llmchat"))
        .args(["compile", "-f"])
        .arg(&manifest_path)
        .args(["--cache-dir", cache_dir])
        .output()
        .expect("running llmchat compile");
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("compiled `hello` in "), "{printed}");

    let host = Host::start_with_env(
        &hello_manifest(),
        &[
            ("LLMCHAT_CACHE_DIR", cache_dir),
            ("LLMCHAT_COMPILE_MEMORY_LIMIT", "8MiB"),
        ],
    );
    assert!(host.log().contains("cached=true"), "{}", host.log());
    let bytes = std::fs::read(component("health")).unwrap();
    let response = deploy(&host, "probe", &bytes, "/probe");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let error = error_of(response);
    assert!(
        error.contains("compiling component `probe` in a child process failed"),
        "{error}"
    );
    assert!(error.contains("LLMCHAT_COMPILE_MEMORY_LIMIT"), "{error}");
    assert_serves(&host);
    assert_eq!(
        client().get(host.url("/probe")).send().unwrap().status(),
        StatusCode::NOT_FOUND,
        "the refused deploy changed nothing"
    );
}

#[test]
fn without_a_cache_the_child_compiles_into_a_private_folder_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let manifest = dir.path().join("llmchat.toml");
    std::fs::write(&manifest, hello_manifest()).unwrap();
    let mut child = llmchat_command(&manifest)
        .arg("--no-cache")
        .env("TMPDIR", &tmp)
        .env("LLMCHAT_STATE_DIR", dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning llmchat");
    let mut log = String::new();
    let mut base = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(addr) = line.split("llmchat listening on ").nth(1) {
            base = Some(addr.trim().to_string());
            break;
        }
    }
    let Some(base) = base else {
        let _ = child.kill();
        panic!("llmchat did not start:\n{log}");
    };
    let served = client()
        .get(format!("{base}/hello"))
        .send()
        .map(|r| r.status());
    let private: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let left: Vec<PathBuf> = private.iter().flat_map(|p| files_under(p)).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("compiling component `hello` ("), "{log}");
    assert_eq!(served.unwrap(), StatusCode::OK);
    assert_eq!(private.len(), 1, "one private folder: {private:?}");
    assert!(left.is_empty(), "no artifact is left behind: {left:?}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Compiling StarlingMonkey takes cranelift ~400 MB, which glibc used to keep in the
/// server's heap (~400 MB idle after one TypeScript deploy). Now the child holds it: the
/// server's anonymous memory (its heap; the mapped artifact is file-backed and shared with
/// the page cache) stays small, and so does its peak.
#[test]
fn the_server_stays_small_while_a_child_compiles_a_javascript_component() {
    let js = repo_root().join("components/target/js/js-hello.wasm");
    assert!(
        js.is_file(),
        "`{}` is missing; build it with `just build-components` (needs Node.js)",
        js.display()
    );
    let cache = tempfile::tempdir().unwrap();
    let host = Host::start_with_env(
        &hello_manifest(),
        &[("LLMCHAT_CACHE_DIR", cache.path().to_str().unwrap())],
    );
    let bytes = std::fs::read(&js).unwrap();
    let response = deploy(&host, "js-hello", &bytes, "/js");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    let child = pid_in_line(&host.log(), "compiling component `js-hello`");
    assert_ne!(child, host.pid());
    assert_eq!(
        client().get(host.url("/js")).send().unwrap().status(),
        StatusCode::OK
    );
    let (anon, peak) = (
        proc_status(host.pid(), "RssAnon"),
        proc_status(host.pid(), "VmHWM"),
    );
    assert!(
        anon < 100 << 20 && peak < 200 << 20,
        "after a child compiled {} MB, the server holds {} MB anonymous, peak RSS {} MB",
        bytes.len() >> 20,
        anon >> 20,
        peak >> 20
    );
}
