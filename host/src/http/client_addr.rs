//! Who the client is: the peer of the connection, or, when that peer is one of
//! `[http] trusted_proxies`, the address the proxies forwarded (`Forwarded`, RFC 7239, or
//! else `X-Forwarded-For`).
//!
//! The one resolved address is what the server puts into every request (as its
//! `ConnectInfo`), so rate limits, the access log and the admin API's loopback rule all see
//! the same client. Headers from a peer that is not trusted are ignored: a client cannot
//! forge its address, and behind a local proxy the admin API does not take every remote
//! client for a loopback one.
//!
//! The forwarded chain is read from the right (the hop nearest to us), skipping trusted
//! proxies; the first address that is not one of them is the client. An entry that is not
//! an address (`unknown`, an obfuscated `_name`) ends the walk at the hop after it, since
//! nothing further left can be vouched for; a chain of only trusted proxies gives its
//! leftmost address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::FORWARDED;

use crate::manifest::{IpNet, canonical_ip};

/// The trusted proxies of `[http]`.
#[derive(Debug, Default, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.nets.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer.ip();
        for hop in chain.iter().rev() {
            let Some(ip) = hop else { break };
            client = *ip;
            if !self.trusts(client) {
                break;
            }
        }
        SocketAddr::new(client, 0)
    }
}

/// The addresses the proxies forwarded, leftmost (the original client) first; `None` for
/// an entry that is not an address. `Forwarded` wins when present.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<Option<IpAddr>> = headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let ip = node
        .parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            node.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse().ok())
        })?;
    Some(canonical_ip(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn client(p: &TrustedProxies, peer: &str, h: &[(&'static str, &str)]) -> String {
        let peer = SocketAddr::new(peer.parse().unwrap(), 5000);
        p.client(peer, &headers(h)).ip().to_string()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "127.0.0.1", &[("x-forwarded-for", "203.0.113.7")]),
            "127.0.0.1"
        );
        let lb = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(&lb, "198.51.100.2", &[("x-forwarded-for", "127.0.0.1")]),
            "198.51.100.2",
            "a forged header from an untrusted peer changes nothing"
        );
    }

    #[test]
    fn a_trusted_peer_forwards_the_first_untrusted_address_from_the_right() {
        let lb = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(&lb, "10.0.0.5", &[("x-forwarded-for", "203.0.113.7")]),
            "203.0.113.7"
        );
        // The client put a forged entry first; the proxies appended what they saw.
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.1.1.1")]
            ),
            "203.0.113.7"
        );
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[
                    ("x-forwarded-for", "1.2.3.4"),
                    ("x-forwarded-for", "203.0.113.7")
                ]
            ),
            "203.0.113.7",
            "several headers are one list"
        );
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[("x-forwarded-for", "10.2.2.2, 10.1.1.1")]
            ),
            "10.2.2.2"
        );
        assert_eq!(
            client(&lb, "10.0.0.5", &[]),
            "10.0.0.5",
            "no header: the proxy itself"
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_its_forms_parse() {
        let lb = proxies(&["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[
                    ("forwarded", "for=192.0.2.60;proto=http;by=10.0.0.5"),
                    ("x-forwarded-for", "198.51.100.1"),
                ]
            ),
            "192.0.2.60"
        );
        assert_eq!(
            client(
                &lb,
                "fd00::1",
                &[(
                    "forwarded",
                    r#"for="[2001:db8:cafe::17]:4711", for=10.3.3.3"#
                )]
            ),
            "2001:db8:cafe::17"
        );
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[("forwarded", "For=\"192.0.2.43:47011\"")]
            ),
            "192.0.2.43"
        );
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[("x-forwarded-for", "::ffff:203.0.113.9")]
            ),
            "203.0.113.9"
        );
    }

    #[test]
    fn an_entry_that_is_not_an_address_ends_the_walk_at_the_hop_after_it() {
        let lb = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(
                &lb,
                "10.0.0.5",
                &[("forwarded", "for=203.0.113.7, for=unknown, for=10.1.1.1")]
            ),
            "10.1.1.1"
        );
        assert_eq!(
            client(&lb, "10.0.0.5", &[("x-forwarded-for", "garbage")]),
            "10.0.0.5"
        );
    }
}
