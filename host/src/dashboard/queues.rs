//! The queue page at `/dashboard/queues`: counts, jobs by state, and retry, remove, pause
//! and resume buttons, drawn in the browser from the admin API.
//!
//! The page itself holds no data, so it is served to anyone like `/dashboard`; every
//! number, payload and action comes from `/admin/queues/...`, whose own rule (a loopback
//! client, or the bearer token the operator pastes into the page) decides who sees and
//! changes what. That keeps one access rule, in `admin::auth`, instead of a second copy here.

/// The page, embedded: no build step, no external resource.
pub const PAGE: &str = include_str!("queues.html");

/// The `Content-Security-Policy` header: the page's own inline code and the admin API on
/// this origin, nothing else. Beyond `/dashboard`'s policy it may not be framed (its buttons
/// change queues, so no other site may overlay them) nor post a form or change its base URL.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                       connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";
