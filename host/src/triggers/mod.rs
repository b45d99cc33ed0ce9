//! The triggers: the ways a component gets invoked. Each turns an event into one call of a
//! component's export through [`crate::runtime::invoke`], on a fresh instance, and decides
//! what the result means for the event.
//!
//! - [`http`]: `[[trigger.http]]`, one `wasi:http` handler call per request, on the routes
//!   [`http::LiveRoutes`] holds (served by [`crate::http::HttpServer`]);
//! - [`queue::QueueWorker`]: `[[trigger.queue]]`, one queue-processor call per job, with
//!   retries, dead letters and heartbeats over the jobs [`crate::queue::Queues`] stores;
//! - [`schedule::Schedules`]: `[[trigger.schedule]]`, one monitor call per tick, claimed
//!   cluster-wide so that one host runs it.
//!
//! Each is a [`Trigger`]: it runs one kind of [`crate::manifest::TriggerKind`], and a deploy
//! or start-up hands it the checked triggers of its kind to run. [`TriggerSet`] holds one of
//! each, registered once in `main`, and is all that start-up and deploys see of them. A new
//! kind of trigger is its config type (`manifest`), one `Trigger` impl here, and one line
//! where `main` registers it.

pub mod http;
pub mod queue;
pub mod repeat;
pub mod schedule;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Result, bail};

use crate::manifest::{Registered, Triggers};
use crate::registry::Registry;

/// A future that borrows its trigger: what [`Trigger::prepare`] returns.
pub type Preparing<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// What runs the triggers of one kind.
pub trait Trigger: Send + Sync + 'static {
    /// The checked triggers it runs.
    type Kind: Registered;

    /// Readies the storage `triggers` need (a queue's stream and group) before they are
    /// applied; may wait on I/O, and changes nothing the host runs. A deploy prepares only
    /// the triggers of the component deployed.
    fn prepare<'a>(&'a self, triggers: &'a [Self::Kind]) -> Preparing<'a> {
        let _ = triggers;
        Box::pin(async { Ok(()) })
    }

    /// Makes exactly `triggers` run, with the components of `registry`: the new ones start,
    /// changed ones switch to their new settings or component version, the others stop.
    /// Checks everything before changing anything; an error leaves it as it was.
    fn apply(&self, triggers: &[Self::Kind], registry: &Registry) -> Result<()>;
}

/// A [`Trigger`] of any kind, chosen from [`Triggers`] by its kind.
trait AnyTrigger: Send + Sync {
    fn kind(&self) -> &'static str;
    fn prepare<'a>(&'a self, triggers: &'a Triggers) -> Preparing<'a>;
    fn apply(&self, triggers: &Triggers, registry: &Registry) -> Result<()>;
}

impl<T: Trigger> AnyTrigger for Arc<T> {
    fn kind(&self) -> &'static str {
        T::Kind::KIND
    }

    fn prepare<'a>(&'a self, triggers: &'a Triggers) -> Preparing<'a> {
        Trigger::prepare(&**self, T::Kind::of(triggers))
    }

    fn apply(&self, triggers: &Triggers, registry: &Registry) -> Result<()> {
        Trigger::apply(&**self, T::Kind::of(triggers), registry)
    }
}

/// One runner per kind of trigger: what start-up and deploys apply an application's
/// triggers to.
#[derive(Default)]
pub struct TriggerSet {
    runners: Vec<Box<dyn AnyTrigger>>,
}

impl TriggerSet {
    /// This set with `trigger` running its kind; a second runner of a kind replaces the
    /// first.
    pub fn with<T: Trigger>(mut self, trigger: Arc<T>) -> Self {
        self.runners.retain(|r| r.kind() != T::Kind::KIND);
        self.runners.push(Box::new(trigger));
        self
    }

    /// Readies the storage of `triggers` (see [`Trigger::prepare`]).
    pub async fn prepare(&self, triggers: &Triggers) -> Result<()> {
        for runner in &self.runners {
            runner.prepare(triggers).await?;
        }
        Ok(())
    }

    /// Makes `triggers` what runs, kind by kind. A kind without a runner is refused rather
    /// than left silently idle. If a runner refuses, the kinds applied before it already
    /// run the new triggers: the caller applies the previous set again (a deploy does).
    pub fn apply(&self, triggers: &Triggers, registry: &Registry) -> Result<()> {
        for kind in Triggers::KINDS {
            if triggers.count(kind) > 0 && !self.runners.iter().any(|r| r.kind() == *kind) {
                bail!("nothing on this host runs [[trigger.{kind}]]");
            }
        }
        for runner in &self.runners {
            runner.apply(triggers, registry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn a_kind_of_trigger_nothing_runs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"").unwrap();
        let manifest = Manifest::parse(
            "[component.app]\nsource = \"app.wasm\"\n\
             [[trigger.queue]]\nqueue = \"q\"\ncomponent = \"app\"\n",
            &dir.path().join("llmchat.toml"),
        )
        .unwrap();
        let none = TriggerSet::default();
        none.apply(&Triggers::default(), &Registry::default())
            .unwrap();
        let e = none
            .apply(&manifest.triggers, &Registry::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "nothing on this host runs [[trigger.queue]]");
    }
}
