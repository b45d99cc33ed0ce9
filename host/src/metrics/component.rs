//! Per-component metric handles, resolved once at start-up so that recording an invocation
//! is a few atomic adds and two short-locked histogram observations: no label formatting,
//! no map look-up, no allocation.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::activity::Activity;

/// Upper bounds of the invocation duration buckets, in seconds: 100 µs to 60 s.
pub(super) const DURATION_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Peak memory buckets: 64 KiB to 4 GiB, doubling, so that the usual power-of-two
/// `memory_limit`s (16 MiB, 32 MiB, ...) are bucket bounds.
pub(super) fn peak_memory_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(65536.0, 2.0, 17)
}

/// The most memory one invocation held, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakMemory {
    /// Linear memories and tables plus the host side: what `memory_limit` caps.
    pub total: usize,
    /// The part the host held for the invocation.
    pub host: usize,
}

/// What started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    Http,
    Queue,
    Schedule,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::Http, Trigger::Queue, Trigger::Schedule];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Queue => "queue",
            Trigger::Schedule => "schedule",
        }
    }

    /// Its position in [`Trigger::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why an invocation failed, as the `kind` label of `llmchat_component_errors_total`. The
/// runtime maps its invocation errors onto these.
///
/// | kind | counted when |
/// |---|---|
/// | `memory` | the instance hit its `memory_limit` (or its `max_resources`) |
/// | `timeout` | the invocation outlasted its `timeout` |
/// | `trap` | a wasm trap or guest panic, and any other error that ended the call: a failed instantiation, a host call that aborted the guest |
/// | `guest` | the guest ended normally but reported a failure: a queue job's `retry` or `fail` error, or an HTTP handler's `ResponseOutparam::set(Err(..))` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Trap,
    Timeout,
    Memory,
    Guest,
}

impl ErrorKind {
    pub(super) const ALL: [ErrorKind; 4] = [
        ErrorKind::Trap,
        ErrorKind::Timeout,
        ErrorKind::Memory,
        ErrorKind::Guest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Memory => "memory",
            ErrorKind::Guest => "guest",
        }
    }
}

macro_rules! label_value {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}
label_value!(Trigger);
label_value!(ErrorKind);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ComponentLabels {
    pub component: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct InvocationLabels {
    pub component: String,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ErrorLabels {
    pub component: String,
    pub kind: ErrorKind,
}

/// The metrics of one component under one trigger; see [`super::Metrics::component`].
#[derive(Debug, Clone)]
pub struct ComponentMetrics {
    pub(super) invocations: Counter,
    /// Indexed by the position of the kind in [`ErrorKind::ALL`].
    pub(super) errors: [Counter; 4],
    pub(super) duration: Histogram,
    pub(super) peak_memory: Histogram,
    pub(super) peak_host_memory: Histogram,
    /// The host-wide totals the dashboard samples.
    pub(super) activity: Arc<Activity>,
    pub(super) trigger: Trigger,
    /// `llmchat_rate_limited_total{component}`, for HTTP components.
    pub(super) rate_limited: Option<Counter>,
}

impl ComponentMetrics {
    /// What starts the invocations these metrics count.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    pub(super) fn new(
        invocations: Counter,
        error: impl Fn(ErrorKind) -> Counter,
        duration: Histogram,
        peak_memory: Histogram,
        activity: Arc<Activity>,
        trigger: Trigger,
    ) -> Self {
        Self {
            invocations,
            errors: ErrorKind::ALL.map(error),
            duration,
            peak_memory,
            peak_host_memory: Histogram::new(peak_memory_buckets()),
            activity,
            trigger,
            rate_limited: None,
        }
    }

    /// Records one finished invocation: how long it ran, the most memory it held, and how it
    /// failed, if it did.
    pub fn invocation(&self, elapsed: Duration, peak: PeakMemory, error: Option<ErrorKind>) {
        self.invocations.inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.peak_memory.observe(peak.total as f64);
        self.peak_host_memory.observe(peak.host as f64);
        self.activity.record(self.trigger, elapsed);
        if let Some(kind) = error {
            self.error(kind);
        }
    }

    /// Counts a request refused by the route's rate limit (no invocation happened).
    pub fn rate_limited(&self) {
        if let Some(c) = &self.rate_limited {
            c.inc();
        }
    }

    /// Records a failure noticed apart from the end of the invocation (an HTTP handler's
    /// error response is seen by the request, not by the task running the guest).
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }
}
