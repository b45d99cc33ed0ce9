//! A private Redis Cluster per test: 6 `redis-server`s (3 masters, 3 replicas) on free
//! loopback ports under a temp folder, built with `redis-cli --cluster create`, killed and
//! removed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll_until;

/// How long a node may be silent before the others fail it over (short, for the tests).
pub const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// `count` ports on 127.0.0.1 that are free, as are their cluster-bus ports (+10000).
fn free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = fastrand::u16(20_000..30_000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}

/// One node on `port`, its data and `nodes.conf` in `dir/PORT` (so a restarted node
/// rejoins the cluster it left).
fn spawn(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .arg("--dir")
        .arg(dir.join(port.to_string()))
        .arg("--logfile")
        .arg(dir.join(port.to_string()).join("redis.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); install it with `just deps`"))
}

impl RedisCluster {
    /// Starts the 6 nodes and waits until every node sees all 16384 slots served.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let nodes = free_ports(6)
            .into_iter()
            .map(|port| {
                std::fs::create_dir(dir.path().join(port.to_string())).expect("a node's folder");
                Node {
                    port,
                    child: Some(spawn(dir.path(), port)),
                }
            })
            .collect();
        let cluster = RedisCluster { nodes, dir };
        for node in &cluster.nodes {
            poll_until(
                Duration::from_secs(10),
                "a cluster node to accept connections",
                || {
                    redis::cmd("PING")
                        .query::<String>(&mut node.connection()?)
                        .ok()
                },
            );
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (installed with redis-server) creates the cluster");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_healthy(Duration::from_secs(30));
        cluster.wait_until_replicated(Duration::from_secs(30));
        cluster
    }

    /// Waits until every master has a replica that finished its initial synchronisation
    /// and streams from it (`state=online` on the master's side, no sync in progress on the
    /// replica's): a replica that has not cannot take over without losing everything.
    pub fn wait_until_replicated(&self, timeout: Duration) {
        poll_until(
            timeout,
            "every master to stream to an in-sync replica",
            || {
                let infos: Vec<String> = self
                    .live_nodes()
                    .filter_map(|n| n.info("INFO", "replication"))
                    .collect();
                let masters = infos.iter().filter(|i| i.contains("role:master"));
                let replicas = infos.iter().filter(|i| i.contains("role:slave"));
                let streaming = masters.clone().all(|i| {
                    i.lines()
                        .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
                });
                let synced = replicas.clone().all(|i| {
                    i.contains("master_link_status:up") && i.contains("master_sync_in_progress:0")
                });
                (masters.count() == 3 && replicas.count() == 3 && streaming && synced).then_some(())
            },
        );
    }

    /// Waits until every live node says `cluster_state:ok` with every slot served.
    pub fn wait_until_healthy(&self, timeout: Duration) {
        poll_until(
            timeout,
            "every cluster node to see all slots served",
            || {
                self.live_nodes()
                    .all(|node| {
                        node.info("CLUSTER", "INFO").is_some_and(|info| {
                            info.contains("cluster_state:ok")
                                && info.contains("cluster_slots_ok:16384")
                        })
                    })
                    .then_some(())
            },
        );
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node on that port")
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port")
    }

    fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The seed URLs, comma-separated (as `REDIS_URL` takes them).
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    /// The seed URLs as a TOML array, for `[redis] url`.
    pub fn toml_urls(&self) -> String {
        format!("{:?}", self.urls())
    }

    /// One node's URL (for a host that finds out it is a cluster by asking).
    pub fn first_url(&self) -> String {
        self.urls().remove(0)
    }

    fn urls(&self) -> Vec<String> {
        self.live_nodes()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A cluster connection for test assertions.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("cluster client")
            .get_connection()
            .expect("cluster connection")
    }

