//! What the queue benchmarks read from Redis, over the server's loopback TCP port (the hosts
//! and the enqueuer use its unix socket, so Redis tells the two apart):
//! - [`Probe`]: `INFO`, `CLIENT LIST` and the queues' counters, counting its own commands so
//!   that they can be taken out of the server's totals; [`Probes`], one per server, so that
//!   a cluster's masters read like one Redis (each queue's counters from its master, `INFO`
//!   summed);
//! - [`Monitor`]: `MONITOR`, counting every command by who sent it: a unix-socket client (a
//!   host or the enqueuer), a script (`[0 lua]`), or the bench itself;
//! - [`KeyspaceEvents`]: keyspace notifications from one server or every master, each
//!   timestamped on arrival, to see when a job's processor wrote to kv.
//!
//! The readers are plain sockets with a tiny RESP parser: they block in `read` and are
//! stopped by shutting the socket down, so no reply is ever cut by a read timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A synchronous connection for the bench's own questions.
pub struct Probe {
    conn: redis::Connection,
    /// Commands this probe has sent.
    pub own: u64,
}

/// The counters of a set of queues, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
}

/// `INFO stats commandstats` at one moment.
pub struct ServerStats {
    /// `total_commands_processed`: every command, those run inside scripts included.
    pub total: u64,
    /// Calls per command name.
    pub calls: BTreeMap<String, u64>,
    /// [`Probe::own`] before this `INFO` was sent.
    pub own_before: u64,
}

impl ServerStats {
    /// Commands others ran between `self` and `later` (the probe's own taken out).
    pub fn others_since(&self, later: &ServerStats) -> u64 {
        (later.total - self.total).saturating_sub(later.own_before - self.own_before)
    }

    /// Calls per command between `self` and `later`, all senders together.
    pub fn calls_since(&self, later: &ServerStats) -> BTreeMap<String, u64> {
        later
            .calls
            .iter()
            .map(|(name, n)| (name.clone(), n - self.calls.get(name).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl Probe {
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let conn = redis::Client::open(format!("redis://{addr}"))
            .context("a Redis URL")?
            .get_connection()
            .with_context(|| format!("connecting to redis-server at {addr}"))?;
        Ok(Self { conn, own: 0 })
    }

    fn query<T: redis::FromRedisValue>(&mut self, what: &str, cmd: &redis::Cmd) -> Result<T> {
        self.own += 1;
        cmd.query(&mut self.conn)
            .with_context(|| format!("redis-server answered an error to {what}"))
    }

    pub fn stats(&mut self) -> Result<ServerStats> {
        let own_before = self.own;
        let text: String =
            self.query("INFO", redis::cmd("INFO").arg("stats").arg("commandstats"))?;
        let mut total = None;
        let mut calls = BTreeMap::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                total = v.trim().parse().ok();
            } else if let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            {
                let n = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("no calls in {line:?}"))?;
                calls.insert(name.to_string(), n);
            }
        }
        Ok(ServerStats {
            total: total.context("INFO has no total_commands_processed")?,
            calls,
            own_before,
        })
    }

