//! Shared test harness: start a host, find components, read its log, measure its RSS.

pub mod certs;
pub mod chromium;
pub mod fake_anthropic;
pub mod fake_openai;
pub mod otlp;
pub mod prometheus;
pub mod redis;
pub mod redis_cluster;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The compiled component `name` (its crate name with `-` as `_`), built by `just build`.
pub fn component(name: &str) -> PathBuf {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let path = repo_root()
        .join("components/target/wasm32-wasip2/release")
        .join(&file);
    assert!(
        path.is_file(),
        "component `{}` is missing; build the components first with `just build-components`",
        path.display()
    );
    path
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A manifest fragment declaring component `name` from `wasm`, with extra TOML lines.
pub fn component_toml(name: &str, wasm: &Path, extra: &str) -> String {
    format!(
        "[component.{name}]\nsource = {:?}\n{extra}\n",
        wasm.display().to_string()
    )
}

pub fn route_toml(route: &str, component: &str) -> String {
    format!("[[trigger.http]]\nroute = {route:?}\ncomponent = {component:?}\n")
}

/// The default chat application as in `components/llmchat.toml`, with absolute paths.
pub fn default_manifest() -> String {
    let text = std::fs::read_to_string(repo_root().join("components/llmchat.toml"))
        .expect("reading components/llmchat.toml");
    let target = repo_root().join("components/target");
    text.replace(
        "source = \"target/",
        &format!("source = \"{}/", target.display()),
    )
}

/// A running `llmchat up`, killed on drop.
pub struct Host {
    child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
    /// Reads stderr into `log` until the host exits.
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Starts a host with `manifest` and waits until it listens.
    pub fn start(manifest: &str) -> Host {
        Self::start_with_env(manifest, &[])
    }

    pub fn start_with_env(manifest: &str, env: &[(&str, &str)]) -> Host {
        match Self::try_start(manifest, env) {
            Ok(host) => host,
            Err(log) => panic!("llmchat did not start:\n{log}"),
        }
    }

    /// Starts a host; on failure returns everything it wrote to stderr.
    pub fn try_start(manifest: &str, env: &[(&str, &str)]) -> Result<Host, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("llmchat.toml");
        std::fs::write(&path, manifest).expect("writing manifest");
        let mut command = llmchat_command(&path);
        for (k, v) in env {
            command.env(k, v);
        }
        Self::spawn(command, dir)
    }

    /// Starts `command` (an `llmchat up`), whose manifest and state live in `dir`, and
    /// waits until it listens; on failure returns everything it wrote to stderr.
    pub fn spawn(mut command: Command, dir: tempfile::TempDir) -> Result<Host, String> {
        command.env("RUST_LOG", "info,llmchat_host=debug");
        // Deployments persist in the state folder: each host gets its own unless the test
        // passes one (to restart a host on the same state).
        if command.get_envs().all(|(k, _)| k != "LLMCHAT_STATE_DIR") {
            command.env("LLMCHAT_STATE_DIR", dir.path().join("state"));
        }
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning llmchat");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // A text line ends with the address; a JSON line (LLMCHAT_LOG_FORMAT=json)
                // closes the message's string after it.
                if let Some(addr) = line.split("llmchat listening on ").nth(1) {
                    let addr = addr.split(['"', ' ']).next().unwrap_or_default();
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        // Generous: a first start compiles JS and Python components (10-20 s each on 2
        // cores) before the artifact cache has them. A host that exits says so at once.
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(base) => Ok(Host {
                child,
                base,
                log,
                reader: Some(reader),
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(log.lock().unwrap().clone())
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log never contained {needle:?}:\n{}", self.log());
    }

    /// Resident set size of the host process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kb * 1024
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.terminate_and_log().0
    }

    /// Sends SIGTERM, waits for the exit status, and returns it with the whole log.
    pub fn terminate_and_log(mut self) -> (std::process::ExitStatus, String) {
        let status = self.signal_and_wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }

    fn signal_and_wait(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for llmchat") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "llmchat did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `llmchat up -f MANIFEST` on a free port, with the shared artifact cache of the test run
/// (override it by setting `LLMCHAT_CACHE_DIR`).
pub fn llmchat_command(manifest: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmchat"));
    command
        .args(["up", "-f"])
        .arg(manifest)
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "LLMCHAT_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifact-cache"),
        )
        .env_remove("RUST_BACKTRACE")
        // A developer's REDIS_URL must not turn memory-backend tests into Redis ones.
        .env_remove("REDIS_URL")
        // Nor a developer's collector turn tracing on.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("LLMCHAT_ADMIN_TOKEN");
    command
}

/// A blocking HTTP client for tests; keep-alive off so each request is independent.
/// Serves `app` on a free loopback port, from a thread and runtime of its own (the tests are
/// blocking); it stops when the returned sender is dropped.
pub fn serve_on_loopback(
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    (rx.recv().expect("the server's address"), stop)
}

/// Reads `response` until what was read contains `needle`; what was read.
pub fn read_until(response: &mut impl std::io::Read, needle: &str) -> String {
    let mut received = String::new();
    let mut buf = [0u8; 4096];
    while !received.contains(needle) {
        let n = response.read(&mut buf).expect("reading the stream");
        assert!(n > 0, "the stream ended before {needle:?}: {received}");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    received
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .expect("building the test HTTP client")
}

/// The JSON body of `GET url`.
pub fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .unwrap_or_else(|e| panic!("GET {url}: the body is not JSON: {e}"))
}

/// Retries `check` until it returns `Some`, or panics after `timeout`.
pub fn poll_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `error` text of a JSON error response.
pub fn error_of(response: reqwest::blocking::Response) -> String {
    let body: serde_json::Value = response.json().expect("a JSON error body");
    body["error"]
        .as_str()
        .expect("an `error` string")
        .to_string()
}

/// Like [`poll_until`] for async checks.
pub async fn poll_until_async<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        llmchat_host::timers::sleep(Duration::from_millis(20)).await;
    }
}

/// Deploys the `hello` component as `name` on `route` through `host`'s admin API.
pub fn deploy_hello(host: &Host, name: &str, route: &str) {
    let bytes = std::fs::read(component("hello")).expect("reading hello.wasm");
    let response = client()
        .put(host.url(&format!("/admin/components/{name}")))
        .query(&[("route", route)])
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes)
        .send()
        .expect("PUT a component");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::CREATED,
        "deploying {name}"
    );
}
