//! The rules a name, a route, a method and an outbound host must follow, one function each.
//! The manifest, a deploy and the CLI's flags all call these, so a value one of them accepts
//! is never refused by another.
//!
//! Each returns the problem as text that quotes the value; callers put the field or flag in
//! front.

/// The path the admin API owns, with everything under it.
const ADMIN: &str = "/admin";

/// The host's own observability endpoints (`/metrics`, `/health`, `/ready` and the
/// dashboard), matched before any component route.
pub const OBSERVABILITY_PATHS: [&str; 6] = [
    "/metrics",
    "/health",
    "/ready",
    "/dashboard",
    "/dashboard/history",
    "/dashboard/queues",
];

/// Component, queue, kv namespace and schedule names: 1 to 64 of a-z, 0-9, '-' and '_', as
/// they end up in URL paths, kv namespaces and Redis keys.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1 to 64 of a-z, 0-9, '-' and '_'"))
    }
}

/// Whether `name` follows [`check_name`].
pub fn is_simple_name(name: &str) -> bool {
    check_name(name).is_ok()
}

/// A route is `/exact/path`, or `/prefix/...` for the prefix and everything below it.
pub fn check_route(route: &str) -> Result<(), String> {
    if !route.starts_with('/') {
        return Err(format!("{route:?} must start with '/'"));
    }
    if route.contains("...") && !(route == "/..." || route.ends_with("/...")) {
        return Err(format!(
            "{route:?} may only use \"...\" as its last segment"
        ));
    }
    Ok(())
}

/// The host's own path that `route` would take, if any: `/admin` for it and anything under
/// it, or one of [`OBSERVABILITY_PATHS`], exactly or as a prefix route (`/metrics/...`). Such a route
/// could never be served whole, so it is refused rather than shadowed. The catch-all `/...`
/// is fine: the host's paths are matched first and it serves every other one.
pub fn host_path(route: &str) -> Option<&'static str> {
    let path = route.strip_suffix("/...").unwrap_or(route);
    if path == ADMIN || path.strip_prefix(ADMIN).is_some_and(|r| r.starts_with('/')) {
        return Some(ADMIN);
    }
    OBSERVABILITY_PATHS.into_iter().find(|p| *p == path)
}

/// An HTTP method as the manifest writes it: upper-case, e.g. `GET`.
pub fn check_method(method: &str) -> Result<(), String> {
    if method.parse::<http::Method>().is_err() || method.to_ascii_uppercase() != method {
        return Err(format!("{method:?} is not an upper-case HTTP method"));
    }
    Ok(())
}

/// A host a component may reach with outgoing HTTP: `scheme://host[:port]`.
pub fn check_outbound_host(host: &str) -> Result<(), String> {
    let ok = host
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|u| u.scheme().is_some() && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not of the form \"http://host:port\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lower_case_words() {
        for good in ["a", "hello-2", "snake_case", &"x".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        for bad in ["", "Hello", "a b", "a/b", "é", &"x".repeat(65)] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn routes_start_with_a_slash_and_end_at_most_in_one_ellipsis() {
        for good in ["/", "/x", "/x/y", "/...", "/api/..."] {
            assert_eq!(check_route(good), Ok(()), "{good:?}");
        }
        assert!(
            check_route("x")
                .unwrap_err()
                .contains("must start with '/'")
        );
        for bad in ["/a/.../b", "/a..."] {
            let err = check_route(bad).unwrap_err();
            assert!(err.contains("last segment"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn routes_on_the_hosts_own_paths_are_named() {
        for (route, path) in [
            ("/admin", "/admin"),
            ("/admin/", "/admin"),
            ("/admin/...", "/admin"),
            ("/admin/components/x", "/admin"),
            ("/admin/x/...", "/admin"),
            ("/metrics", "/metrics"),
            ("/metrics/...", "/metrics"),
            ("/health", "/health"),
            ("/ready", "/ready"),
            ("/dashboard", "/dashboard"),
            ("/dashboard/...", "/dashboard"),
            ("/dashboard/history", "/dashboard/history"),
        ] {
            assert_eq!(host_path(route), Some(path), "{route}");
        }
        for free in [
            "/...",
            "/",
            "/administrator",
            "/x/admin",
            "/metrics/x",
            "/metrics2",
            "/dash/...",
            "/healthz",
        ] {
            assert_eq!(host_path(free), None, "{free}");
        }
    }

    #[test]
    fn methods_are_upper_case_http_methods() {
        assert_eq!(check_method("GET"), Ok(()));
        assert_eq!(check_method("PURGE"), Ok(()));
        for bad in ["get", "G E T", ""] {
            assert!(check_method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outbound_hosts_need_a_scheme_and_a_host() {
        assert_eq!(check_outbound_host("http://127.0.0.1:8080"), Ok(()));
        assert_eq!(check_outbound_host("https://api.example.com"), Ok(()));
        for bad in ["127.0.0.1:8080", "api.example.com", "/path", ""] {
            let err = check_outbound_host(bad).unwrap_err();
            assert!(err.contains("http://host:port"), "{bad:?}: {err}");
        }
    }
}
