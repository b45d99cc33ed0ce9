//! Runs queued jobs: one fresh queue-processor instance per job, at most `concurrency` per
//! queue, with retries, dead letters and heartbeats.
//!
//! A host runs ONE reader for all its queues (one blocking Redis connection, not one per
//! concurrency slot): it asks the backend only for as many jobs as there are free slots and
//! otherwise sleeps until a slot frees up. Finished jobs are acknowledged in batches by one
//! acker. The periodic part (promoting delayed jobs exactly when they are due, requeueing
//! jobs whose host died, heartbeating the jobs running here) is three entries of the host's
//! one [`Scheduler`], added by [`QueueWorker::schedule_maintenance`]. Nothing polls.
//!
//! Shutdown: the reader stops, running jobs get the grace period, and anything unfinished
//! stays in the backend for redelivery. Nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::capabilities::{Services, WitJob, WitJobError};
use crate::engine::InvocationError;
use crate::limits::{Limit, RateLimiter};
use crate::manifest::{QueueTrigger, Rate};
use crate::metrics::{self, ComponentMetrics, Metrics};
use crate::queue::{Delivery, Finished, QueueBackend, QueueError, Queues};
use crate::registry::{LoadedComponent, Registry};
use crate::runtime::ComponentEngine;
use crate::runtime::{Invoked, invoke};
use crate::scheduler::{Scheduler, instant_of_wall_ms as instant_of};
use crate::timers::now_ms;
use crate::triggers::{Preparing, Trigger};

/// Finished jobs waiting for their batched acknowledgement.
const ACK_BUFFER: usize = 4096;
/// Most acknowledgements sent in one round trip.
const ACK_BATCH: usize = 512;
/// The longest promotion waits when nothing is known to be due: the fallback that finds
/// delayed jobs enqueued by other hosts (or by one that died before their due time).
const MAINTENANCE_MAX_SLEEP: Duration = Duration::from_secs(30);
/// How often, and how many times, an interrupt of the reader is repeated until it lands.
const INTERRUPT_RETRY: Duration = Duration::from_millis(20);
const INTERRUPT_TRIES: u32 = 5;
/// Stalled jobs requeued per queue per pass.
const RECLAIM_BATCH: usize = 1000;

/// How one attempt ended.
enum Outcome {
    /// The output, and whether the attempt reported progress.
    Done(String, bool),
    /// Retry when attempts remain (guest `retry` errors, traps, timeouts).
    Retryable(String),
    /// Dead-letter now (guest `fail` errors).
    Permanent(String),
}

struct QueueRunner {
    trigger: QueueTrigger,
    component: Arc<LoadedComponent>,
    slots: Arc<Semaphore>,
    /// The component's metric handles, resolved once.
    metrics: Arc<ComponentMetrics>,
}

/// The jobs delivered to this host and not yet finished, for heartbeats.
type InFlight = Mutex<HashMap<String, Delivery>>;

/// The runners by queue name; swapped whole when a deploy changes the queues.
type Runners = Arc<BTreeMap<String, Arc<QueueRunner>>>;

/// Runs the jobs of every `[[trigger.queue]]`; built once in `main`.
pub struct QueueWorker {
    queues: Arc<Queues>,
    runners: RwLock<Runners>,
    engine: Arc<ComponentEngine>,
    services: Arc<Services>,
    metrics: Arc<Metrics>,
    /// Where the queues' `rate` limits keep their state (Redis: shared by every host).
    limiter: Arc<dyn RateLimiter>,
    in_flight: Arc<InFlight>,
    slot_freed: Arc<Notify>,
    /// Tells the reader that the runners changed, so it reads the new set of queues.
    reconfigured: Notify,
    /// The queues' `repeat` entries, when the host runs them (`main` sets it).
    repeats: std::sync::OnceLock<Arc<crate::triggers::repeat::Repeats>>,
    tasks: TaskTracker,
}

