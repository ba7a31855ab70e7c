//! Behind another proxy or load balancer: who the client is, and which scheme, port and host
//! it used, from the PROXY protocol header or the forwarding headers of a trusted peer. The
//! settings are ingress-nginx's ConfigMap keys `use-proxy-protocol`, `use-forwarded-headers`,
//! `proxy-real-ip-cidr` and `forwarded-for-header`.
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use super::headers::{ForwardedValues, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO};

/// Where the client's address and scheme come from, compiled from the snapshot's settings.
#[derive(Clone, Debug)]
pub struct RealIp {
    /// Every connection starts with a PROXY protocol header (v1 or v2), whose source address
    /// is the client's when the connection comes from a trusted peer.
    pub proxy_protocol: bool,
    /// Requests from a trusted peer carry the client's scheme, port and host in
    /// `X-Forwarded-Proto`/`-Port`/`-Host`, and (without the PROXY protocol) its address in
    /// the `forwarded_for` header.
    pub forwarded_headers: bool,
    /// Requests from a trusted peer name the client in the `forwarded_for` header, and only
    /// that is believed.
    pub enable_real_ip: bool,
    /// The peers whose PROXY header or forwarding headers are believed.
    pub trusted: Vec<IpNet>,
    /// The header naming the client's address (`X-Forwarded-For`).
    pub forwarded_for: HeaderName,
    /// Append the client to an incoming `X-Forwarded-For` (else it is replaced).
    pub compute_full_forwarded_for: bool,
}

impl Default for RealIp {
    fn default() -> Self {
        Self::compile(&crate::snapshot::RealIp::default())
    }
}

impl RealIp {
    /// The snapshot's settings in the form connections use. The translator and the flags
    /// checked the header name; a bad one falls back to `X-Forwarded-For`.
    pub fn compile(s: &crate::snapshot::RealIp) -> Self {
        RealIp {
            proxy_protocol: s.proxy_protocol,
            forwarded_headers: s.forwarded_headers,
            enable_real_ip: s.enable_real_ip,
            trusted: s.trusted.clone(),
            forwarded_for: HeaderName::from_bytes(s.forwarded_for.as_bytes())
                .unwrap_or_else(|_| super::headers::X_FORWARDED_FOR.clone()),
            compute_full_forwarded_for: s.compute_full_forwarded_for,
        }
    }

    /// Whether `ip` may speak for its clients.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The request's forwarded values when its forwarding headers change them: only with
    /// `forwarded_headers` (or `enable_real_ip`, for the client alone), from a trusted peer,
    /// and when the request carries one of them. `None`: the connection's values stand.
    pub fn from_headers(
        &self,
        conn: &ForwardedValues,
        headers: &HeaderMap,
    ) -> Option<ForwardedValues> {
        if !(self.forwarded_headers || self.enable_real_ip) || !conn.trusted_peer {
            return None;
        }
        let forwarded = |name| {
            self.forwarded_headers
                .then(|| usable(headers.get(name)))
                .flatten()
        };
        let proto = forwarded(&X_FORWARDED_PROTO);
        let port = forwarded(&X_FORWARDED_PORT);
        let host = forwarded(&X_FORWARDED_HOST);
        // With the PROXY protocol its header names the client, as nginx's `real_ip_header
        // proxy_protocol`; the forwarded-for header is then only passed on.
        let client = if self.proxy_protocol {
            None
        } else {
            self.client_from(headers)
        };
        if proto.is_none() && port.is_none() && host.is_none() && client.is_none() {
            return None;
        }
        let mut fwd = conn.clone();
        if let Some(ip) = client {
            fwd.set_client(ip);
        }
        if let Some(p) = proto {
            fwd.https = p.as_bytes().eq_ignore_ascii_case(b"https");
            fwd.proto = p.clone();
        }
        if let Some(p) = port {
            fwd.port = p.clone();
        }
        if let Some(h) = host.and_then(first_host) {
            fwd.host = Some(h);
        }
        Some(fwd)
    }

