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

pub mod http;
pub mod queue;
pub mod schedule;
