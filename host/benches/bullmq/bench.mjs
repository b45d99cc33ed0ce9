// The BullMQ peer of llmchat's queue benchmark (section (q) of `just bench`), run by
// host/benches/llmchat/bullmq.rs on a private redis-server spawned like llmchat's, in the
// same run, so that every llmchat/BullMQ ratio comes from one machine at one moment.
//
// The workload is llmchat's: 3 queues (q0, q1, q2), one Worker per queue with the given
// concurrency, trivial jobs of 261 bytes (`{"n":"00000042","pad":"xxx…"}`, the payload of
// queues.rs) and a processor that does nothing.
//
//   node bench.mjs --redis ADDR --concurrency N --per-queue N --rounds N --mode MODE
//                  [--warm-up-per-queue N] [--retention remove|keep] [--latency-jobs N] [--step]
//
// ADDR is a unix socket path or host:port. MODE:
// - `throughput`: a warm-up round (WARM-UP-PER-QUEUE jobs per queue, default a tenth of
//   PER-QUEUE), then ROUNDS measured rounds; the figure is the median of their jobs/s. Each
//   round starts from an empty Redis (FLUSHALL, so rounds and arms never see each other's
//   keys), makes the 3 Queues and the 3 Workers (`autorun: false`, connected), enqueues
//   PER-QUEUE jobs per queue with `addBulk` (chunks of 1,000, queues in turn), then starts the
//   workers: the clock runs from `worker.run()` until they have emitted `completed` for every
//   job (the event itself stops it, no polling).
//   Per round, over enqueue + processing: Redis's `total_commands_processed` delta (every
//   command, those run inside scripts included, this script's own INFO taken out: the
//   method of llmchat's "commands/job with script internals" row) and `INFO commandstats`
//   per command; over the processing only: CPU time of this process and of redis-server
//   (utime + stime from /proc/PID/stat, as llmchat's rows read its host and redis-server).
// - `latency`: the workers run at CONCURRENCY; after 30 warm-up jobs, LATENCY-JOBS jobs are
//   added one at a time, one every 2 ms (500/s, llmchat's pacing), each `queue.add` awaited;
//   a job's latency runs from just before its `queue.add` to the first line of the processor.
//
// Retention: `remove` gives every job `removeOnComplete: true, removeOnFail: true` (llmchat's
// default keeps nothing); `keep` gives `{ count: 1000, age: 3600 }` for both (against llmchat's
// `keep_completed = { count = 1000, age = "1h" }`).
//
// Output: one JSON object on stdout at the end. With --step (used by the bench to interleave
// BullMQ's rounds with llmchat's), the script also waits for a line on stdin before each
// round, the warm-up included, and prints a `{"kind":"round",...}` line after it; the last
// line is then the `{"kind":"result",...}` object. Progress goes to stderr.

import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const QUEUES = ['q0', 'q1', 'q2'];
const CHUNK = 1000;
const PAD = 'x'.repeat(236);
const LATENCY_PACE_MS = 2;
const LATENCY_WARM_UP = 30;
/** A round with no completion for this long has stalled: the script fails. */
const STALL_MS = 10_000;
const RETENTION = {
  remove: { removeOnComplete: true, removeOnFail: true },
  keep: {
    removeOnComplete: { count: 1000, age: 3600 },
    removeOnFail: { count: 1000, age: 3600 },
  },
};
/** USER_HZ: the unit of utime and stime in /proc/PID/stat on Linux. */
const TICK_US = 10_000;

function parseArgs(argv) {
  const args = { retention: 'remove', latencyJobs: 5000, step: false };
  const names = {
    '--redis': 'redis',
    '--concurrency': 'concurrency',
    '--per-queue': 'perQueue',
    '--rounds': 'rounds',
    '--mode': 'mode',
    '--retention': 'retention',
    '--latency-jobs': 'latencyJobs',
    '--warm-up-per-queue': 'warmUpPerQueue',
  };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--step') {
      args.step = true;
      continue;
    }
    const name = names[argv[i]];
    if (!name || i + 1 >= argv.length) {
      throw new Error(`unexpected argument ${JSON.stringify(argv[i])}`);
    }
    args[name] = argv[++i];
  }
  args.warmUpPerQueue ??= Math.max(1, Math.floor(Number(args.perQueue) / 10));
  for (const n of ['concurrency', 'perQueue', 'rounds', 'latencyJobs', 'warmUpPerQueue']) {
    args[n] = Number(args[n]);
    if (!Number.isInteger(args[n]) || args[n] < 1) {
      throw new Error(`--${n} must be a positive integer`);
    }
  }
  if (!args.redis) throw new Error('--redis ADDR is required');
  if (!['throughput', 'latency'].includes(args.mode)) {
    throw new Error('--mode must be throughput or latency');
  }
  if (!RETENTION[args.retention]) throw new Error('--retention must be remove or keep');
  return args;
}

/** ioredis options for a unix socket path or host:port. */
function connection(addr) {
  if (addr.startsWith('/')) return { path: addr };
  const at = addr.lastIndexOf(':');
  return { host: addr.slice(0, at), port: Number(addr.slice(at + 1)) };
}

