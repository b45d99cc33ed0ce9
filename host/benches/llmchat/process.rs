//! The servers the benchmark runs as child processes, and the probes it needs around them.
//!
//! Every child sits in a [`ChildGuard`] that kills and reaps it on drop, so an error or a
//! panic anywhere in the run leaves no server behind. Readiness is a TCP connect polled
//! against a deadline, never a fixed sleep.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
        command.stdin(Stdio::null()).stdout(Stdio::null());
        Self::spawn_with(name, command)
    }

    /// [`ChildGuard::spawn`] with the child's stdin and stdout piped to the caller, for a
    /// child driven line by line (the BullMQ peer of the queue benchmark).
    pub fn spawn_piped(
        name: &str,
        mut command: Command,
    ) -> Result<(Self, ChildStdin, ChildStdout)> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut guard = Self::spawn_with(name, command)?;
        let stdin = guard
            .child
            .stdin
            .take()
            .context("the child's stdin is piped")?;
        let stdout = guard
            .child
            .stdout
            .take()
            .context("the child's stdout is piped")?;
        Ok((guard, stdin, stdout))
    }

    fn spawn_with(name: &str, mut command: Command) -> Result<Self> {
        command.env_remove("RUST_BACKTRACE").stderr(Stdio::piped());
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

    /// Its unix socket, where BullMQ connects (as hosts do, through [`Self::unix_url`]).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The loopback port the bench's probes use.
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// A cluster master: its address and the slot ranges it serves (inclusive).
pub type Master = (SocketAddr, Vec<(u16, u16)>);

/// A private Redis Cluster for the cluster benchmark: 6 `redis-server`s (3 masters with a
/// replica each) on free loopback ports, joined with `redis-cli --cluster create`.
///
/// `tests/all/support/redis_cluster.rs` has its own for the tests; a bench cannot import the
/// tests' support code, and this one holds its nodes in [`ChildGuard`]s like every other
/// child of the bench (killed and reaped on drop, stderr kept, bounded), so it is a small
/// copy rather than a shared crate.
pub struct RedisCluster {
    nodes: Vec<(ChildGuard, u16)>,
    /// The masters' ports, once the cluster is up.
    masters: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp folder for the cluster")?;
        let mut nodes = Vec::new();
        for port in cluster_ports(6)? {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).context("creating a cluster node's folder")?;
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir);
            let mut node = ChildGuard::spawn("redis-server (cluster node)", command).context(
                "redis-server is needed for the cluster benchmark; install it with `just setup`",
            )?;
            node.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)))?;
            nodes.push((node, port));
        }
        let mut cluster = Self {
            nodes,
            masters: Vec::new(),
            _dir: dir,
        };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.addrs().iter().map(SocketAddr::to_string))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in cluster.addrs() {
            loop {
                let info = cluster_query(addr, "INFO").unwrap_or_default();
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("cluster node {addr} never saw every slot served:\n{info}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster.masters = cluster.masters()?.iter().map(|(a, _)| a.port()).collect();
        // A write that waits for a replica (`[redis] replica_acks`) fails until its master
        // has one in sync: wait until each master's replica is online.
        for port in &cluster.masters {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            loop {
                let info = replication_info(addr).unwrap_or_default();
                if info.contains("connected_slaves:1") && info.contains("state=online") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("cluster master {addr} never had its replica in sync:\n{info}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .map(|(_, port)| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect()
    }

    /// The seed URLs, comma-separated, as `[redis] url` takes them.
    pub fn seeds(&self) -> String {
        let urls: Vec<String> = self
            .addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect();
        urls.join(",")
    }

    /// The masters and their slot ranges (inclusive), from `CLUSTER NODES`, lowest slots
    /// first.
    pub fn masters(&self) -> Result<Vec<Master>> {
        let first = self.addrs()[0];
        let text = cluster_query(first, "NODES")?;
        let mut masters = Vec::new();
        // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].split(',').any(|f| f == "master") {
                continue;
            }
            let addr: SocketAddr = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.parse().ok())
                .with_context(|| format!("no address in CLUSTER NODES line {line:?}"))?;
            let slots: Vec<(u16, u16)> = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| {
                    let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                    Some((lo.parse().ok()?, hi.parse().ok()?))
                })
                .collect();
            // A replica may still show as a master without slots for a moment.
            if !slots.is_empty() {
                masters.push((addr, slots));
            }
        }
        if masters.len() != 3 {
            bail!("expected 3 masters serving slots in CLUSTER NODES, got:\n{text}");
        }
        // Numbered by their slots (CLUSTER NODES lists them in no set order), so that a
        // queue's master has the same index on two clusters built alike.
        masters.sort_by_key(|(_, slots)| slots.first().map(|(lo, _)| *lo));
        Ok(masters)
    }

    /// CPU time used so far, user + system: (every node, the replicas among them).
    pub fn cpu_time(&self) -> Result<(Duration, Duration)> {
        let (mut all, mut replicas) = (Duration::ZERO, Duration::ZERO);
        for (node, port) in &self.nodes {
            let t = node.cpu_time()?;
            all += t;
            if !self.masters.contains(port) {
                replicas += t;
            }
        }
        Ok((all, replicas))
    }
}

/// `CLUSTER what` on one node, as text.
fn cluster_query(addr: SocketAddr, what: &str) -> Result<String> {
    let mut conn = redis::Client::open(format!("redis://{addr}"))
        .context("a Redis URL")?
        .get_connection_with_timeout(Duration::from_secs(2))
        .with_context(|| format!("connecting to cluster node {addr}"))?;
    redis::cmd("CLUSTER")
        .arg(what)
        .query(&mut conn)
        .with_context(|| format!("CLUSTER {what} on {addr}"))
}

/// `INFO replication` of one node.
fn replication_info(addr: SocketAddr) -> Result<String> {
    let mut conn = redis::Client::open(format!("redis://{addr}"))
        .context("a Redis URL")?
        .get_connection_with_timeout(Duration::from_secs(2))
        .with_context(|| format!("connecting to cluster node {addr}"))?;
    redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn)
        .with_context(|| format!("INFO replication on {addr}"))
}

/// `count` loopback ports that were free a moment ago, as were their cluster-bus ports
/// (+10000).
fn cluster_ports(count: usize) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let port = free_port()?;
        let bus_free = port
            .checked_add(10_000)
            .is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free && !ports.contains(&port) {
            ports.push(port);
        }
    }
    bail!("found only {} free port pairs for the cluster", ports.len())
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
