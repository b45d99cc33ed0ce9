//! Matching a request to its `[[trigger.http]]`: exact routes first, then `/prefix/...`
//! routes from the longest prefix down; a path that matches but with another method is a
//! 405, not a 404.

use std::sync::Arc;

use http::Method;

use crate::limits::Limit;
use crate::manifest::HttpTrigger;
use crate::metrics::{ComponentMetrics, RouteHttpMetrics};
use crate::registry::LoadedComponent;

enum Pattern {
    Exact(String),
    /// The prefix without the trailing `/...`; empty for `/...`.
    Prefix(String),
}

impl Pattern {
    fn parse(route: &str) -> Self {
        match route.strip_suffix("/...") {
            Some(prefix) => Pattern::Prefix(prefix.to_string()),
            None => Pattern::Exact(route.to_string()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == path,
            Pattern::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// Sort key: exact routes first, then longer prefixes.
    fn specificity(&self) -> (u8, usize) {
        match self {
            Pattern::Exact(p) => (0, usize::MAX - p.len()),
            Pattern::Prefix(p) => (1, usize::MAX - p.len()),
        }
    }
}

pub struct Route {
    pattern: Pattern,
    /// The pattern as the manifest writes it: the `route` of metrics and the access log.
    written: String,
    methods: Vec<Method>,
    pub component: Arc<LoadedComponent>,
    /// The component's metric handles, resolved once.
    pub metrics: Arc<ComponentMetrics>,
    /// The route's request counters and duration histogram, resolved once.
    pub http: Arc<RouteHttpMetrics>,
    pub max_body_size: u64,
    pub limit: Option<RouteLimit>,
}

impl Route {
    /// The route as the manifest writes it (`/api/...`).
    pub fn pattern(&self) -> &str {
        &self.written
    }
}

/// A route's rate limit: the limit, and how a client is told apart.
pub struct RouteLimit {
    pub limit: Limit,
    /// `None`: the client's IP; `Some(h)`: the value of header `h` (the IP without it).
    pub key_header: Option<http::HeaderName>,
    /// Keeps this route's buckets apart from every other route's.
    pub scope: String,
}

impl RouteLimit {
    pub fn from_trigger(t: &HttpTrigger) -> Option<RouteLimit> {
        let rate = t.rate_limit?;
        Some(RouteLimit {
            limit: Limit {
                rate,
                burst: t.burst.unwrap_or(rate.count),
            },
            key_header: t
                .rate_limit_key
                .as_deref()
                .and_then(|k| k.strip_prefix("header:"))
                .and_then(|h| h.parse().ok()),
            scope: format!("{} {}", t.route, t.methods.join(",")),
        })
    }

    /// The bucket of the request from `peer` with `headers`.
    pub fn key(&self, headers: &http::HeaderMap, peer: Option<std::net::IpAddr>) -> String {
        let client = self
            .key_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("h:{v}"))
            .or_else(|| peer.map(|ip| format!("ip:{ip}")))
            .unwrap_or_else(|| "unknown".into());
        format!("{}|{client}", self.scope)
    }
}

pub enum RouteMatch<'a> {
    Found(&'a Route),
    MethodNotAllowed(String),
    NotFound,
}

#[derive(Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn add(
        &mut self,
        trigger: &HttpTrigger,
        component: Arc<LoadedComponent>,
        metrics: Arc<ComponentMetrics>,
        http: Arc<RouteHttpMetrics>,
    ) {
        let methods = trigger
            .methods
            .iter()
            .filter_map(|m| m.parse().ok())
            .collect();
        self.routes.push(Route {
            pattern: Pattern::parse(&trigger.route),
            written: trigger.route.clone(),
            methods,
            component,
            metrics,
            http,
            max_body_size: trigger.max_body_size.bytes(),
            limit: RouteLimit::from_trigger(trigger),
        });
        self.routes.sort_by_key(|r| r.pattern.specificity());
    }

    pub fn find(&self, method: &Method, path: &str) -> RouteMatch<'_> {
        let mut allowed: Vec<&str> = Vec::new();
        for route in self.routes.iter().filter(|r| r.pattern.matches(path)) {
            if route.methods.is_empty() || route.methods.contains(method) {
                return RouteMatch::Found(route);
            }
            allowed.extend(route.methods.iter().map(Method::as_str));
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            allowed.sort_unstable();
            allowed.dedup();
            RouteMatch::MethodNotAllowed(allowed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_paths_and_prefixes_at_segment_boundaries() {
        let p = Pattern::parse("/api/...");
        assert!(p.matches("/api") && p.matches("/api/") && p.matches("/api/chat"));
        assert!(!p.matches("/apix") && !p.matches("/"));
        assert!(Pattern::parse("/...").matches("/anything/at/all"));
        assert!(Pattern::parse("/x").matches("/x") && !Pattern::parse("/x").matches("/x/y"));
    }

    #[test]
    fn specificity_orders_exact_then_longest_prefix() {
        let mut keys = [
            Pattern::parse("/..."),
            Pattern::parse("/api/x"),
            Pattern::parse("/api/..."),
        ]
        .map(|p| p.specificity());
        keys.sort();
        assert_eq!(keys[0].0, 0);
        assert!(keys[1] < keys[2], "longer prefix first");
    }
}
