//! HTTP requests to component routes, by route: `llmchat_http_requests_total{route,
//! status_class}` and `llmchat_http_request_duration_seconds{route}`, from the request's
//! arrival until its response body has been sent (or cut).
//!
//! The `route` label is the manifest's route pattern (`/api/...`), never the path, so its
//! values are bounded by the manifest and its deploys; a request no route matched (404 or
//! 405) counts under `route="unmatched"`. Handles are resolved once per route when the
//! route table is built, so recording a request is two atomic adds and one histogram
//! observation.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::HistogramFamily;

/// The `route` label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The first digit of a status code, as the `status_class` label: `1xx` .. `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusClass(u8);

impl StatusClass {
    /// The five classes, in order.
    pub const ALL: [StatusClass; 5] = [
        StatusClass(1),
        StatusClass(2),
        StatusClass(3),
        StatusClass(4),
        StatusClass(5),
    ];

    /// The class of `status` (100..=599; hyper refuses anything else).
    pub fn of(status: u16) -> StatusClass {
        StatusClass((status / 100).clamp(1, 5) as u8)
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_fmt(encoder, format_args!("{}xx", self.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub route: String,
    pub status_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RouteLabels {
    pub route: String,
}

/// The families, registered once by [`super::Metrics::new`].
#[derive(Clone)]
pub(super) struct HttpFamilies {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<RouteLabels>,
}

impl HttpFamilies {
    /// The handles of `route`; its series exist (at 0) from then on.
    pub fn route(&self, route: &str) -> RouteHttpMetrics {
        RouteHttpMetrics {
            by_class: StatusClass::ALL.map(|status_class| {
                self.requests.get_or_create_owned(&RequestLabels {
                    route: route.to_string(),
                    status_class,
                })
            }),
            duration: self.duration.get_or_create_owned(&RouteLabels {
                route: route.to_string(),
            }),
        }
    }
}

/// One route's request counters and duration histogram.
#[derive(Debug, Clone)]
pub struct RouteHttpMetrics {
    /// Indexed by the position of the class in [`StatusClass::ALL`].
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteHttpMetrics {
    /// One request answered with `status`, `took` from arrival to the end of its body.
    pub fn answered(&self, status: u16, took: Duration) {
        self.by_class[usize::from(StatusClass::of(status).0 - 1)].inc();
        self.duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_fall_into_their_class() {
        assert_eq!(StatusClass::of(200), StatusClass(2));
        assert_eq!(StatusClass::of(404), StatusClass(4));
        assert_eq!(StatusClass::of(599), StatusClass(5));
        assert_eq!(StatusClass::of(101), StatusClass(1));
        assert_eq!(
            StatusClass::of(42),
            StatusClass(1),
            "clamped, never out of range"
        );
        assert_eq!(StatusClass::of(999), StatusClass(5));
    }
}