    /// The sum over live nodes of `INFO errorstats`' count for errors starting with `prefix`
    /// (`CROSSSLOT`, `MOVED`, ...).
    pub fn error_count(&self, prefix: &str) -> u64 {
        let needle = format!("errorstat_{prefix}:count=");
        self.live_nodes()
            .filter_map(|n| n.info("INFO", "errorstats"))
            .flat_map(|info| {
                info.lines()
                    .filter_map(|l| l.trim().strip_prefix(&needle)?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

impl RedisCluster {
    /// The port of the live master that serves `key`'s slot, as `CLUSTER NODES` on a live
    /// node says; `None` while no healthy master serves it (during a failover).
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let node = self.live_nodes().next()?;
        let mut conn = node.connection()?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .ok()?;
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn).ok()?;
        nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let serves = fields.iter().skip(8).any(|range| {
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
                });
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                serves.then_some(port)
            })
    }

    /// Kills the master of `key`'s slot and waits until a replica serves it in its place
    /// and every slot is served again; returns the killed node's port.
    pub fn fail_over(&mut self, key: &str) -> u16 {
        let master = self.master_of(key).expect("a master serves the key");
        self.kill(master);
        poll_until(
            Duration::from_secs(30),
            "a replica to take over the killed master's slots",
            || self.master_of(key).filter(|&m| m != master),
        );
        self.wait_until_healthy(Duration::from_secs(30));
        master
    }

    /// Moves the slot of `key` from its master to another one, as `redis-cli --cluster
    /// reshard` does: `IMPORTING`/`MIGRATING`, `MIGRATE` of its keys in batches while clients
    /// keep writing (they get `ASK` and `TRYAGAIN` meanwhile), then `SETSLOT NODE` on every
    /// master (clients get `MOVED`). Returns the ports it moved from and to.
    pub fn move_slot_of(&self, key: &str) -> (u16, u16) {
        let from = self.master_of(key).expect("a master serves the key");
        let node = |port: u16| {
            self.node(port)
                .connection()
                .expect("a connection to the node")
        };
        let (mut source, masters) = (node(from), self.masters());
        let to = *masters
            .iter()
            .find(|&&p| p != from)
            .expect("another master");
        let mut target = node(to);
        let id = |conn: &mut redis::Connection| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(conn)
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(&mut source), id(&mut target));
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut source)
            .expect("CLUSTER KEYSLOT");
        let setslot = |conn: &mut redis::Connection, state: &str, node_id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node_id)
                .query::<()>(conn)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
        };
        setslot(&mut target, "IMPORTING", &from_id);
        setslot(&mut source, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut source)
                .expect("MIGRATE");
        }
        setslot(&mut target, "NODE", &to_id);
        setslot(&mut source, "NODE", &to_id);
        for port in masters.into_iter().filter(|&p| p != from && p != to) {
            setslot(&mut node(port), "NODE", &to_id);
        }
        (from, to)
    }

    /// What each live node says of itself and of `key`: for diagnosing a test's failure.
    pub fn describe(&self, key: &str) -> String {
        self.live_nodes()
            .map(|n| {
                let Some(mut conn) = n.connection() else {
                    return format!(":{} unreachable", n.port);
                };
                let myself: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut conn)
                    .map(|all| {
                        all.lines()
                            .find(|l| l.contains("myself"))
                            .unwrap_or("")
                            .to_string()
                    })
                    .unwrap_or_else(|e| e.to_string());
                let xlen = redis::cmd("XLEN")
                    .arg(key)
                    .query::<i64>(&mut conn)
                    .map_or_else(|e| e.to_string(), |n| n.to_string());
                let clients = n.info("INFO", "clients").unwrap_or_default();
                let clients = clients
                    .lines()
                    .find(|l| l.starts_with("connected_clients"))
                    .unwrap_or("");
                format!(":{} {myself} | XLEN {xlen} | {clients}", n.port)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `INFO section` of each live master, in port order.
    pub fn master_infos(&self, section: &str) -> Vec<String> {
        let mut masters = self.masters();
        masters.sort_unstable();
        masters
            .into_iter()
            .filter_map(|port| self.node(port).info("INFO", section))
            .collect()
    }

    /// `CLIENT LIST` of each live master, with its port.
    pub fn master_client_lists(&self) -> Vec<(u16, String)> {
        self.masters()
            .into_iter()
            .filter_map(|port| {
                let node = self.node(port);
                let list = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query(&mut node.connection()?)
                    .ok()?;
                Some((port, list))
            })
            .collect()
    }

    /// The ports of the live masters.
    fn masters(&self) -> Vec<u16> {
        self.live_nodes()
            .filter(|n| {
                n.info("INFO", "replication")
                    .is_some_and(|i| i.contains("role:master"))
            })
            .map(|n| n.port)
            .collect()
    }

    /// `kill -9` of the node on `port`: it dies with whatever it had not replicated.
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        if let Some(mut child) = node.child.take() {
            child.kill().expect("kill -9 of a cluster node");
            let _ = child.wait();
        }
    }
}

impl RedisCluster {
    /// Starts the node on `port` again (after [`RedisCluster::kill`]); it rejoins the
    /// cluster, as a replica if its slots were failed over meanwhile.
    pub fn restart(&mut self, port: u16) {
        let dir = self.dir.path().to_path_buf();
        let node = self.node_mut(port);
        assert!(node.child.is_none(), "node {port} is running");
        node.child = Some(spawn(&dir, port));
        poll_until(
            Duration::from_secs(10),
            "the restarted node to accept connections",
            || {
                redis::cmd("PING")
                    .query::<String>(&mut node.connection()?)
                    .ok()
            },
        );
    }
}

impl Node {
    fn connection(&self) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()
    }

    /// `command section` (`INFO errorstats`, `CLUSTER INFO`) as text.
    fn info(&self, command: &str, section: &str) -> Option<String> {
        redis::cmd(command)
            .arg(section)
            .query::<String>(&mut self.connection()?)
            .ok()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // LLMCHAT_KEEP_CLUSTER=DIR keeps the nodes' folders (logs, nodes.conf) for a post-mortem.
        if let Some(keep) = std::env::var_os("LLMCHAT_KEEP_CLUSTER") {
            let _ = Command::new("cp")
                .arg("-r")
                .arg(self.dir.path())
                .arg(keep)
                .status();
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
