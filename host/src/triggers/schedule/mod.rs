//! `[[trigger.schedule]]`: monitor components run once per tick, on a fresh instance.
//!
//! Each schedule is one entry of the host's [`Scheduler`]. When a tick is due the entry
//! (1) skips it, counted, if the previous run is still going — runs never overlap; (2)
//! claims it through [`TickClaims`] so that, with several hosts on one Redis, exactly one
//! runs it; (3) starts the run as a task tracked here, under the schedule's timeout and the
//! component's memory cap. A run that traps, times out or hits its memory cap fails its own
//! tick only: the host counts it, raises an alert, and the next tick runs as usual. The
//! report's samples and alerts are published through [`Monitors`].

mod claim;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use claim::{Claim, LocalClaims, RedisClaims, TickClaims};

use crate::capabilities::{Services, WitTick};
use crate::manifest::ScheduleTrigger;
use crate::metrics::{self, ComponentMetrics, Metrics, Monitors, Severity, TickOutcome};
use crate::registry::{LoadedComponent, Registry};
use crate::runtime::ComponentEngine;
use crate::runtime::invoke;
use crate::scheduler::{EntryWaker, SchedulerHandle, instant_of_wall_ms as instant_of};
use crate::timers::now_ms;
use crate::triggers::Trigger;

/// How long past its timeout a run's claim is held: a host that dies mid-run blocks the
/// schedule for at most its timeout plus this.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// One schedule and its state between ticks.
struct Schedule {
    trigger: ScheduleTrigger,
    component: Arc<LoadedComponent>,
    metrics: Arc<ComponentMetrics>,
    /// Shared with the schedule's next version after a deploy, so a run of the old version
    /// still going makes the new version's ticks skip too: never two runs at once.
    running: Arc<AtomicBool>,
    /// Ticks skipped since the last run, told to the next run.
    skipped: AtomicU32,
    /// The tick the schedule's entry is waiting for, in ms since the epoch.
    next_tick_ms: AtomicU64,
    /// Set when a deploy replaced or removed the schedule: its entry leaves the scheduler.
    retired: AtomicBool,
    waker: OnceLock<EntryWaker>,
}

impl Schedule {
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Some(waker) = self.waker.get() {
            waker.wake_at(tokio::time::Instant::now());
        }
    }

    /// Whether `trigger` on `component` is exactly this schedule (a deploy that left it
    /// alone).
    fn is(&self, trigger: &ScheduleTrigger, component: &Arc<LoadedComponent>) -> bool {
        self.trigger.component == trigger.component
            && self.trigger.when.to_string() == trigger.when.to_string()
            && self.trigger.timeout == trigger.timeout
            && Arc::ptr_eq(&self.component, component)
    }
}

/// Every `[[trigger.schedule]]` of the host; built once in `main`, changed by deploys.
pub struct Schedules {
    current: Mutex<BTreeMap<String, Arc<Schedule>>>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// Where each schedule's entry ticks.
    scheduler: SchedulerHandle,
}

/// What every run needs.
struct Shared {
    engine: Arc<ComponentEngine>,
    services: Arc<Services>,
    monitors: Arc<Monitors>,
    claims: Arc<dyn TickClaims>,
    runs: TaskTracker,
}

impl Schedules {
    /// No schedules yet; [`Trigger::apply`] adds them, each an entry of `scheduler`.
    pub fn new(
        engine: Arc<ComponentEngine>,
        services: Arc<Services>,
        metrics: Arc<Metrics>,
        claims: Arc<dyn TickClaims>,
        scheduler: SchedulerHandle,
    ) -> Self {
        Self {
            current: Mutex::default(),
            shared: Arc::new(Shared {
                engine,
                services,
                monitors: metrics.monitors().clone(),
                claims,
                runs: TaskTracker::new(),
            }),
            metrics,
            scheduler,
        }
    }
}

impl Trigger for Schedules {
    type Kind = ScheduleTrigger;

    /// Makes `triggers` the schedules, with the components of `registry`: new ones get a
    /// scheduler entry, first due at their next tick; changed ones (another component
    /// version, period or timeout) are replaced; the others leave. Checks everything before
    /// changing anything.
    fn apply(&self, triggers: &[ScheduleTrigger], registry: &Registry) -> Result<()> {
        let mut wanted = Vec::with_capacity(triggers.len());
        for trigger in triggers {
            let component = registry
                .get(&trigger.component)
                .with_context(|| {
                    format!(
                        "schedule `{}` names unknown component `{}`",
                        trigger.name, trigger.component
                    )
                })?
                .clone();
            if component.monitor.is_none() {
                bail!(
                    "component `{}` of schedule `{}` does not export `llmchat:runtime/monitoring`",
                    trigger.component,
                    trigger.name
                );
            }
            if trigger.when.next_after(now_ms()).is_none() {
                bail!("schedule `{}`: {} never ticks", trigger.name, trigger.when);
            }
            wanted.push((trigger, component));
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for (trigger, component) in wanted {
            let existing = current.remove(&trigger.name);
            if let Some(schedule) = existing.as_ref().filter(|s| s.is(trigger, &component)) {
                next.insert(trigger.name.clone(), schedule.clone());
                continue;
            }
            let running = match &existing {
                Some(old) => {
                    old.retire();
                    old.running.clone()
                }
                None => Arc::default(),
            };
            self.metrics.monitors().register_schedule(&trigger.name);
            let schedule = Arc::new(Schedule {
                metrics: self
                    .metrics
                    .component(component.name(), metrics::Trigger::Schedule),
                trigger: trigger.clone(),
                component,
                running,
                skipped: AtomicU32::new(0),
                next_tick_ms: AtomicU64::new(0),
                retired: AtomicBool::new(false),
                waker: OnceLock::new(),
            });
            self.start(&schedule);
            next.insert(trigger.name.clone(), schedule);
        }
        for (_, gone) in std::mem::take(&mut *current) {
            gone.retire();
        }
        *current = next;
        Ok(())
    }
}

impl Schedules {
    /// Adds the schedule's entry, first due at its next tick.
    fn start(&self, schedule: &Arc<Schedule>) {
        let Some(first) = schedule.trigger.when.next_after(now_ms()) else {
            return;
        };
        schedule.next_tick_ms.store(first, Ordering::Relaxed);
        tracing::info!(schedule = %schedule.trigger.name, component = %schedule.trigger.component, "scheduled {}", schedule.trigger.when);
        let (entry, shared) = (schedule.clone(), self.shared.clone());
        let waker = self.scheduler.add(
            format!("schedule {}", schedule.trigger.name),
            instant_of(first),
            Box::new(move |_due| Box::pin(tick(entry.clone(), shared.clone()))),
        );
        let _ = schedule.waker.set(waker);
    }

