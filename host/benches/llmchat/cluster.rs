//! (k) Redis Cluster beside one Redis (issue 14, item 8), in the same run: the queue
//! benchmark of [`queues`] on a private `redis-server` and on a private 6-node cluster (3
//! masters with a replica each, [`RedisCluster`]), with the same code ([`RedisRig`]).
//!
//! - **Throughput**: 3 queues × concurrency 5 and × 50 of trivial jobs, the real `llmchat up`
//!   binary: for each round the host is frozen (`SIGSTOP`), [`Settings::per_queue`] jobs per
//!   queue are enqueued through the host library, and the clock runs from `SIGCONT` until
//!   the queues' `processed` counters reach the total. Both hosts run side by side, each on
//!   its own Redis; after a warm-up each, their measured rounds alternate (single first in
//!   even rounds, cluster first in odd ones), so that a drifting machine weighs on both
//!   alike; the figure is the median of each one's rounds. Both reach Redis over loopback
//!   TCP (a cluster has no unix sockets), so the ratio is the cluster's cost, not the
//!   socket's; the (q) rows use a unix socket and are a little faster.
//! - **Redis commands per job**, enqueue and script internals included:
//!   `total_commands_processed` over the measured rounds, summed over the masters on the
//!   cluster (the bench's own `INFO` and counter reads taken out, as in (q)); replicas are
//!   not counted (they apply the masters' writes, which costs CPU, see below).
//! - **CPU per job**: the host's, and every `redis-server`'s (on the cluster all 6 nodes,
//!   replicas included: they share the 2 cores).
//! - **Enqueue→start**: `fixture-processor` jobs enqueued at 500/s through the library; a
//!   keyspace-notification subscriber timestamps each job's first kv write. A node notifies
//!   only its own subscribers of its own keys, so on the cluster there is one subscriber per
//!   master (the kv keys carry no hash tag and spread over all three), all feeding one
//!   timestamped list.
//!
//! The target: the cluster costs at most 20% of single-Redis throughput on this machine.

use anyhow::Result;

use crate::Paths;
use crate::process::{RedisCluster, RedisServer};
use crate::queues::{self, CONCURRENCIES, Latency, Nodes, RedisRig, Settings, Tally, Throughput};

/// One Redis or the cluster: per concurrency (like [`CONCURRENCIES`]) and the latency.
pub struct Arm {
    pub throughput: Vec<Throughput>,
    pub latency: Latency,
}

pub struct Results {
    pub settings: String,
    pub single: Arm,
    pub cluster: Arm,
    /// Per queue (q0, q1, q2), the index of the master that holds it.
    pub placement: Vec<usize>,
}

pub fn measure(paths: &Paths, cache: &std::path::Path, s: &Settings) -> Result<Results> {
    let noop = paths.wasm.join("fixture_noop_processor.wasm");
    let processor = paths.wasm.join("fixture_processor.wasm");
    queues::prime_cache(paths, cache, &noop, &processor)?;
    let mut single = Nodes::Single {
        server: RedisServer::start()?,
        unix: false,
    };
    let mut cluster = Nodes::Cluster(RedisCluster::start()?);
    let mut placement = Vec::new();
    let (mut single_t, mut cluster_t) = (Vec::new(), Vec::new());
    for c in CONCURRENCIES {
        let mut a = RedisRig::start(single, paths, cache, &noop, c, false)?;
        let mut b = RedisRig::start(cluster, paths, cache, &noop, c, false)?;
        placement = b.probes.placement();
        a.warm_up(s)?;
        b.warm_up(s)?;
        let (mut ta, mut tb) = (Tally::default(), Tally::default());
        for round in 0..s.rounds {
            if round % 2 == 0 {
                a.measured_round(s, &mut ta)?;
                b.measured_round(s, &mut tb)?;
            } else {
                b.measured_round(s, &mut tb)?;
                a.measured_round(s, &mut ta)?;
            }
        }
        let (ta, tb) = (ta.finish(c), tb.finish(c));
        eprintln!(
            "  3 × concurrency {c}: one Redis {:.0} jobs/s, cluster {:.0} jobs/s ({:.2}×)",
            ta.jobs_per_sec(),
            tb.jobs_per_sec(),
            tb.jobs_per_sec() / ta.jobs_per_sec().max(f64::MIN_POSITIVE)
        );
        single_t.push(ta);
        cluster_t.push(tb);
        single = a.stop();
        cluster = b.stop();
    }

    let latency = |nodes: Nodes| -> Result<Latency> {
        let mut rig = RedisRig::start(nodes, paths, cache, &processor, CONCURRENCIES[0], true)?;
        let events = rig.events()?;
        rig.start_latency(s, &events)
    };
    let single_latency = latency(single)?;
    let cluster_latency = latency(cluster)?;
    Ok(Results {
        settings: s.describe(),
        single: Arm {
            throughput: single_t,
            latency: single_latency,
        },
        cluster: Arm {
            throughput: cluster_t,
            latency: cluster_latency,
        },
        placement,
    })
}
