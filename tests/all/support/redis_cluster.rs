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
    _dir: tempfile::TempDir,
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

impl RedisCluster {
    /// Starts the 6 nodes and waits until every node sees all 16384 slots served.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let nodes = free_ports(6)
            .into_iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir(&node_dir).expect("a node's folder");
                let child = Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("cannot start redis-server ({e}); install it with `just deps`")
                    });
                Node {
                    port,
                    child: Some(child),
                }
            })
            .collect();
        let cluster = RedisCluster { nodes, _dir: dir };
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
        cluster
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
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
