//! [`Conn`]: what a command closure is given, one node's connection or a cluster's. Both
//! speak `redis::aio::ConnectionLike`, so `cmd.query_async(&mut c)`, pipelines and scripts
//! are written once; the cluster routes each by its key's slot and follows `MOVED`/`ASK`.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A command connection of the pool.
#[derive(Clone)]
pub enum Conn {
    /// One Redis: a multiplexed connection that reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: one multiplexed connection per node, routed by slot.
    Cluster(ClusterConnection),
}

impl Conn {
    /// `WAIT replicas timeout` on this connection, at the master of `key`'s slot: how many
    /// replicas hold every write this connection sent there so far.
    pub async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        let acked = match self {
            Conn::Single(c) => wait.query_async(c).await?,
            Conn::Cluster(c) => {
                let master = Route::new(slot(key.as_bytes()), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(master));
                redis::from_redis_value(c.route_command(wait, routing).await?)?
            }
        };
        Ok(acked)
    }
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"llmchat:{jobs}:stream"), slot(b"jobs"));
        assert_eq!(
            slot(b"a{}b"),
            slot(b"a{}b"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(slot(b"a{}b"), slot(b""));
    }
}
