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
//! - **Replica acks** (issue 14, item 4): a third arm, a second private cluster built the
//!   same way (3 masters with a replica each, the same slot ranges, so the queues land on
//!   masters alike) whose host and enqueuer run with `[redis] replica_acks = 1`: every
//!   enqueue (and retry, burial, kv write...) is followed by `WAIT 1` on its connection.
//!   A second cluster rather than the first one again, because two hosts on the same
//!   queues would take each other's jobs; its rounds interleave with the other two
//!   (the order rotates each round). Besides jobs/s and enqueue→start, the enqueue call
//!   itself is timed, under the fill's load ([`queues::EnqueueLoad`]: 256 in flight while
//!   the host is frozen) and one at a time (the enqueue→start jobs, at 500/s).
//!
//! The target: the cluster costs at most 20% of single-Redis throughput on this machine.

use anyhow::Result;

use crate::Paths;
use crate::process::{RedisCluster, RedisServer};
use crate::queues::{self, CONCURRENCIES, Latency, Nodes, RedisRig, Settings, Tally, Throughput};

/// `[redis] replica_acks` of the third arm.
pub const REPLICA_ACKS: u32 = 1;

/// One Redis or a cluster: per concurrency (like [`CONCURRENCIES`]) and the latency.
pub struct Arm {
    pub throughput: Vec<Throughput>,
    pub latency: Latency,
}

pub struct Results {
    pub settings: String,
    pub single: Arm,
    pub cluster: Arm,
    /// The second cluster, host and enqueuer with `replica_acks = REPLICA_ACKS`.
    pub durable: Arm,
    /// Per queue (q0, q1, q2), the index of the master that holds it, on each cluster.
    pub placement: Vec<usize>,
    pub placement_durable: Vec<usize>,
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
    let mut durable = Nodes::Cluster(RedisCluster::start()?);
    let (mut placement, mut placement_durable) = (Vec::new(), Vec::new());
    let (mut single_t, mut cluster_t, mut durable_t) = (Vec::new(), Vec::new(), Vec::new());
    for c in CONCURRENCIES {
        let mut rigs = [
            RedisRig::start(single, paths, cache, &noop, c, false)?,
            RedisRig::start(cluster, paths, cache, &noop, c, false)?,
            RedisRig::start_with_acks(durable, paths, cache, &noop, c, false, REPLICA_ACKS)?,
        ];
        placement = rigs[1].probes.placement();
        placement_durable = rigs[2].probes.placement();
        for rig in &mut rigs {
            rig.warm_up(s)?;
        }
        let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
        // Round r starts with arm r mod 3, so that each arm goes first as often as the
        // others and a drifting machine weighs on all alike.
        for round in 0..s.rounds {
            for k in 0..rigs.len() {
                let i = (round + k) % rigs.len();
                rigs[i].measured_round(s, &mut tallies[i])?;
            }
        }
        let [ta, tb, tc] = tallies.map(|t| t.finish(c));
        let rate = |t: &Throughput| t.jobs_per_sec().max(f64::MIN_POSITIVE);
        let enqueue = |t: &Throughput| t.enqueue.as_ref().map_or(0.0, |e| e.per_sec());
        eprintln!(
            "  3 × concurrency {c}: one Redis {:.0} jobs/s, cluster {:.0} jobs/s ({:.2}×), \
             cluster+acks {:.0} jobs/s ({:.2}× the cluster); enqueued at {:.0} / {:.0} / {:.0} \
             jobs/s",
            ta.jobs_per_sec(),
            tb.jobs_per_sec(),
            tb.jobs_per_sec() / rate(&ta),
            tc.jobs_per_sec(),
            tc.jobs_per_sec() / rate(&tb),
            enqueue(&ta),
            enqueue(&tb),
            enqueue(&tc)
        );
        single_t.push(ta);
        cluster_t.push(tb);
        durable_t.push(tc);
        let [a, b, d] = rigs;
        single = a.stop();
        cluster = b.stop();
        durable = d.stop();
    }

    let latency = |nodes: Nodes, acks: u32| -> Result<Latency> {
        let mut rig = RedisRig::start_with_acks(
            nodes,
            paths,
            cache,
            &processor,
            CONCURRENCIES[0],
            true,
            acks,
        )?;
        let events = rig.events()?;
        rig.start_latency(s, &events)
    };
    let single_latency = latency(single, 0)?;
    let cluster_latency = latency(cluster, 0)?;
    let durable_latency = latency(durable, REPLICA_ACKS)?;
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
        durable: Arm {
            throughput: durable_t,
            latency: durable_latency,
        },
        placement,
        placement_durable,
    })
}