function payload(n) {
  return { n: String(n).padStart(8, '0'), pad: PAD };
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return 0;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Nearest rank, as the Rust bench's `percentile`. */
function percentile(values, p) {
  if (values.length === 0) return 0;
  const v = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * v.length);
  return v[Math.min(Math.max(rank, 1), v.length) - 1];
}

/** utime + stime of a process, µs. */
function cpuUs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": state is fields[0], utime fields[11], stime fields[12].
  return (Number(fields[11]) + Number(fields[12])) * TICK_US;
}

/** The bench's own connection: INFO and FLUSHALL, its commands counted. */
class Probe {
  constructor(addr) {
    this.redis = new Redis({ ...connection(addr), lazyConnect: true });
    this.own = 0;
  }

  async info(section) {
    this.own++;
    return this.redis.info(section);
  }

  async flushall() {
    this.own++;
    await this.redis.flushall();
  }

  /** total_commands_processed and calls per command, and this probe's count before. */
  async stats() {
    const ownBefore = this.own;
    const text = await this.info('everything');
    const calls = {};
    let total = 0;
    for (const line of text.split('\r\n')) {
      if (line.startsWith('total_commands_processed:')) {
        total = Number(line.split(':')[1]);
      } else if (line.startsWith('cmdstat_')) {
        const [name, rest] = line.slice(8).split(':');
        calls[name] = Number(/calls=(\d+)/.exec(rest)[1]);
      }
    }
    return { total, calls, ownBefore };
  }

  async pid() {
    const text = await this.info('server');
    return Number(/process_id:(\d+)/.exec(text)[1]);
  }

  async version() {
    const text = await this.info('server');
    return /redis_version:([^\r\n]+)/.exec(text)[1];
  }
}

/** Commands others ran between two stats, and per command name. */
function commandsSince(before, after) {
  const all = after.total - before.total - (after.ownBefore - before.ownBefore);
  const calls = {};
  for (const [name, n] of Object.entries(after.calls)) {
    const d = n - (before.calls[name] ?? 0);
    if (d > 0) calls[name] = d;
  }
  // The probe's own, as the Rust bench takes its INFO out.
  for (const own of ['info', 'flushall']) delete calls[own];
  return { all, calls };
}

/** The 3 Queues and their 3 Workers on a flushed Redis, workers connected but not running. */
async function setUp(args, processor) {
  const conn = connection(args.redis);
  const defaultJobOptions = RETENTION[args.retention];
  const queues = QUEUES.map(name => new Queue(name, { connection: conn, defaultJobOptions }));
  const workers = QUEUES.map(
    name =>
      new Worker(name, processor, { connection: conn, concurrency: args.concurrency, autorun: false }),
  );
  for (const w of workers) w.on('error', error => console.error(`worker error: ${error}`));
  await Promise.all(queues.map(q => q.waitUntilReady()));
  await Promise.all(queues.map(q => q.queueMetaInitialized));
  await Promise.all(workers.map(w => w.waitUntilReady()));
  return { queues, workers };
}

async function tearDown({ queues, workers }) {
  await Promise.all(workers.map(w => w.close()));
  await Promise.all(queues.map(q => q.close()));
}

/**
 * Counts finished jobs; `done` resolves as the last one is counted (so the clock stops at
 * the `completed` event itself, no polling), and rejects when nothing finished for STALL_MS.
 */
class Finished {
  constructor(total) {
    this.n = 0;
    this.total = total;
    this.last = performance.now();
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.watchdog = setInterval(() => {
        if (performance.now() - this.last > STALL_MS) {
          clearInterval(this.watchdog);
          reject(new Error(`stalled: ${this.n} of ${this.total} jobs finished, then nothing for ${STALL_MS} ms`));
        }
      }, 250);
    });
    if (total === 0) this.finish();
  }

  add() {
    this.n++;
    this.last = performance.now();
    if (this.n === this.total) this.finish();
  }

  finish() {
    clearInterval(this.watchdog);
    this.resolve();
  }
}

/** One throughput round of `perQueue` jobs per queue. */
async function round(args, probe, redisPid, perQueue) {
  await probe.flushall();
  const rig = await setUp(args, async () => {});
  const total = perQueue * QUEUES.length;
  const finished = new Finished(total);
  let completed = 0;
  let failed = 0;
  for (const w of rig.workers) {
    w.on('completed', () => {
      completed++;
      finished.add();
    });
    w.on('failed', () => {
      failed++;
      finished.add();
    });
  }
  const before = await probe.stats();
  const enqueueStarted = performance.now();
  for (let start = 0; start < perQueue; start += CHUNK) {
    for (const [q, queue] of rig.queues.entries()) {
      const jobs = [];
      for (let i = start; i < Math.min(start + CHUNK, perQueue); i++) {
        jobs.push({ name: 'job', data: payload(i * QUEUES.length + q) });
      }
      await queue.addBulk(jobs);
    }
  }
  const enqueueMs = performance.now() - enqueueStarted;
  const cpuBefore = [cpuUs(process.pid), cpuUs(redisPid)];
  const started = performance.now();
  const running = rig.workers.map(w => w.run());
  await finished.done;
  const elapsedMs = performance.now() - started;
  const cpuNode = cpuUs(process.pid) - cpuBefore[0];
  const cpuRedis = cpuUs(redisPid) - cpuBefore[1];
  const after = await probe.stats();
  await tearDown(rig);
  await Promise.all(running);
  return {
    jobs: completed,
    failed,
    elapsedMs,
    jobsPerSec: completed / (elapsedMs / 1000),
    enqueuePerSec: total / (enqueueMs / 1000),
    commands: commandsSince(before, after),
    cpuNodeUs: cpuNode,
    cpuRedisUs: cpuRedis,
  };
}