impl QueueWorker {
    /// A worker for the jobs of `queues`, recording each job's invocation in `metrics`; it
    /// runs no queue until [`Trigger::apply`] gives it their triggers.
    pub fn new(
        queues: Arc<Queues>,
        engine: Arc<ComponentEngine>,
        services: Arc<Services>,
        metrics: Arc<Metrics>,
        limiter: Arc<dyn RateLimiter>,
    ) -> Self {
        Self {
            queues,
            runners: RwLock::default(),
            engine,
            services,
            metrics,
            limiter,
            in_flight: Arc::default(),
            slot_freed: Arc::new(Notify::new()),
            reconfigured: Notify::new(),
            repeats: std::sync::OnceLock::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Runs the queues' `repeat` entries with `repeats` from now on (before the first
    /// [`Trigger::apply`]).
    pub fn repeat_with(&self, repeats: Arc<crate::triggers::repeat::Repeats>) {
        let _ = self.repeats.set(repeats);
    }

    /// Builds the runners for `triggers` with the components of `registry`, or refuses
    /// them all; see [`Trigger::apply`].
    fn runners_for(
        &self,
        triggers: &[QueueTrigger],
        registry: &Registry,
    ) -> Result<BTreeMap<String, Arc<QueueRunner>>> {
        let current = self.runners();
        let mut runners = BTreeMap::new();
        for trigger in triggers.iter().cloned() {
            let component = registry
                .get(&trigger.component)
                .with_context(|| {
                    format!(
                        "queue `{}` names unknown component `{}`",
                        trigger.queue, trigger.component
                    )
                })?
                .clone();
            if component.processor.is_none() {
                bail!(
                    "component `{}` of queue `{}` does not export a processor",
                    trigger.component,
                    trigger.queue
                );
            }
            let slots = match current.get(&trigger.queue) {
                Some(r) if r.trigger.concurrency == trigger.concurrency => r.slots.clone(),
                _ => Arc::new(Semaphore::new(trigger.concurrency as usize)),
            };
            runners.insert(
                trigger.queue.clone(),
                Arc::new(QueueRunner {
                    metrics: self
                        .metrics
                        .component(component.name(), metrics::Trigger::Queue),
                    trigger,
                    component,
                    slots,
                }),
            );
        }
        Ok(runners)
    }

    fn runners(&self) -> Runners {
        self.runners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until `shutdown`, then lets running jobs finish within `grace`.
    pub async fn run(&self, shutdown: CancellationToken, grace: Duration) {
        let (ack_tx, ack_rx) = mpsc::channel(ACK_BUFFER);
        let acker = self.acker(ack_rx);
        let reader = async {
            self.read(shutdown.clone(), ack_tx).await;
            self.tasks.close();
            if crate::timers::timeout(grace, self.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    running = self.tasks.len(),
                    "jobs still running after the grace period are left for redelivery"
                );
            }
        };
        tokio::join!(reader, acker);
    }

    /// The single reader: asks for as many jobs as there are free slots, per queue.
    async fn read(&self, shutdown: CancellationToken, acks: mpsc::Sender<Finished>) {
        let backend = self.queues.backend().clone();
        let mut failures = 0u32;
        let mut paused = self.queues.paused_changes();
        while !shutdown.is_cancelled() {
            // Seen now: a pause or resume from here on ends the wait or read below.
            paused.mark_unchanged();
            // Registered before looking at the slots, so a slot freed meanwhile is not missed.
            let mut freed = Box::pin(self.slot_freed.notified());
            freed.as_mut().enable();
            let runners = self.runners();
            let wants: Vec<(String, usize)> = runners
                .iter()
                .filter(|(q, _)| !self.queues.is_paused(q))
                .map(|(q, r)| (q.clone(), r.slots.available_permits()))
                .filter(|(_, free)| *free > 0)
                .collect();
            if wants.is_empty() {
                tokio::select! {
                    () = &mut freed => continue,
                    () = self.reconfigured.notified() => continue,
                    _ = paused.changed() => continue,
                    () = shutdown.cancelled() => break,
                }
            }
            // `receive` watches for freed slots itself; a wake-up now is kept for it.
            drop(freed);
            let Some(received) = self.receive(&wants, &shutdown, &mut paused).await else {
                break;
            };
            match received {
                Ok(deliveries) => {
                    failures = 0;
                    for delivery in deliveries {
                        self.start_job(delivery, acks.clone());
                    }
                }
                Err(e) => {
                    failures += 1;
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(
                            backend = backend.name(),
                            "reading queues failed ({failures}×): {e}; retrying in {pause:?}"
                        );
                    }
                    tokio::select! {
                        () = crate::timers::sleep(pause) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    /// One `receive` for `wants`. While it waits, a slot freed in a queue left out of `wants`
    /// interrupts it, so a busy queue never waits on idle ones. `None` on shutdown.
    async fn receive(
        &self,
        wants: &[(String, usize)],
        shutdown: &CancellationToken,
        paused: &mut tokio::sync::watch::Receiver<u64>,
    ) -> Option<Result<Vec<Delivery>, QueueError>> {
        let backend = self.queues.backend();
        let runners = self.runners();
        let left_out: Vec<&QueueRunner> = runners
            .iter()
            .filter(|(q, _)| !wants.iter().any(|(w, _)| w == *q))
            .map(|(_, r)| r.as_ref())
            .collect();
        let read = backend.receive(wants, crate::redis::BLOCK_TIME);
        tokio::pin!(read);
        // When an interrupt is sent, the read may not be blocking yet (its command still on
        // the wire), so it is repeated a few times until the read returns.
        let mut retry_interrupt: Option<(tokio::time::Instant, u32)> = None;
        loop {
            let freed = self.slot_freed.notified();
            let retry_at = retry_interrupt.map(|(at, _)| at);
            tokio::select! {
                result = &mut read => return Some(result),
                () = freed, if retry_interrupt.is_none() && !left_out.is_empty() => {
                    if left_out.iter().any(|r| r.slots.available_permits() > 0) {
                        interrupt(backend.as_ref()).await;
                        retry_interrupt = Some((tokio::time::Instant::now() + INTERRUPT_RETRY, 1));
                    }
                }
                // New queues (a deploy), or paused or resumed ones: the read must start
                // again with the queues of now.
                () = reconfigured(&self.reconfigured, paused), if retry_interrupt.is_none() => {
                    interrupt(backend.as_ref()).await;
                    retry_interrupt = Some((tokio::time::Instant::now() + INTERRUPT_RETRY, 1));
                }
                () = sleep_until_some(retry_at) => {
                    if let Some((_, tries)) = retry_interrupt {
                        interrupt(backend.as_ref()).await;
                        retry_interrupt = (tries < INTERRUPT_TRIES)
                            .then(|| (tokio::time::Instant::now() + INTERRUPT_RETRY, tries + 1));
                    }
                }
                () = shutdown.cancelled() => return None,
            }
        }
    }

    fn start_job(&self, delivery: Delivery, acks: mpsc::Sender<Finished>) {
        let Some(runner) = self.runners().get(&delivery.job.queue).cloned() else {
            tracing::warn!(queue = %delivery.job.queue, "received a job for a queue this host no longer runs; it is left for redelivery");
            return;
        };
        self.queues.note_activity();
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(delivery.receipt.clone(), delivery.clone());
        let (engine, services, queues) = (
            self.engine.clone(),
            self.services.clone(),
            self.queues.clone(),
        );
        let (in_flight, slot_freed) = (self.in_flight.clone(), self.slot_freed.clone());
        let limiter = self.limiter.clone();
        // Take the slot now, so the reader's next look at free slots is exact. A batch may
        // bring more jobs than free slots (Redis applies COUNT per stream); the extra ones
        // wait for a slot in their task, still heartbeated as in flight.
        let slot = runner.slots.clone().try_acquire_owned().ok();
        self.tasks.spawn(async move {
            let permit: Option<OwnedSemaphorePermit> = match slot {
                Some(permit) => Some(permit),
                None => runner.slots.clone().acquire_owned().await.ok(),
            };
            wait_while_paused(&queues, &runner.trigger.queue).await;
            if let Some(rate) = runner.trigger.rate {
                wait_for_rate(limiter.as_ref(), &runner.trigger.queue, rate).await;
            }
            let lease = match runner.trigger.global_concurrency {
                Some(limit) => Some(wait_for_lease(&queues, &runner, limit, &delivery).await),
                None => None,
            };
            let started = Instant::now();
            let started_at_ms = now_ms();
            let job = &delivery.job;
            let span = crate::telemetry::spans::job(
                &job.queue,
                &job.id,
                job.attempt,
                job.trace_context.as_deref(),
            );
            let outcome = run_attempt(&runner, &engine, &services, &delivery)
                .instrument(span.clone())
                .await;
            if !matches!(outcome, Outcome::Done(..)) {
                crate::telemetry::spans::record_error(&span, "job_failed");
            }
            drop(span);
            if let Some(token) = lease {
                release_lease(&queues, &runner.trigger.queue, &token).await;
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&delivery.receipt);
            let attempt = Attempt {
                delivery,
                started,
                started_at_ms,
            };
            finish(&queues, &runner, attempt, outcome, acks).await;
            queues.note_activity();
            drop(permit);
            slot_freed.notify_one();
        });
    }

    /// Acknowledges finished jobs in batches until every sender is gone.
    async fn acker(&self, mut done: mpsc::Receiver<Finished>) {
        let backend = self.queues.backend().clone();
        let mut batch = Vec::with_capacity(ACK_BATCH);
        while done.recv_many(&mut batch, ACK_BATCH).await > 0 {
            for attempt in 1..=3u32 {
                match backend.complete(&batch).await {
                    Ok(()) => break,
                    Err(e) if attempt == 3 => tracing::warn!(
                        jobs = batch.len(),
                        "acknowledging jobs failed: {e}; they will be redelivered after their visibility timeout"
                    ),
                    Err(_) => {
                        crate::timers::sleep(Duration::from_millis(100 * u64::from(attempt))).await
                    }
                }
            }
            batch.clear();
        }
    }

    /// Adds the queues' periodic work to `scheduler`: delayed-job promotion (exactly when
    /// the earliest known job is due, pulled forward when one is enqueued here), the requeue
    /// of stalled jobs and the heartbeat of the jobs running here. Each run reads the queues
    /// of the moment, so a deploy that adds a queue needs no new entry.
    pub fn schedule_maintenance(self: &Arc<Self>, scheduler: &Scheduler) {
        let now = tokio::time::Instant::now();
        let worker = self.clone();
        let promotion = scheduler.add(
            "queue promotion",
            now,
            Box::new(move |_due| {
                let worker = worker.clone();
                Box::pin(async move {
                    let names = worker.queues.names();
                    let now = tokio::time::Instant::now();
                    if names.is_empty() {
                        return Some(now + MAINTENANCE_MAX_SLEEP);
                    }
                    Some(
                        match worker.queues.backend().promote_due(&names, now_ms()).await {
                            Ok(Some(due)) => instant_of(due).min(now + MAINTENANCE_MAX_SLEEP),
                            Ok(None) => now + MAINTENANCE_MAX_SLEEP,
                            Err(e) => {
                                tracing::warn!("promoting delayed jobs failed: {e}");
                                now + Duration::from_secs(1)
                            }
                        },
                    )
                })
            }),
        );
        self.queues.wake_promotion_with(promotion);

        let worker = self.clone();
        scheduler.add(
            "stalled-job reclaim",
            now + min_visibility(&self.runners()) / 2,
            Box::new(move |_due| {
                let worker = worker.clone();
                Box::pin(async move {
                    let runners = worker.runners();
                    let backend = worker.queues.backend();
                    for runner in runners.values() {
                        let (q, visibility) = (&runner.trigger.queue, runner.trigger.visibility.0);
                        let keep = runner.trigger.keep_failed;
                        match backend.reclaim_stalled(q, visibility, RECLAIM_BATCH, keep).await {
                            Ok(0) => {}
                            Ok(n) => tracing::warn!(queue = %q, jobs = n, "requeued stalled jobs (their host stopped without finishing them)"),
                            Err(e) => tracing::warn!(queue = %q, "reclaiming stalled jobs failed: {e}"),
                        }
                    }
                    Some(tokio::time::Instant::now() + min_visibility(&runners) / 2)
                })
            }),
        );

        let worker = self.clone();
        scheduler.add(
            "job heartbeat",
            now + min_visibility(&self.runners()) / 3,
            Box::new(move |_due| {
                let alive: Vec<Delivery> = worker
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                let worker = worker.clone();
                Box::pin(async move {
                    if let Err(e) = worker.queues.backend().heartbeat(&alive).await {
                        tracing::warn!(jobs = alive.len(), "heartbeat failed: {e}");
                    }
                    worker.renew_leases(&alive).await;
                    Some(tokio::time::Instant::now() + min_visibility(&worker.runners()) / 3)
                })
            }),
        );
    }
}

impl QueueWorker {
    /// Extends the global concurrency leases of the jobs running here (a job still waiting
    /// for one holds none: renewing only extends what exists).
    async fn renew_leases(&self, alive: &[Delivery]) {
        let runners = self.runners();
        let mut by_ttl: BTreeMap<Duration, Vec<(String, String)>> = BTreeMap::new();
        for d in alive {
            if let Some(r) = runners
                .get(&d.job.queue)
                .filter(|r| r.trigger.global_concurrency.is_some())
            {
                by_ttl
                    .entry(r.trigger.visibility.0)
                    .or_default()
                    .push((d.job.queue.clone(), d.receipt.clone()));
            }
        }
        for (ttl, leases) in by_ttl {
            if let Err(e) = self.queues.backend().renew_leases(&leases, ttl).await {
                tracing::warn!(
                    leases = leases.len(),
                    "renewing global concurrency leases failed: {e}"
                );
            }
        }
    }
}

/// The shortest visibility timeout of the queues: reclaim runs at half of it, heartbeats at
/// a third, so a live job is never taken for a stalled one.
fn min_visibility(runners: &Runners) -> Duration {
    runners
        .values()
        .map(|r| r.trigger.visibility.0)
        .min()
        .unwrap_or(Duration::from_secs(60))
}

/// A job delivered as its queue was paused (the read was already on its way) waits in its
/// slot, heartbeated, until the queue is resumed: a paused queue starts nothing.
async fn wait_while_paused(queues: &Queues, queue: &str) {
    // Every job passes here: the common case is one read lock and no subscription.
    if !queues.is_paused(queue) {
        return;
    }
    let mut changes = queues.paused_changes();
    while queues.is_paused(queue) {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Waits for one of the queue's `global_concurrency` leases (shared by every host), as for
/// the rate: the job waits in its slot, heartbeated. Woken when another job of the queue
/// gives its lease back (on any host), or when the earliest lease would lapse (its host
/// died). Returns the lease's token.
async fn wait_for_lease(
    queues: &Queues,
    runner: &QueueRunner,
    limit: u32,
    delivery: &Delivery,
) -> String {
    let (backend, queue) = (queues.backend(), &runner.trigger.queue);
    let token = delivery.receipt.clone();
    let ttl = runner.trigger.visibility.0;
    let mut failures = 0u32;
    // Watching before the first try, so a lease given back in between wakes the wait; the
    // one watch lasts the whole wait (it is made again only if it could not be made).
    let mut watch = None;
    loop {
        if watch.is_none() {
            watch = backend.watch_leases(queue).await.ok();
        }
        let wait = match backend.acquire_lease(queue, limit, &token, ttl).await {
            Ok(None) => return token,
            Ok(Some(lapse)) => lapse,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(queue = %queue, "taking a global concurrency lease failed ({failures}×): {e}");
                }
                Duration::from_millis(100 * u64::from(failures.min(10)))
            }
        };
        match &mut watch {
            Some(watch) => {
                let _ = crate::timers::timeout(wait, watch.changed()).await;
            }
            None => crate::timers::sleep(wait.min(Duration::from_secs(1))).await,
        }
    }
}

async fn release_lease(queues: &Queues, queue: &str, token: &str) {
    if let Err(e) = queues.backend().release_lease(queue, token).await {
        tracing::warn!(
            queue,
            "giving a global concurrency lease back failed: {e}; it lapses after the visibility timeout"
        );
    }
}

/// Waits until the queue's rate admits one more job start, as BullMQ's limiter does: the job
/// waits in its slot (heartbeated as in flight), it is not failed. One check per try; the
/// wait is the limiter's own `retry_after`, so nothing polls faster than the rate.
async fn wait_for_rate(limiter: &dyn RateLimiter, queue: &str, rate: Rate) {
    // A tenth of the rate as burst: room for the timer's and Redis's jitter, so the
    // sustained rate is the configured one (a burst of 1 loses every late start).
    let limit = Limit {
        rate,
        burst: (rate.count / 10).max(1),
    };
    let key = format!("queue:{queue}");
    loop {
        let decision = limiter.check(&key, &limit).await;
        if decision.allowed {
            return;
        }
        crate::timers::sleep(decision.retry_after.max(Duration::from_millis(1))).await;
    }
}

/// Resolves when the queues to read change: a deploy, a pause or a resume.
async fn reconfigured(deployed: &Notify, paused: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::select! {
        () = deployed.notified() => {}
        _ = paused.changed() => {}
    }
}

async fn interrupt(backend: &dyn QueueBackend) {
    if let Err(e) = backend.interrupt_receive().await {
        tracing::debug!("interrupting the queue read failed: {e}");
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => crate::timers::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one attempt on a fresh instance under the queue's timeout, and records it in the
/// component's metrics.
async fn run_attempt(
    runner: &QueueRunner,
    engine: &ComponentEngine,
    services: &Arc<Services>,
    delivery: &Delivery,
) -> Outcome {
    let component = &runner.component;
    let Some(pre) = component.processor.clone() else {
        return Outcome::Permanent(format!(
            "component `{}` does not export a processor",
            component.name()
        ));
    };
    let mut store = component.new_store(engine, services);
    store.data_mut().caps.set_job(delivery.handle());
    let job = WitJob {
        id: delivery.job.id.clone(),
        queue: delivery.job.queue.clone(),
        payload: delivery.job.payload.clone(),
        attempt: delivery.job.attempt,
        max_attempts: delivery.job.max_attempts,
    };
    let timeout = runner.trigger.timeout.0;
    let Invoked { result, mut store } =
        invoke(component.name(), store, timeout, &runner.metrics, |store| {
            Box::pin(async move { pre.process(store, &job).await })
        })
        .await;
    let progressed = store.data_mut().caps.flush_progress().await;
    match result {
        Ok(Ok(output)) => Outcome::Done(output, progressed),
        Ok(Err(WitJobError::Retry(m))) => Outcome::Retryable(m),
        Ok(Err(WitJobError::Fail(m))) => Outcome::Permanent(m),
        Err(e) => {
            let message = match e {
                InvocationError::Timeout(_) => format!("component `{}` {e}", component.name()),
                _ => format!("component `{}` failed: {e}", component.name()),
            };
            Outcome::Retryable(store.data().with_guest_output(&message))
        }
    }
}

/// One attempt of a job on this host.
struct Attempt {
    delivery: Delivery,
    started: Instant,
    started_at_ms: u64,
}

/// Records how the attempt ended: ack (keeping the result under `keep_completed`), retry
/// with backoff, or dead letter.
async fn finish(
    queues: &Queues,
    runner: &QueueRunner,
    attempt: Attempt,
    outcome: Outcome,
    acks: mpsc::Sender<Finished>,
) {
    let backend = queues.backend();
    let Attempt {
        delivery,
        started,
        started_at_ms,
    } = attempt;
    let job = &delivery.job;
    let elapsed_us = started.elapsed().as_micros() as u64;
    let keep_failed = runner.trigger.keep_failed;
    let result = match outcome {
        Outcome::Done(output, progressed) => {
            tracing::debug!(queue = %job.queue, job = %job.id, attempt = job.attempt, elapsed_us, "job done: {output}");
            let finished = Finished {
                delivery,
                result: output,
                started_at_ms,
                finished_at_ms: now_ms(),
                keep: runner.trigger.keep_completed,
                progressed,
            };
            // If the acker is gone (shutdown), the job stays pending and is redelivered.
            let _ = acks.send(finished).await;
            return;
        }
        Outcome::Retryable(error) if job.attempt < job.max_attempts => {
            let wait = job.backoff.delay(job.attempt);
            tracing::info!(queue = %job.queue, job = %job.id, attempt = job.attempt, "job failed, retrying in {wait:?}: {error}");
            backend
                .retry(&delivery, now_ms() + wait.as_millis() as u64, &error)
                .await
                .map(|()| {
                    queues.note_local_due(now_ms() + wait.as_millis() as u64);
                })
        }
        Outcome::Retryable(error) => {
            let error = format!("{error} (attempt {} of {})", job.attempt, job.max_attempts);
            tracing::warn!(queue = %job.queue, job = %job.id, "job dead-lettered: {error}");
            backend.bury(&delivery, &error, keep_failed).await
        }
        Outcome::Permanent(error) => {
            tracing::warn!(queue = %job.queue, job = %job.id, "job failed permanently, dead-lettered: {error}");
            backend.bury(&delivery, &error, keep_failed).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(queue = %job.queue, job = %job.id, component = runner.component.name(),
            "recording the job's failure failed: {e}; it will be redelivered after its visibility timeout");
    }
}

impl Trigger for QueueWorker {
    type Kind = QueueTrigger;

    /// Creates each queue's stream and consumer group (in Redis), so that the first job
    /// enqueued after the deploy has somewhere to go.
    fn prepare<'a>(&'a self, triggers: &'a [QueueTrigger]) -> Preparing<'a> {
        Box::pin(async move {
            for t in triggers {
                self.queues
                    .backend()
                    .prepare(&t.queue)
                    .await
                    .with_context(|| format!("preparing queue `{}`", t.queue))?;
            }
            Ok(())
        })
    }

    /// Makes `triggers` the queues (their settings for enqueue) and builds their runners
    /// with the components of `registry`, handing them to the reader. Jobs already running
    /// finish on the component version they started with; the next job of each queue starts
    /// on the new one. A queue whose concurrency is unchanged keeps its slots, so the limit
    /// holds across the swap.
    fn apply(&self, triggers: &[QueueTrigger], registry: &Registry) -> Result<()> {
        let runners = self.runners_for(triggers, registry)?;
        self.queues.set_triggers(triggers);
        *self.runners.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runners);
        if let Some(repeats) = self.repeats.get() {
            repeats.apply(triggers);
        }
        self.reconfigured.notify_one();
        Ok(())
    }
}
