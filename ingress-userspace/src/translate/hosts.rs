//! Ingress hosts: validation into [`HostMatch`] and the order virtual hosts are listed in.
use std::cmp::Ordering;

use crate::snapshot::HostMatch;

/// Parses `spec.rules[].host` (or a TLS host). Empty means any host. Hosts are DNS names,
/// compared case-insensitively, optionally starting with `*.` (exactly one extra label).
/// IP addresses and ports are not hosts.
pub fn parse_host(raw: &str) -> Result<HostMatch, String> {
    if raw.is_empty() {
        return Ok(HostMatch::Any);
    }
    let host = raw.to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    validate_dns_name(name).map_err(|why| format!("invalid host {raw:?}: {why}"))?;
    if name.parse::<std::net::IpAddr>().is_ok()
        || name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(format!(
            "invalid host {raw:?}: an IP address is not a host name"
        ));
    }
    Ok(if wildcard {
        HostMatch::Wildcard(name.to_owned())
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

/// A lower-case DNS name: 1-63-character labels of letters, digits and inner '-'.
pub(crate) fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed (and a leading '*.')");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'");
        }
    }
    Ok(())
}

/// Virtual host order: exact names, then wildcards with the longer suffix first, then `Any`.
/// Ties are broken alphabetically so the order is total.
pub fn host_order(a: &HostMatch, b: &HostMatch) -> Ordering {
    fn rank(h: &HostMatch) -> u8 {
        match h {
            HostMatch::Exact(_) => 0,
            HostMatch::Wildcard(_) => 1,
            HostMatch::Any => 2,
        }
    }
    match (a, b) {
        (HostMatch::Exact(x), HostMatch::Exact(y)) => x.cmp(y),
        (HostMatch::Wildcard(x), HostMatch::Wildcard(y)) => {
            y.len().cmp(&x.len()).then_with(|| x.cmp(y))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Whether a TLS host entry covers a virtual host (for `VirtualHost.tls`).
pub fn tls_covers(tls: &HostMatch, vhost: &HostMatch) -> bool {
    match (tls, vhost) {
        (HostMatch::Exact(t), HostMatch::Exact(v)) => t == v,
        (HostMatch::Wildcard(_), HostMatch::Exact(v)) => tls.matches(v),
        (HostMatch::Wildcard(t), HostMatch::Wildcard(v)) => t == v,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostMatch::{Any, Exact, Wildcard};

    #[test]
    fn host_parsing_table() {
        let table: &[(&str, Option<HostMatch>)] = &[
            ("", Some(Any)),
            ("foo.example.com", Some(Exact("foo.example.com".into()))),
            ("FOO.Example.COM", Some(Exact("foo.example.com".into()))),
            ("*.example.com", Some(Wildcard("example.com".into()))),
            ("*.COM", Some(Wildcard("com".into()))),
            ("localhost", Some(Exact("localhost".into()))),
            ("a-b.c0", Some(Exact("a-b.c0".into()))),
            ("*", None),
            ("*.", None),
            ("a.*.example.com", None),
            ("**.example.com", None),
            ("foo.example.com:8080", None),
            ("10.0.0.1", None),
            ("::1", None),
            ("foo..com", None),
            ("foo.com.", None),
            ("-foo.com", None),
            ("foo-.com", None),
            ("foo_bar.com", None),
            ("fóo.com", None),
            ("foo com", None),
        ];
        for (raw, want) in table {
            assert_eq!(parse_host(raw).ok(), *want, "{raw:?}");
        }
        assert!(parse_host(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(parse_host(&format!("{}.com", "a".repeat(63))).is_ok());
    }

    #[test]
    fn host_order_table() {
        let mut hosts = vec![
            Any,
            Wildcard("example.com".into()),
            Exact("b.example.com".into()),
            Wildcard("api.example.com".into()),
            Exact("a.example.com".into()),
            Wildcard("x.io".into()),
        ];
        hosts.sort_by(host_order);
        assert_eq!(
            hosts,
            vec![
                Exact("a.example.com".into()),
                Exact("b.example.com".into()),
                Wildcard("api.example.com".into()),
                Wildcard("example.com".into()),
                Wildcard("x.io".into()),
                Any,
            ]
        );
    }

    #[test]
    fn wildcard_match_table() {
        let w = parse_host("*.Example.com").expect("valid");
        for (host, want) in [
            ("a.example.com", true),
            ("example.com", false),
            ("a.b.example.com", false),
            ("aexample.com", false),
        ] {
            assert_eq!(w.matches(host), want, "{host}");
        }
    }

    #[test]
    fn tls_coverage() {
        let w = Wildcard("example.com".into());
        assert!(tls_covers(&w, &Exact("a.example.com".into())));
        assert!(!tls_covers(&w, &Exact("a.b.example.com".into())));
        assert!(tls_covers(&w, &w));
        assert!(!tls_covers(&Exact("a.example.com".into()), &w));
        assert!(!tls_covers(&w, &Any));
    }
}
