//! The arms the (q) section runs beside llmchat's redis throughput rounds, interleaved with
//! them ([`interleave`]) at each concurrency:
//!
//! - BullMQ keeping nothing, the peer of llmchat's default (which keeps nothing either);
//! - BullMQ keeping 1,000 completed jobs for an hour, and llmchat with
//!   [`KEEP_COMPLETED`] on its queues: what keeping finished jobs costs each.
//!
//! Then, after llmchat's latency rows, BullMQ's enqueue→start. BullMQ gets one private
//! `redis-server` of its own, started as llmchat's (its FLUSHALLs must not touch llmchat's
//! queues), and llmchat-keeping its own host on its own Redis. The llmchat-keeping arm runs
//! only when this host's manifest accepts [`KEEP_COMPLETED`]; until then its rows say so.

use std::path::Path;

use anyhow::Result;

use crate::Paths;
use crate::bullmq::{self, Outcome, Retention};
use crate::interleave;
use crate::process::RedisServer;
use crate::queues::{self, Nodes, RedisRig, RigArm, RigOptions, Settings, Throughput};

/// What llmchat keeps of finished jobs in the keeping arm, the `[[trigger.queue]]` line.
pub const KEEP_COMPLETED: &str = r#"keep_completed = { count = 1000, age = "1h" }"#;

pub struct Results {
    pub bullmq: bullmq::Results,
    /// llmchat with [`KEEP_COMPLETED`], per concurrency; `Err`: why it did not run.
    pub keep_completed: Outcome<Vec<Throughput>>,
}

/// The peers over the whole (q) section, collecting their figures.
pub struct Peers {
    setup: Outcome<bullmq::Setup>,
    redis: RedisServer,
    keep_accepted: Outcome<()>,
    bullmq: Vec<bullmq::Measured>,
    keep: Vec<Throughput>,
}

/// The peers' arms at one concurrency.
pub struct Beside {
    concurrency: u32,
    keep: Option<RigArm<RedisRig>>,
    bullmq: Vec<bullmq::Arm>,
}

impl Beside {
    /// Every arm, for [`interleave::rounds`].
    pub fn arms(&mut self) -> Vec<&mut dyn interleave::Arm> {
        let mut arms: Vec<&mut dyn interleave::Arm> = Vec::new();
        if let Some(keep) = &mut self.keep {
            arms.push(keep);
        }
        for arm in &mut self.bullmq {
            arms.push(arm);
        }
        arms
    }
}

impl Peers {
    /// Prepares BullMQ (`npm ci` when needed) and its Redis, and checks whether the
    /// manifest takes [`KEEP_COMPLETED`]; `noop` is the trivial processor.
    pub fn start(paths: &Paths, noop: &Path) -> Result<Self> {
        let setup = bullmq::Setup::prepare(&paths.repo);
        if let Err(reason) = &setup {
            eprintln!("  BullMQ: {reason}");
        }
        let keep_accepted = queues::accepts_keep_completed(noop).map_err(|e| {
            eprintln!("  llmchat keeping completed jobs: not run: the manifest says:\n{e}");
            // The parser's verdict is its last line ("unknown field `keep_completed`, ...").
            let verdict = e.lines().last().unwrap_or_default();
            let verdict = verdict.split(", expected").next().unwrap_or_default();
            format!(
                "not run: this host's manifest does not take `{KEEP_COMPLETED}` yet ({verdict})"
            )
        });
        Ok(Self {
            setup,
            redis: RedisServer::start()?,
            keep_accepted,
            bullmq: Vec::new(),
            keep: Vec::new(),
        })
    }

    /// Starts the peers' arms at `concurrency`: their processes wait for their rounds.
    pub fn at(
        &self,
        paths: &Paths,
        cache: &Path,
        noop: &Path,
        concurrency: u32,
        s: &Settings,
    ) -> Result<Beside> {
        let keep = match self.keep_accepted {
            Ok(()) => {
                let options = RigOptions {
                    keep_completed: true,
                    ..RigOptions::default()
                };
                let rig =
                    RedisRig::start_with(Nodes::unix()?, paths, cache, noop, concurrency, options)?;
                Some(RigArm::new(rig))
            }
            Err(_) => None,
        };
        let bullmq = Retention::ALL
            .map(|r| bullmq::Arm::start(&self.setup, &self.redis, concurrency, r, s))
            .into();
        Ok(Beside {
            concurrency,
            keep,
            bullmq,
        })
    }

    /// Keeps the figures of `beside`'s arms, and stops them.
    pub fn collect(&mut self, beside: Beside) {
        let Beside {
            concurrency,
            keep,
            bullmq,
        } = beside;
        if let Some(arm) = keep {
            let t = arm.finish(concurrency);
            let commands = t.redis.as_ref().map_or(0.0, |(all, _)| *all);
            eprintln!(
                "  llmchat keeping completed jobs, 3 × concurrency {concurrency}: {:.0} jobs/s, \
                 {commands:.2} commands/job with script internals",
                t.jobs_per_sec()
            );
            self.keep.push(t);
        }
        self.bullmq
            .extend(bullmq.into_iter().map(bullmq::Arm::finish));
    }

    /// BullMQ's enqueue→start (after llmchat's), and every figure.
    pub fn finish(self, s: &Settings) -> Results {
        let latency = bullmq::latency(&self.setup, &self.redis, s);
        Results {
            bullmq: bullmq::Results {
                throughput: self.bullmq,
                latency,
            },
            keep_completed: self.keep_accepted.map(|()| self.keep),
        }
    }
}