    /// Connections from unix-socket clients (hosts and the enqueuer; the bench uses TCP).
    pub fn unix_clients(&mut self) -> Result<u64> {
        let list: String = self.query("CLIENT LIST", redis::cmd("CLIENT").arg("LIST"))?;
        Ok(list
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("addr="))
                    .is_some_and(|a| !a.starts_with("127.0.0.1:"))
            })
            .count() as u64)
    }

    /// The processed / failed / retried counters of `queues`, summed (one `HMGET` each,
    /// on the stats hash `llmchat:{q}:stats` that the Redis backend documents).
    pub fn counters(&mut self, queues: &[String]) -> Result<Counters> {
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("HMGET")
                .arg(format!("llmchat:{{{q}}}:stats"))
                .arg("processed")
                .arg("failed")
                .arg("retried");
        }
        self.own += queues.len() as u64;
        let replies: Vec<Vec<Option<u64>>> = pipe
            .query(&mut self.conn)
            .context("reading the queues' counters")?;
        let mut c = Counters::default();
        for reply in replies {
            let field = |i: usize| reply.get(i).copied().flatten().unwrap_or(0);
            c.processed += field(0);
            c.failed += field(1);
            c.retried += field(2);
        }
        Ok(c)
    }

    /// Deletes every entry of the queues' streams (`XTRIM MAXLEN 0`).
    pub fn trim_streams(&mut self, queues: &[String]) -> Result<()> {
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("XTRIM")
                .arg(format!("llmchat:{{{q}}}:stream"))
                .arg("MAXLEN")
                .arg(0)
                .ignore();
        }
        self.own += queues.len() as u64;
        pipe.query::<()>(&mut self.conn)
            .context("emptying the queues' streams")
    }

    /// `redis_version` from `INFO server`.
    pub fn server_version(&mut self) -> Result<String> {
        let text: String = self.query("INFO", redis::cmd("INFO").arg("server"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string())
            .context("INFO server has no redis_version")
    }

    pub fn config_set(&mut self, name: &str, value: &str) -> Result<()> {
        self.query(
            "CONFIG SET",
            redis::cmd("CONFIG").arg("SET").arg(name).arg(value),
        )
    }

    /// `CLUSTER KEYSLOT key`: the slot a cluster keeps `key` in.
    pub fn keyslot(&mut self, key: &str) -> Result<u16> {
        self.query(
            "CLUSTER KEYSLOT",
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
    }

    fn echo(&mut self, text: &str) -> Result<()> {
        let _: String = self.query("ECHO", redis::cmd("ECHO").arg(text))?;
        Ok(())
    }
}

/// A [`Probe`] per server of a deployment (one Redis, or a cluster's masters) and which of
/// them holds each queue, so that the queue benchmarks read one Redis and a cluster alike:
/// counters from the master of each queue's slot, and `INFO` summed over the masters.
pub struct Probes {
    probes: Vec<Probe>,
    addrs: Vec<SocketAddr>,
    /// Per queue: the index of its server.
    home: BTreeMap<String, usize>,
}

impl Probes {
    /// One Redis, holding every queue.
    pub fn single(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            probes: vec![Probe::connect(addr)?],
            addrs: vec![addr],
            home: BTreeMap::new(),
        })
    }

    /// A cluster's masters with their slot ranges; `queues` are placed by the slot of
    /// their hash tag `{q}` (every key of a queue shares it).
    pub fn cluster(masters: &[crate::process::Master], queues: &[&str]) -> Result<Self> {
        let mut probes = Vec::new();
        for (addr, _) in masters {
            probes.push(Probe::connect(*addr)?);
        }
        let mut home = BTreeMap::new();
        for q in queues {
            let slot = probes[0].keyslot(&format!("{{{q}}}"))?;
            let i = masters
                .iter()
                .position(|(_, ranges)| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
                .with_context(|| format!("no master serves slot {slot} of queue `{q}`"))?;
            home.insert(q.to_string(), i);
        }
        Ok(Self {
            probes,
            addrs: masters.iter().map(|(a, _)| *a).collect(),
            home,
        })
    }

    /// The servers' loopback addresses (the first is the only one on a single Redis).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first server's probe (on a single Redis, the only one).
    pub fn first(&mut self) -> &mut Probe {
        &mut self.probes[0]
    }

    /// Which master holds each queue (empty on a single Redis).
    pub fn placement(&self) -> Vec<usize> {
        self.home.values().copied().collect()
    }

    /// `queues` grouped by the index of the server that holds them.
    fn by_server(&self, queues: &[String]) -> BTreeMap<usize, Vec<String>> {
        let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for q in queues {
            let i = self.home.get(q).copied().unwrap_or(0);
            out.entry(i).or_default().push(q.clone());
        }
        out
    }

    pub fn counters(&mut self, queues: &[String]) -> Result<Counters> {
        let mut sum = Counters::default();
        for (i, qs) in self.by_server(queues) {
            let c = self.probes[i].counters(&qs)?;
            sum.processed += c.processed;
            sum.failed += c.failed;
            sum.retried += c.retried;
        }
        Ok(sum)
    }

    pub fn trim_streams(&mut self, queues: &[String]) -> Result<()> {
        for (i, qs) in self.by_server(queues) {
            self.probes[i].trim_streams(&qs)?;
        }
        Ok(())
    }

    /// `INFO stats commandstats` of every server, summed (totals, calls and the probes' own
    /// commands alike, so [`ServerStats::others_since`] stays exact).
    pub fn stats(&mut self) -> Result<ServerStats> {
        let mut sum = ServerStats {
            total: 0,
            calls: BTreeMap::new(),
            own_before: 0,
        };
        for probe in &mut self.probes {
            let s = probe.stats()?;
            sum.total += s.total;
            sum.own_before += s.own_before;
            for (name, n) in s.calls {
                *sum.calls.entry(name).or_default() += n;
            }
        }
        Ok(sum)
    }

    pub fn config_set(&mut self, name: &str, value: &str) -> Result<()> {
        for probe in &mut self.probes {
            probe.config_set(name, value)?;
        }
        Ok(())
    }
}

/// What [`Monitor`] has seen so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Commands from unix-socket clients (hosts and the enqueuer), by name.
    pub clients: BTreeMap<String, u64>,
    /// Commands run inside scripts.
    pub lua: u64,
    /// Commands from the bench (TCP).
    pub bench: u64,
    /// The last barrier number seen.
    barrier: u64,
}

