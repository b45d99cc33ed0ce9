//! The servers the benchmark runs as child processes, and the probes it needs around them.
//!
//! Every child sits in a [`ChildGuard`] that kills and reaps it on drop, so an error or a
//! panic anywhere in the run leaves no server behind. Readiness is a TCP connect polled
//! against a deadline, never a fixed sleep.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a server may take to start (it compiles its components when the cache is cold).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How much of a child's stderr is kept for error messages: its start...
const LOG_KEEP: usize = 64 << 10;
/// ...and its last lines, where a crash says why.
const TAIL_LINES: usize = 64;

/// A running child process, killed and reaped on drop.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: Arc<Mutex<Captured>>,
}

/// A child's stderr, bounded: the first [`LOG_KEEP`] bytes and the last [`TAIL_LINES`] lines.
#[derive(Default)]
struct Captured {
    head: String,
    tail: std::collections::VecDeque<String>,
    dropped: usize,
}

impl Captured {
    fn push(&mut self, line: String) {
        if self.head.len() < LOG_KEEP {
            self.head.push_str(&line);
            self.head.push('\n');
            return;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
            self.dropped += 1;
        }
        self.tail.push_back(line);
    }

    fn text(&self) -> String {
        let mut text = self.head.clone();
        if self.dropped > 0 {
            text.push_str(&format!("[... {} lines left out ...]\n", self.dropped));
        }
        for line in &self.tail {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

impl ChildGuard {
    /// Spawns `command` with stderr captured and `RUST_BACKTRACE` removed.
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let stderr = child.stderr.take().context("the child's stderr is piped")?;
        let log = Arc::new(Mutex::new(Captured::default()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far: the start and the last lines.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .text()
    }

    /// Fails with the child's stderr if it has exited.
    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling a child process")? {
            bail!("{} exited with {status}:\n{}", self.name, self.log());
        }
        Ok(())
    }

    /// Waits for a stderr line containing `needle`; returns what follows it on that line.
    pub fn wait_for_log(&mut self, needle: &str) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(rest) = self.log().lines().find_map(|l| l.split(needle).nth(1)) {
                return Ok(rest.trim().to_string());
            }
            self.ensure_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} never logged {needle:?} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `addr` accepts a TCP connection.
    pub fn wait_for_tcp(&mut self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            self.ensure_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept connections on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time used so far, user + system (from /proc; clock ticks of 10 ms).
    pub fn cpu_time(&self) -> Result<Duration> {
        let file = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&file).with_context(|| format!("reading `{file}`"))?;
        // After "pid (comm)": state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no CPU times in `{file}`"))
        };
        // USER_HZ is 100 on every Linux this runs on.
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// Resident set size, in bytes (VmRSS from /proc).
    pub fn rss(&self) -> Result<u64> {
        let file = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&file).with_context(|| format!("reading `{file}`"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in `{file}`"))?;
        Ok(kib * 1024)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `llmchat up` on a free port, with its manifest in a temp folder.
pub struct Llmchat {
    pub process: ChildGuard,
    base: String,
    _dir: tempfile::TempDir,
}

impl Llmchat {
    /// Starts `llmchat up -f MANIFEST --listen 127.0.0.1:0 --cache-dir CACHE` and waits
    /// until it accepts connections.
    pub fn start(binary: &Path, manifest: &str, cache_dir: &Path) -> Result<Self> {
        Self::start_with_env(binary, manifest, cache_dir, &[], &[])
    }

    /// [`Llmchat::start`] with `set` added to the child's environment and `remove` taken out
    /// of it (e.g. its own `LLMCHAT_STATE_DIR`, and no inherited `REDIS_URL`).
    pub fn start_with_env(
        binary: &Path,
        manifest: &str,
        cache_dir: &Path,
        set: &[(&str, &std::ffi::OsStr)],
        remove: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp folder")?;
        let file = dir.path().join("llmchat.toml");
        std::fs::write(&file, manifest).with_context(|| format!("writing `{}`", file.display()))?;
        let mut command = Command::new(binary);
        command
            .args(["up", "-f"])
            .arg(&file)
            .args(["--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(cache_dir)
            .env("RUST_LOG", "info");
        for name in remove {
            command.env_remove(name);
        }
        command.envs(set.iter().copied());
        let mut process = ChildGuard::spawn("llmchat", command)?;
        let base = process.wait_for_log("llmchat listening on ")?;
        let addr: SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("llmchat logged an unexpected address {base:?}"))?;
        process.wait_for_tcp(addr)?;
        Ok(Self {
            process,
            base,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A running `wasmtime serve -Scli` on a free port.
pub struct WasmtimeServe {
    process: ChildGuard,
    base: String,
}

impl WasmtimeServe {
    /// Serves `wasm`, with `-O OPTIMIZE` when given, and waits until it accepts connections.
    pub fn start(wasmtime: &Path, wasm: &Path, optimize: Option<&str>) -> Result<Self> {
        let args = optimize.map_or(Vec::new(), |flags| vec!["-O", flags]);
        Self::start_with(wasmtime, wasm, &args, "/")
    }

    /// Serves `wasm` with `args` before it, and waits until `GET probe` answers 2xx.
    pub fn start_with(wasmtime: &Path, wasm: &Path, args: &[&str], probe: &str) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut command = Command::new(wasmtime);
        command.args(["serve", "-Scli", "--addr", &addr.to_string()]);
        command.args(args).arg(wasm);
        let mut process = ChildGuard::spawn("wasmtime serve", command)?;
        process.wait_for_tcp(addr)?;
        let serve = Self {
            process,
            base: format!("http://{addr}"),
        };
        expect_ok(&serve.url(probe))?;
        Ok(serve)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A private `redis-server` for the queue benchmarks: no persistence, a unix socket in its
/// own temp folder for the hosts and the enqueuer, and a loopback TCP port for the bench's
/// probes (so that `MONITOR` tells the bench's own commands from everyone else's).
pub struct RedisServer {
    pub process: ChildGuard,
    socket: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp folder for redis-server")?;
        let socket = dir.path().join("redis.sock");
        let port = free_port()?;
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--unixsocket")
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path());
        let mut process = ChildGuard::spawn("redis-server", command).context(
            "redis-server is needed for the queue benchmarks; install it with `just setup`",
        )?;
        process.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !socket.exists() {
            process.ensure_running()?;
            if Instant::now() > deadline {
                bail!("redis-server never created `{}`", socket.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self {
            process,
            socket,
            port,
            _dir: dir,
        })
    }

    /// What hosts and the enqueuer connect to.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The loopback port the bench's probes use.
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Stops (`SIGSTOP`) or resumes (`SIGCONT`) a child, e.g. to fill its queues while it cannot
/// take jobs; returns once the process has stopped or is running again.
pub fn pause(child: &ChildGuard, paused: bool) -> Result<()> {
    let signal = if paused { "-STOP" } else { "-CONT" };
    let pid = child.pid().to_string();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {signal} {pid} failed with {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        if (state == "T") == paused {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("process {pid} is in state {state} after kill {signal}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// One GET on a fresh connection; returns the status code.
pub fn get(url: &str) -> Result<u16> {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    let client = match CLIENT.get() {
        Some(client) => client,
        None => {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(0)
                .build()
                .context("building an HTTP client")?;
            CLIENT.get_or_init(|| client)
        }
    };
    let response = client
        .get(url)
        .send()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    // Read the body so that the server finishes the exchange before we measure anything.
    response
        .bytes()
        .with_context(|| format!("reading the body of GET {url}"))?;
    Ok(status)
}

/// One GET that must answer 2xx.
pub fn expect_ok(url: &str) -> Result<()> {
    let status = get(url)?;
    if !(200..300).contains(&status) {
        bail!("GET {url} answered {status}, expected 2xx");
    }
    Ok(())
}
