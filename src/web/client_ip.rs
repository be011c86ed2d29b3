//! The client's address: the socket peer, unless that peer is a proxy the operator trusts, in
//! which case the forwarding headers it added name the client. Headers from anyone else are
//! ignored, since any client can write them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use ipnet::IpNet;

/// Where a request came from, as far as we can trust the chain of proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(Arc::new(networks))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// Walks the forwarding chain from the nearest hop outwards and stops at the first address
    /// that is not a trusted proxy: everything left of it could have been written by the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        for hop in forwarded_hops(headers).into_iter().rev() {
            match hop {
                Some(ip) => client = ip.to_canonical(),
                // "unknown", an obfuscated name or garbage: nothing further out can be trusted.
                None => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The `for=` addresses of `Forwarded` (RFC 7239), or failing that of `X-Forwarded-For`, in
/// order, client first. `None` marks a hop that is not an IP address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<Option<IpAddr>> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| key.eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| parse_node(value.trim().trim_matches('"')))
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| node.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

impl TrustedProxies {
    /// Puts a [`ClientIp`] on a request: the peer from `ConnectInfo` (0.0.0.0 when the router
    /// is driven without a socket, as tests and the fuzzer do), or whom its proxy names.
    pub fn mark<B>(&self, request: &mut Request<B>) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
        let client = self.client_ip(peer, request.headers());
        request.extensions_mut().insert(ClientIp(client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let none = TrustedProxies::default();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(none.client_ip(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
        let other = trusted(&["10.0.0.0/8"]);
        assert_eq!(other.client_ip(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        let xff = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &xff), ip("198.51.100.7"));
        // A client-written entry to the left of the real one is not believed.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), &chain), ip("198.51.100.7"));
        let split = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &split), ip("198.51.100.7"));
        // Nothing forwarded: the proxy itself is the client.
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_takes_precedence_and_understands_ports_and_ipv6() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let both = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=https;by=10.0.0.1, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &both), ip("2001:db8:cafe::17"));
        let ported = headers(&[("forwarded", "For=\"192.0.2.43:47011\"")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &ported), ip("192.0.2.43"));
        let hidden = headers(&[("forwarded", "for=_hidden, for=10.0.0.9")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &hidden), ip("10.0.0.9"));
        let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &garbage), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let proxies = trusted(&["127.0.0.1/32"]);
        let xff = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(proxies.client_ip(ip("::ffff:127.0.0.1"), &xff), ip("198.51.100.7"));
    }
}
