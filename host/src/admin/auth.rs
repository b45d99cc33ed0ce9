//! Who may call the admin API: a bearer token when `LLMCHAT_ADMIN_TOKEN` is set, loopback
//! clients only when it is not.
//!
//! [`AdminAuth`] is read once at start-up and checked by one middleware in front of every
//! `/admin/...` route, the unknown ones included. The decision itself,
//! [`AdminAuth::authorize`], is a pure function of the peer address and the
//! `Authorization` header, so every branch is unit-tested without network traffic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::triggers::http::ApiError;

/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "LLMCHAT_ADMIN_TOKEN";

/// The admin API's access rule; cheap to clone.
#[derive(Clone)]
pub struct AdminAuth {
    /// SHA-256 of the token: comparing fixed-size digests hides the token's length too.
    token_digest: Option<Arc<[u8; 32]>>,
}

impl AdminAuth {
    /// The rule from `LLMCHAT_ADMIN_TOKEN`; an empty value counts as unset.
    pub fn from_env() -> Self {
        Self::new(std::env::var(TOKEN_ENV).ok().as_deref())
    }

    pub fn new(token: Option<&str>) -> Self {
        let token_digest = token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(Sha256::digest(t.as_bytes()).into()));
        Self { token_digest }
    }

    /// For the start-up log.
    pub fn describe(&self) -> &'static str {
        match self.token_digest {
            Some(_) => "admin API: bearer token required",
            None => {
                "admin API: loopback clients only (set LLMCHAT_ADMIN_TOKEN to allow remote clients with a token)"
            }
        }
    }

    /// Allows or refuses one admin call. `peer` is None when the connection's address is
    /// unknown, which is never trusted as loopback.
    pub fn authorize(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&HeaderValue>,
    ) -> Result<(), ApiError> {
        let Some(expected) = &self.token_digest else {
            return match peer {
                Some(peer) if is_loopback(peer.ip()) => Ok(()),
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "the admin API answers loopback clients only while {TOKEN_ENV} is not set"
                    ),
                )),
            };
        };
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
        let Some(presented) = authorization.and_then(bearer_token) else {
            return Err(unauthorized("admin API needs a bearer token"));
        };
        if digests_match(&Sha256::digest(presented).into(), expected) {
            Ok(())
        } else {
            Err(unauthorized("admin API bearer token is wrong"))
        }
    }
}

impl AdminAuth {
    /// Without a token, loopback is trusted, and a browser on this machine is a loopback
    /// client too: a web page could send it a cross-site request (CSRF), or reach it under
    /// its own name through DNS rebinding. So then a request must name the host as loopback
    /// (`Host`: 127.0.0.1, `[::1]` or `localhost`), and a browser's request must come from
    /// that same origin. The CLI sends no `Origin`; the queue page is same-origin. With a
    /// token nothing changes: a browser never adds the bearer token by itself.
    pub fn check_browser(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        if self.token_digest.is_some() {
            return Ok(());
        }
        let refuse = |why: String| ApiError::new(StatusCode::FORBIDDEN, why);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !host.is_empty() && !is_loopback_name(host) {
            return Err(refuse(format!(
                "the admin API answers `Host: {host}` only with a token: without {TOKEN_ENV} it is for 127.0.0.1, [::1] or localhost"
            )));
        }
        if headers
            .get("sec-fetch-site")
            .is_some_and(|s| s.as_bytes() == b"cross-site")
        {
            return Err(refuse("cross-site admin requests are refused".into()));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            if origin_host != host {
                return Err(refuse(format!(
                    "admin requests from origin {origin} are refused (only the host's own pages may call it)"
                )));
            }
        }
        Ok(())
    }
}

/// Whether `host` (a `Host` header: name or address, with an optional port) names this
/// machine's loopback.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(is_loopback)
}