impl Seen {
    /// Client commands per name between `earlier` and `self`.
    pub fn clients_since(&self, earlier: &Seen) -> BTreeMap<String, u64> {
        self.clients
            .iter()
            .map(|(k, n)| (k.clone(), n - earlier.clients.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

const BARRIER: &str = "llmchat-bench-barrier-";

/// `MONITOR` on its own connection, read by a thread.
pub struct Monitor {
    stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<Result<()>>>,
    barriers: u64,
}

impl Monitor {
    pub fn start(addr: SocketAddr) -> Result<Self> {
        let mut stream = TcpStream::connect(addr).context("connecting the MONITOR")?;
        stream.write_all(b"MONITOR\r\n")?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        if first.trim_end() != "+OK" {
            bail!("MONITOR answered {first:?}");
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&line);
                let mut seen = sink.lock().unwrap_or_else(PoisonError::into_inner);
                count(&mut seen, text.trim_end());
            }
        });
        Ok(Self {
            stream,
            seen,
            reader: Some(reader),
            barriers: 0,
        })
    }

    /// Everything seen up to now: sends a marker through `probe` and waits until the
    /// monitor has read it, so that every earlier command is counted.
    pub fn sync(&mut self, probe: &mut Probe) -> Result<Seen> {
        self.barriers += 1;
        probe.echo(&format!("{BARRIER}{}", self.barriers))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if seen.barrier >= self.barriers {
                return Ok(seen);
            }
            if self.reader.as_ref().is_none_or(JoinHandle::is_finished) || Instant::now() > deadline
            {
                bail!("the MONITOR reader stopped or fell behind");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Counts one MONITOR line: `+1700000000.123456 [0 unix:/x/redis.sock] "xack" "k" ...`,
/// with `[0 lua]` for commands run by scripts and `[0 127.0.0.1:port]` for the bench.
fn count(seen: &mut Seen, line: &str) {
    let Some((who, command)) = line
        .split_once(" [")
        .and_then(|(_, rest)| rest.split_once("] "))
    else {
        return;
    };
    let who = who.split_once(' ').map_or(who, |(_, addr)| addr);
    let mut args = command.split('"').skip(1).step_by(2);
    let name = args.next().unwrap_or("").to_ascii_lowercase();
    if who == "lua" {
        seen.lua += 1;
    } else if who.starts_with("127.0.0.1:") {
        seen.bench += 1;
        if name == "echo"
            && let Some(n) = args.next().and_then(|a| a.strip_prefix(BARRIER))
        {
            seen.barrier = seen.barrier.max(n.parse().unwrap_or(0));
        }
    } else {
        *seen.clients.entry(name).or_default() += 1;
    }
}

/// Keyspace notifications matching a pattern, each with the instant it arrived, from one
/// server or from each of a cluster's masters (a node only notifies its own subscribers of
/// its own keys).
pub struct KeyspaceEvents {
    streams: Vec<TcpStream>,
    events: Arc<Mutex<Vec<(String, Instant)>>>,
    readers: Vec<JoinHandle<Result<()>>>,
}

impl KeyspaceEvents {
    /// Subscribes to `__keyspace@0__:{key_pattern}` on each of `addrs`; the servers must
    /// have `notify-keyspace-events` set. Returns once every subscription is active.
    pub fn start(addrs: &[SocketAddr], key_pattern: &str) -> Result<Self> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut this = Self {
            streams: Vec::new(),
            events,
            readers: Vec::new(),
        };
        for addr in addrs {
            let mut stream = TcpStream::connect(addr).context("connecting the subscriber")?;
            stream.set_nodelay(true)?;
            let channel = format!("__keyspace@0__:{key_pattern}");
            write!(
                stream,
                "*2\r\n$10\r\nPSUBSCRIBE\r\n${}\r\n{channel}\r\n",
                channel.len()
            )?;
            let mut reader = BufReader::new(stream.try_clone()?);
            this.streams.push(stream);
            let confirm =
                read_strings(&mut reader)?.context("the subscriber's connection closed")?;
            if confirm.first().map(String::as_str) != Some("psubscribe") {
                bail!("PSUBSCRIBE answered {confirm:?}");
            }
            let sink = this.events.clone();
            this.readers.push(std::thread::spawn(move || {
                // ["pmessage", pattern, channel, event]
                while let Some(message) = read_strings(&mut reader)? {
                    let at = Instant::now();
                    if let [kind, _, channel, _] = message.as_slice()
                        && kind == "pmessage"
                    {
                        let key = channel.split_once(':').map_or("", |(_, k)| k).to_string();
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((key, at));
                    }
                }
                Ok(())
            }));
        }
        Ok(this)
    }

    pub fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Takes the events received so far: (key, arrival).
    pub fn take(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until at least `n` events have arrived, or `timeout`; returns how many did.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let len = self.len();
            if len >= n || Instant::now() > deadline {
                return Ok(len);
            }
            if self.readers.iter().any(JoinHandle::is_finished) {
                bail!("a keyspace subscriber stopped");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for KeyspaceEvents {
    fn drop(&mut self) {
        for stream in &self.streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// Reads one RESP reply that is an array of bulk strings or integers; `None` at EOF.
fn read_strings(reader: &mut impl BufRead) -> Result<Option<Vec<String>>> {
    let mut header = String::new();
    if reader.read_line(&mut header)? == 0 {
        return Ok(None);
    }
    let n: usize = header
        .trim_end()
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("expected a RESP array, got {header:?}"))?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if let Some(len) = line.strip_prefix('$') {
            let len: usize = len.parse().context("a RESP bulk length")?;
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len);
            out.push(String::from_utf8_lossy(&data).into_owned());
        } else if let Some(int) = line.strip_prefix(':') {
            out.push(int.to_string());
        } else {
            bail!("unexpected RESP element {line:?}");
        }
    }
    Ok(Some(out))
}