    /// The client's address from the forwarded-for header, as nginx's realip module with
    /// `real_ip_recursive on` reads it: from the right, the first address that is not a
    /// trusted proxy. When every address is trusted, the leftmost. An entry that is not an
    /// address ends the walk at the last good one. `None`: no usable entry.
    fn client_from(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut found = None;
        for line in headers.get_all(&self.forwarded_for).iter().rev() {
            let Ok(text) = line.to_str() else {
                return found;
            };
            for entry in text.rsplit(',') {
                let Some(ip) = entry_address(entry.trim()) else {
                    return found;
                };
                let ip = ip.to_canonical();
                found = Some(ip);
                if !self.trusts(ip) {
                    return found;
                }
            }
        }
        found
    }
}

/// The address of one forwarding entry: `ip`, `ip:port` or `[ipv6]:port` (Azure Application
/// Gateway adds the port), as nginx's realip module parses it.
fn entry_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        return match port {
            "" => ip.parse().ok(),
            p => p
                .strip_prefix(':')?
                .parse::<u16>()
                .ok()
                .and(ip.parse().ok()),
        };
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A forwarding header's value when present and not empty.
fn usable(v: Option<&HeaderValue>) -> Option<&HeaderValue> {
    v.filter(|v| !v.is_empty())
}