/// The middleware in front of every admin route.
pub async fn require_admin(
    State(auth): State<AdminAuth>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let allowed = auth
        .authorize(peer, request.headers().get(header::AUTHORIZATION))
        .and_then(|()| auth.check_browser(request.headers()));
    match allowed {
        Ok(()) => next.run(request).await,
        Err(e) => {
            tracing::debug!(peer = ?peer, path = %request.uri().path(), "admin call refused: {}", e.message);
            let challenge = e.status == StatusCode::UNAUTHORIZED;
            let mut response = e.into_response();
            if challenge {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped loopback (`::ffff:127.x.y.z`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compares in time independent of where the digests differ.
fn digests_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn without_a_token_browsers_must_be_same_origin_on_a_loopback_name() {
        let auth = AdminAuth::new(None);
        for ok in [
            vec![("host", "127.0.0.1:3001")],
            vec![
                ("host", "localhost:3001"),
                ("origin", "http://localhost:3001"),
            ],
            vec![("host", "[::1]:3001"), ("origin", "http://[::1]:3001")],
            vec![
                ("host", "127.0.0.1:3001"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![],
        ] {
            assert!(auth.check_browser(&headers(&ok)).is_ok(), "{ok:?}");
        }
        for (bad, says) in [
            (vec![("host", "evil.example:3001")], "Host: evil.example"),
            (
                vec![
                    ("host", "127.0.0.1:3001"),
                    ("origin", "https://evil.example"),
                ],
                "origin https://evil.example",
            ),
            (
                vec![("host", "127.0.0.1:3001"), ("sec-fetch-site", "cross-site")],
                "cross-site",
            ),
        ] {
            let e = auth.check_browser(&headers(&bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN);
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
        let with_token = AdminAuth::new(Some("t"));
        let remote = headers(&[
            ("host", "admin.internal"),
            ("origin", "https://admin.internal"),
        ]);
        assert!(
            with_token.check_browser(&remote).is_ok(),
            "a token is never sent by a browser alone"
        );
    }

    fn peer(addr: &str) -> Option<SocketAddr> {
        Some(addr.parse().expect("a socket address"))
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value")
    }

    #[test]
    fn loopback_covers_v4_v6_and_v4_mapped_addresses() {
        for ip in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.2",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn without_a_token_only_loopback_peers_are_allowed() {
        let auth = AdminAuth::new(None);
        assert!(auth.authorize(peer("127.0.0.1:5000"), None).is_ok());
        assert!(auth.authorize(peer("[::1]:5000"), None).is_ok());
        assert!(
            auth.authorize(peer("[::ffff:127.0.0.1]:5000"), None)
                .is_ok()
        );
        for remote in [peer("192.168.1.2:5000"), peer("[2001:db8::1]:80"), None] {
            let e = auth
                .authorize(remote, Some(&bearer("anything")))
                .unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN);
            assert!(e.message.contains("loopback clients only"), "{}", e.message);
        }
        assert!(
            AdminAuth::new(Some("")).token_digest.is_none(),
            "empty is unset"
        );
    }

    #[test]
    fn with_a_token_every_peer_needs_it() {
        let auth = AdminAuth::new(Some("s3cret"));
        for p in [peer("127.0.0.1:1"), peer("10.1.2.3:1")] {
            assert!(auth.authorize(p, Some(&bearer("s3cret"))).is_ok());
            let missing = auth.authorize(p, None).unwrap_err();
            assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
            assert_eq!(missing.message, "admin API needs a bearer token");
            for wrong in [bearer("s3cre"), bearer("s3cret2"), bearer("S3CRET")] {
                let e = auth.authorize(p, Some(&wrong)).unwrap_err();
                assert_eq!(e.status, StatusCode::UNAUTHORIZED);
            }
            let basic = HeaderValue::from_static("Basic czNjcmV0");
            assert_eq!(
                auth.authorize(p, Some(&basic)).unwrap_err().message,
                "admin API needs a bearer token"
            );
        }
        let lower = HeaderValue::from_static("bearer  s3cret ");
        assert!(auth.authorize(None, Some(&lower)).is_ok());
    }

    #[test]
    fn digests_compare_by_value() {
        let a: [u8; 32] = Sha256::digest(b"one").into();
        let b: [u8; 32] = Sha256::digest(b"one").into();
        let mut c = a;
        c[31] ^= 1;
        assert!(digests_match(&a, &b));
        assert!(!digests_match(&a, &c));
        assert!(!digests_match(&a, &Sha256::digest(b"two").into()));
    }
}
