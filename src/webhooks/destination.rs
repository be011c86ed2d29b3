//! Where a webhook may go. Without `--webhooks-allow-private`, only to public addresses: a URL
//! that names (or resolves to) loopback, a private network, link-local (where cloud metadata
//! lives) or any other special range is refused, when it is added and again at every send, after
//! DNS, by the resolver the HTTP client itself uses — so a name cannot point somewhere else
//! between the check and the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Whether the address is reachable on the public internet (and so no business of ours).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, benchmarking, reserved.
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local (fc00::/7), link-local (fe80::/10), old site-local (fec0::/10).
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // Documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// The addresses a URL's host stands for, checked.
pub struct Destination;

impl Destination {
    /// Resolves the URL's host; every address must be public unless `allow_private`.
    pub async fn check(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<SocketAddr> = match url.host() {
            None => return Err("the URL needs a host".into()),
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(Host::Domain(name)) => resolve(name, port).await?,
        };
        Self::screen(url.host_str().unwrap_or_default(), addresses, allow_private)
    }

    fn screen(
        host: &str,
        addresses: Vec<SocketAddr>,
        allow_private: bool,
    ) -> Result<Vec<SocketAddr>, String> {
        if addresses.is_empty() {
            return Err(format!("{host} has no address"));
        }
        if !allow_private && let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(format!(
                "{host} is {}, not a public address (allow it with --webhooks-allow-private)",
                private.ip()
            ));
        }
        Ok(addresses)
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((name, port)),
    )
    .await
    {
        Ok(Ok(found)) => Ok(found.collect()),
        Ok(Err(e)) => Err(format!("{name} does not resolve ({e})")),
        Err(_) => Err(format!("{name} did not resolve within 5 seconds")),
    }
}

/// The HTTP client's resolver: the same check, on the addresses it will connect to.
pub(super) struct ScreeningResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for ScreeningResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is the URL's; reqwest puts it in place of this one.
            let found = resolve(&host, 0).await?;
            let addresses = Destination::screen(&host, found, allow_private)?;
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(ip: &str) -> bool {
        is_public(ip.parse().unwrap())
    }

    #[test]
    fn special_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "::10.0.0.1",
        ] {
            assert!(!public(ip), "{ip} counted as public");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(public(ip), "{ip} counted as private");
        }
    }

    #[tokio::test]
    async fn loopback_urls_are_refused_unless_allowed() {
        let url = Url::parse("https://localhost:8443/hook").unwrap();
        let refused = Destination::check(&url, false).await.unwrap_err();
        assert!(refused.contains("not a public address"), "{refused}");
        assert!(Destination::check(&url, true).await.is_ok());
        let literal = Url::parse("https://[::1]/hook").unwrap();
        assert!(Destination::check(&literal, false).await.is_err());
    }
}