    /// After the scheduler stopped: lets running ticks finish within `grace`.
    pub async fn drain(&self, grace: Duration) {
        self.shared.runs.close();
        if crate::timers::timeout(grace, self.shared.runs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.shared.runs.len(),
                "monitor runs still going after the grace period are abandoned"
            );
        }
    }
}

/// A due tick: skip, claim, or start the run. Returns when the next tick is due.
async fn tick(schedule: Arc<Schedule>, shared: Arc<Shared>) -> Option<tokio::time::Instant> {
    if schedule.retired.load(Ordering::Acquire) {
        return None;
    }
    let name = &schedule.trigger.name;
    let tick_ms = schedule.next_tick_ms.load(Ordering::Relaxed);
    // Ticks missed while the host was stalled are not made up for: the next one is the
    // first after now.
    let next_ms = schedule.trigger.when.next_after(tick_ms.max(now_ms()))?;
    schedule.next_tick_ms.store(next_ms, Ordering::Relaxed);
    let next = Some(instant_of(next_ms));
    if schedule.running.load(Ordering::Acquire) {
        skip(&schedule, &shared, "the previous run is still going");
        return next;
    }
    let lease = schedule.trigger.timeout + LEASE_MARGIN;
    let keep = Duration::from_millis(next_ms.saturating_sub(tick_ms)) * 2;
    match shared.claims.claim(name, tick_ms, lease, keep).await {
        Ok(Claim::Won) => {
            schedule.running.store(true, Ordering::Release);
            let skipped = schedule.skipped.swap(0, Ordering::Relaxed);
            shared
                .runs
                .spawn(run(schedule.clone(), shared.clone(), tick_ms, skipped));
        }
        Ok(Claim::Taken) => shared.monitors.tick(name, TickOutcome::Elsewhere),
        Ok(Claim::Busy) => skip(
            &schedule,
            &shared,
            "its previous run is still going on another host",
        ),
        Err(e) => {
            tracing::warn!(schedule = %name, "tick not run: claiming it failed ({e}), and running it unclaimed could run it twice");
            shared.monitors.tick(name, TickOutcome::Unclaimed);
        }
    }
    next
}

fn skip(schedule: &Schedule, shared: &Shared, why: &str) {
    let skipped = schedule.skipped.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(schedule = %schedule.trigger.name, skipped, "tick skipped: {why}");
    shared
        .monitors
        .tick(&schedule.trigger.name, TickOutcome::Skipped);
}

/// One run of the monitor on a fresh instance; publishes its report or its failure.
async fn run(schedule: Arc<Schedule>, shared: Arc<Shared>, tick_ms: u64, skipped: u32) {
    let (name, component) = (&schedule.trigger.name, &schedule.component);
    if let Some(pre) = &component.monitor {
        let store = component.new_store(&shared.engine, &shared.services);
        let tick = WitTick {
            schedule: name.clone(),
            scheduled_at_ms: tick_ms,
            skipped,
        };
        let timeout = schedule.trigger.timeout;
        let pre = pre.clone();
        // Each tick is the root of a trace of its own.
        let invoked = invoke(
            component.name(),
            store,
            timeout,
            &schedule.metrics,
            |store| Box::pin(async move { pre.run(store, &tick).await }),
        )
        .instrument(crate::telemetry::spans::tick(name))
        .await;
        let result = invoked.result;
        let monitor = component.name();
        match result {
            Ok(Ok(report)) => {
                for problem in shared.monitors.publish(monitor, &report) {
                    tracing::warn!(schedule = %name, "part of the report was refused: {problem}");
                }
                shared.monitors.tick(name, TickOutcome::Ok);
            }
            Ok(Err(message)) => {
                shared.monitors.tick(name, TickOutcome::Failed);
                shared.monitors.alert(
                    monitor,
                    Severity::Warning,
                    &format!("schedule `{name}`: the tick failed: {message}"),
                );
            }
            Err(e) => {
                shared.monitors.tick(name, TickOutcome::Failed);
                shared.monitors.alert(
                    monitor,
                    Severity::Warning,
                    &format!("schedule `{name}`: component `{monitor}` failed: {e}"),
                );
            }
        }
    }
    if let Err(e) = shared.claims.release(name, tick_ms).await {
        tracing::debug!(schedule = %name, "releasing the tick's claim failed ({e}); it expires with its lease");
    }
    schedule.running.store(false, Ordering::Release);
}
