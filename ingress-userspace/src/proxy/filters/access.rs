//! `whitelist-source-range` / `denylist-source-range`.
use std::net::IpAddr;

use crate::snapshot::RoutePolicy;

/// Whether a client at `ip` (canonical form) may use the route: not denied, and allowed when
/// an allow list exists.
pub fn source_allowed(policy: &RoutePolicy, ip: IpAddr) -> bool {
    if policy.deny_sources.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    policy.allow_sources.is_empty() || policy.allow_sources.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_and_deny() {
        let mut p = RoutePolicy::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{e}"));
        assert!(source_allowed(&p, ip("192.0.2.1")));
        p.allow_sources = vec![net("192.0.2.0/24")];
        assert!(source_allowed(&p, ip("192.0.2.1")));
        assert!(!source_allowed(&p, ip("198.51.100.1")));
        p.deny_sources = vec![net("192.0.2.1/32")];
        assert!(!source_allowed(&p, ip("192.0.2.1")));
        assert!(source_allowed(&p, ip("192.0.2.2")));
    }
}
