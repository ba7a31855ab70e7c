//! `whitelist-source-range` (or its newer name `allowlist-source-range`) and
//! `denylist-source-range`: comma-separated CIDRs or addresses.
use std::net::IpAddr;

use ipnet::IpNet;

use super::{AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    // ingress-nginx renamed the annotation; the newer name wins when both are given.
    for name in ["whitelist-source-range", "allowlist-source-range"] {
        if let Some(nets) = r.get(name, parse_ranges)? {
            a.policy.allow_sources = nets;
        }
    }
    if let Some(nets) = r.get("denylist-source-range", parse_ranges)? {
        a.policy.deny_sources = nets;
    }
    Ok(())
}

pub(crate) fn parse_ranges(v: &str) -> Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR or an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use ipnet::IpNet;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn source_ranges() {
        assert_eq!(
            ok(
                "whitelist-source-range",
                "10.0.0.0/8, 192.168.1.7,2001:db8::/32"
            )
            .policy
            .allow_sources,
            nets(&["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"])
        );
        assert_eq!(
            nginx(&[
                ("whitelist-source-range", "10.0.0.0/8"),
                ("allowlist-source-range", "192.0.2.0/24")
            ])
            .expect("valid")
            .policy
            .allow_sources,
            nets(&["192.0.2.0/24"]),
            "the newer name wins"
        );
        assert_eq!(
            ok("denylist-source-range", "::1").policy.deny_sources,
            nets(&["::1/128"])
        );
        assert!(ok("whitelist-source-range", "")
            .policy
            .allow_sources
            .is_empty());
        for name in [
            "whitelist-source-range",
            "allowlist-source-range",
            "denylist-source-range",
        ] {
            assert_rejects(
                name,
                &["10.0.0.0/33", "example.com", "10.0.0.0/8;rm -rf", "1.2.3"],
            );
        }
    }
}
