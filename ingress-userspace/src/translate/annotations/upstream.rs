//! `backend-protocol`, `load-balance`, `proxy-next-upstream-tries`, `upstream-vhost`,
//! `x-forwarded-prefix`.
use super::{no_space_or_control, parse_in_range, AnnotationError, Annotations, Reader};
use crate::snapshot::{BackendProtocol, LoadBalance};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(p) = r.get("backend-protocol", parse_protocol)? {
        a.protocol = p;
    }
    if let Some(lb) = r.get("load-balance", parse_load_balance)? {
        a.policy.load_balance = lb;
    }
    if let Some(n) = r.get("proxy-next-upstream-tries", |v| {
        parse_in_range(v, 1u32..=100)
    })? {
        a.policy.max_attempts = n;
    }
    a.policy.upstream_vhost = r.get("upstream-vhost", parse_vhost)?;
    a.policy.forwarded_prefix = r.get("x-forwarded-prefix", |v| {
        no_space_or_control(v)?;
        if v.is_empty() || !v.is_ascii() {
            return Err("expected a non-empty ASCII path prefix".into());
        }
        Ok(v.to_owned())
    })?;
    Ok(())
}

/// A Host value: `host[:port]`, the host a DNS name, an IPv4 address or a bracketed IPv6 one.
/// ingress-nginx takes nginx variables here (`$host`...); those are refused rather than sent
/// literally.
fn parse_vhost(v: &str) -> Result<String, String> {
    const WANT: &str = "expected host or host:port";
    let (host, port) = match v.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']').ok_or(WANT)?;
            ip.parse::<std::net::Ipv6Addr>().map_err(|_| WANT)?;
            match after {
                "" => (ip, None),
                p => (ip, Some(p.strip_prefix(':').ok_or(WANT)?)),
            }
        }
        None => match v.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (v, None),
        },
    };
    let name_ok = !host.is_empty()
        && (v.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n != 0));
    if name_ok && port_ok {
        Ok(v.to_owned())
    } else {
        Err(WANT.into())
    }
}

fn parse_protocol(v: &str) -> Result<BackendProtocol, String> {
    match v.to_ascii_uppercase().as_str() {
        "HTTP" => Ok(BackendProtocol::Http),
        "HTTPS" => Ok(BackendProtocol::Https),
        "GRPC" => Ok(BackendProtocol::Grpc),
        "GRPCS" => Ok(BackendProtocol::Grpcs),
        _ => Err("supported: HTTP, HTTPS, GRPC, GRPCS".into()),
    }
}

fn parse_load_balance(v: &str) -> Result<LoadBalance, String> {
    match v {
        "round_robin" => Ok(LoadBalance::RoundRobin),
        "ewma" => Ok(LoadBalance::PeakEwma),
        _ => Err("supported: round_robin, ewma".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::snapshot::{BackendProtocol, LoadBalance};

    #[test]
    fn upstream_vhost_and_forwarded_prefix() {
        let a = nginx(&[
            ("upstream-vhost", "internal.svc.cluster.local:8080"),
            ("x-forwarded-prefix", "/api"),
        ])
        .expect("valid");
        assert_eq!(
            a.policy.upstream_vhost.as_deref(),
            Some("internal.svc.cluster.local:8080")
        );
        assert_eq!(a.policy.forwarded_prefix.as_deref(), Some("/api"));
        assert_eq!(
            ok("upstream-vhost", "[::1]:80")
                .policy
                .upstream_vhost
                .as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(nginx(&[]).expect("empty").policy.upstream_vhost, None);
        assert_rejects(
            "upstream-vhost",
            &["$host", "a b", "user@h", "h/x", "h:port", "http://h", ":80"],
        );
        assert_rejects("x-forwarded-prefix", &["/a b", "/é"]);
    }

    #[test]
    fn backend_protocol() {
        assert_eq!(nginx(&[]).expect("empty").protocol, BackendProtocol::Http);
        assert_eq!(
            ok("backend-protocol", "HTTPS").protocol,
            BackendProtocol::Https
        );
        assert_eq!(
            ok("backend-protocol", "grpc").protocol,
            BackendProtocol::Grpc
        );
        assert_eq!(
            ok("backend-protocol", "GRPCS").protocol,
            BackendProtocol::Grpcs
        );
        assert_eq!(
            ok("backend-protocol", "HTTP").protocol,
            BackendProtocol::Http
        );
        assert_rejects("backend-protocol", &["FCGI", "AUTO_HTTP", "h3"]);
    }

    #[test]
    fn load_balance() {
        assert_eq!(
            ok("load-balance", "ewma").policy.load_balance,
            LoadBalance::PeakEwma
        );
        assert_eq!(
            ok("load-balance", "round_robin").policy.load_balance,
            LoadBalance::RoundRobin
        );
        assert_rejects("load-balance", &["chash", "EWMA", ""]);
    }

    #[test]
    fn next_upstream_tries() {
        assert_eq!(nginx(&[]).expect("empty").policy.max_attempts, 3);
        assert_eq!(ok("proxy-next-upstream-tries", "5").policy.max_attempts, 5);
        assert_eq!(ok("proxy-next-upstream-tries", "1").policy.max_attempts, 1);
        assert_rejects("proxy-next-upstream-tries", &["0", "101", "-1", "three"]);
    }
}