/// The first host of an `X-Forwarded-Host` list (a chain of proxies appends to it): what
/// ingress-nginx takes as the client's host. `None` when that entry is empty.
fn first_host(v: &HeaderValue) -> Option<HeaderValue> {
    let first = v.as_bytes().split(|&b| b == b',').next()?.trim_ascii();
    if first.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(first).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    fn behind(trusted: &[&str]) -> RealIp {
        RealIp {
            forwarded_headers: true,
            trusted: trusted.iter().map(|s| net(s)).collect(),
            ..Default::default()
        }
    }

    fn conn(r: &RealIp, peer: &str, tls: bool) -> ForwardedValues {
        ForwardedValues::new(ip(peer), if tls { 443 } else { 80 }, tls, false)
            .with_trust(r.trusts(ip(peer)))
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let r = behind(&["10.0.0.0/8"]);
        let c = conn(&r, "10.0.0.5", false);
        let h = headers(&[("x-forwarded-for", "198.51.100.9, 203.0.113.7, 10.1.1.1")]);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("203.0.113.7"));
        assert_eq!(f.client, "203.0.113.7");
        // The hop appended with compute-full-forwarded-for stays the connection's peer.
        assert_eq!(f.hop, "10.0.0.5");
    }

    #[test]
    fn all_trusted_gives_the_leftmost_and_lines_are_read_in_order() {
        let r = behind(&["10.0.0.0/8"]);
        let c = conn(&r, "10.0.0.5", false);
        let h = headers(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-for", "10.1.1.1, 10.2.2.2"),
        ]);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("10.9.9.9"));
    }

    #[test]
    fn garbage_ends_the_walk_at_the_last_good_address() {
        let r = behind(&["10.0.0.0/8"]);
        let c = conn(&r, "10.0.0.5", false);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, unknown, 10.1.1.1")]);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("10.1.1.1"));
        // Nothing usable at all: the peer stays the client.
        let h = headers(&[("x-forwarded-for", "unknown")]);
        assert!(r.from_headers(&c, &h).is_none());
        let h = headers(&[("x-forwarded-for", "")]);
        assert!(r.from_headers(&c, &h).is_none());
    }

    #[test]
    fn entries_with_ports() {
        let r = behind(&["10.0.0.0/8"]);
        for (xff, want) in [
            ("203.0.113.7:4567", "203.0.113.7"),
            ("[2001:db8::7]:4567", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("203.0.113.7:4567, 10.0.0.1:80", "203.0.113.7"),
        ] {
            let h = headers(&[("x-forwarded-for", xff)]);
            assert_eq!(r.client_from(&h), Some(ip(want)), "{xff}");
        }
        // Not addresses: the walk ends there.
        for bad in [
            "203.0.113.7:99999",
            "[2001:db8::7]:x",
            "2001:db8::7]:1",
            "host:80",
        ] {
            let h = headers(&[("x-forwarded-for", &format!("{bad}, 10.0.0.1"))]);
            assert_eq!(r.client_from(&h), Some(ip("10.0.0.1")), "{bad}");
        }
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let r = behind(&["2001:db8:ffff::/48", "10.0.0.0/8"]);
        let c = conn(&r, "::ffff:10.0.0.5", false);
        assert!(c.trusted_peer);
        let h = headers(&[("x-forwarded-for", "2001:db8::1, 2001:db8:ffff::2")]);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.1")]);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("198.51.100.1"));
    }

    #[test]
    fn scheme_port_and_host_come_from_a_trusted_peer_only() {
        let r = behind(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-host", "shop.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        let c = conn(&r, "10.0.0.5", false);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert!(f.https);
        assert_eq!(f.proto, "https");
        assert_eq!(f.port, "8443");
        assert_eq!(
            f.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"shop.example.com"[..])
        );
        // Behind a chain of proxies, the first host is the client's.
        let chained = headers(&[("x-forwarded-host", "shop.example.com:8443 , cdn.example")]);
        let f = r
            .from_headers(&conn(&r, "10.0.0.5", false), &chained)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(
            f.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"shop.example.com:8443"[..])
        );
        // An untrusted peer changes nothing.
        let c = conn(&r, "192.0.2.1", false);
        assert!(r.from_headers(&c, &h).is_none());
        // Nor does a trusted one when the setting is off.
        let off = RealIp {
            forwarded_headers: false,
            ..behind(&["10.0.0.0/8"])
        };
        let c = conn(&off, "10.0.0.5", false);
        assert!(off.from_headers(&c, &h).is_none());
        // `http` from the balancer means plain HTTP even on a TLS connection to us.
        let h = headers(&[("x-forwarded-proto", "http")]);
        let c = conn(&r, "10.0.0.5", true);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert!(!f.https);
    }

    #[test]
    fn with_the_proxy_protocol_forwarded_for_does_not_name_the_client() {
        let r = RealIp {
            proxy_protocol: true,
            ..behind(&["10.0.0.0/8"])
        };
        let c = conn(&r, "10.0.0.5", false);
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert!(r.from_headers(&c, &h).is_none());
    }

    #[test]
    fn another_forwarded_for_header_can_be_named() {
        let r = RealIp {
            forwarded_for: HeaderName::from_static("cf-connecting-ip"),
            ..behind(&["10.0.0.0/8"])
        };
        let c = conn(&r, "10.0.0.5", false);
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("cf-connecting-ip", "203.0.113.7"),
        ]);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("203.0.113.7"));
    }

    #[test]
    fn enable_real_ip_believes_the_client_address_alone() {
        let r = RealIp {
            forwarded_headers: false,
            enable_real_ip: true,
            forwarded_for: HeaderName::from_static("cf-connecting-ip"),
            ..behind(&["10.0.0.0/8"])
        };
        let h = headers(&[
            ("cf-connecting-ip", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "elsewhere.example"),
        ]);
        let c = conn(&r, "10.0.0.5", false);
        let f = r
            .from_headers(&c, &h)
            .unwrap_or_else(|| panic!("no values"));
        assert_eq!(f.client_ip, ip("203.0.113.7"));
        assert!(!f.https, "the scheme is not believed");
        assert!(f.host.is_none(), "nor the host");
        // Only the scheme is forwarded: nothing changes.
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(r.from_headers(&c, &h).is_none());
        // From an untrusted peer, not even the address.
        let h = headers(&[("cf-connecting-ip", "203.0.113.7")]);
        let c = conn(&r, "192.0.2.1", false);
        assert!(r.from_headers(&c, &h).is_none());
    }
}