/** Waits for one line on stdin (the bench's go-ahead); false at end of input. */
function stepper() {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return async () => !(await lines.next()).done;
}

async function throughput(args, probe) {
  const redisPid = await probe.pid();
  const next = args.step ? stepper() : async () => true;
  const rounds = [];
  let jobs = 0;
  let failed = 0;
  let all = 0;
  let cpuNode = 0;
  let cpuRedis = 0;
  const calls = {};
  for (let r = 0; r <= args.rounds; r++) {
    if (!(await next())) throw new Error('stdin closed before every round ran');
    const warmUp = r === 0;
    const res = await round(args, probe, redisPid, warmUp ? args.warmUpPerQueue : args.perQueue);
    const n = Math.max(res.jobs, 1);
    const line = {
      kind: 'round',
      warmUp,
      jobs: res.jobs,
      seconds: res.elapsedMs / 1000,
      jobsPerSec: res.jobsPerSec,
      commandsPerJob: res.commands.all / n,
      cpuNodeUsPerJob: res.cpuNodeUs / n,
      cpuRedisUsPerJob: res.cpuRedisUs / n,
      enqueuePerSec: res.enqueuePerSec,
    };
    console.error(JSON.stringify(line));
    if (args.step) console.log(JSON.stringify(line));
    if (warmUp) continue;
    rounds.push(res.jobsPerSec);
    jobs += res.jobs;
    failed += res.failed;
    all += res.commands.all;
    cpuNode += res.cpuNodeUs;
    cpuRedis += res.cpuRedisUs;
    for (const [name, n] of Object.entries(res.commands.calls)) calls[name] = (calls[name] ?? 0) + n;
  }
  const perJob = n => n / Math.max(jobs, 1);
  return {
    rounds,
    jobsPerSec: median(rounds),
    jobs,
    failed,
    commandsPerJob: perJob(all),
    commandsPerJobByName: Object.fromEntries(Object.entries(calls).map(([k, n]) => [k, perJob(n)])),
    cpuNodeUsPerJob: perJob(cpuNode),
    cpuRedisUsPerJob: perJob(cpuRedis),
  };
}

async function latency(args, probe) {
  await probe.flushall();
  const started = new Map();
  let finished = new Finished(LATENCY_WARM_UP);
  const rig = await setUp(args, async job => {
    const at = performance.now();
    if (!started.has(job.data.n)) {
      started.set(job.data.n, at);
      finished.add();
    }
  });
  const running = rig.workers.map(w => w.run());
  for (let i = 0; i < LATENCY_WARM_UP; i++) {
    await rig.queues[i % QUEUES.length].add('job', { n: `w${i}`, pad: PAD });
  }
  await finished.done;
  started.clear();
  finished = new Finished(args.latencyJobs);
  const sent = [];
  const callsMs = [];
  const t0 = performance.now();
  for (let i = 0; i < args.latencyJobs; i++) {
    const due = t0 + LATENCY_PACE_MS * i;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const data = payload(i);
    const at = performance.now();
    await rig.queues[i % QUEUES.length].add('job', data);
    callsMs.push(performance.now() - at);
    sent.push([data.n, at]);
  }
  // A job that never starts is reported as missing, not as a failure of the run.
  await finished.done.catch(() => {});
  await tearDown(rig);
  await Promise.all(running);
  const samplesMs = sent.filter(([n]) => started.has(n)).map(([n, at]) => started.get(n) - at);
  return {
    jobs: args.latencyJobs,
    missing: args.latencyJobs - samplesMs.length,
    p50Ms: percentile(samplesMs, 50),
    p99Ms: percentile(samplesMs, 99),
    callP50Ms: percentile(callsMs, 50),
    callP99Ms: percentile(callsMs, 99),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const probe = new Probe(args.redis);
  await probe.redis.connect();
  const redisVersion = await probe.version();
  const figures = args.mode === 'throughput' ? await throughput(args, probe) : await latency(args, probe);
  const bullmq = JSON.parse(
    readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url), 'utf8'),
  ).version;
  await probe.redis.quit();
  console.log(
    JSON.stringify({
      kind: 'result',
      mode: args.mode,
      retention: args.retention,
      concurrency: args.concurrency,
      perQueue: args.perQueue,
      bullmq,
      node: process.versions.node,
      redisVersion,
      ...figures,
    }),
  );
}

main().then(
  () => process.exit(0),
  error => {
    console.error(`bench.mjs: ${error.stack ?? error}`);
    process.exit(1);
  },
);
