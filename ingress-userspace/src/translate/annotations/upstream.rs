//! `backend-protocol`, `load-balance`, `proxy-next-upstream`, `proxy-next-upstream-tries`,
//! `proxy-next-upstream-timeout`, `upstream-vhost`, `x-forwarded-prefix`, `upstream-hash-by`
//! (with `upstream-hash-by-subset` and `-subset-size`), `service-upstream`; the ConfigMap's
//! `retry-non-idempotent`.
use std::time::Duration;

use super::{no_space_or_control, parse_in_range, AnnotationError, Annotations, Reader};
use crate::snapshot::{BackendProtocol, HashKey, HashPart, LoadBalance, NextUpstream};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(p) = r.get("backend-protocol", parse_protocol)? {
        a.protocol = p;
    }
    if let Some(lb) = r.get("load-balance", parse_load_balance)? {
        a.policy.load_balance = lb;
    }
    // 0 is nginx's "no limit": every endpoint once at most, as any count here.
    if let Some(n) = r.get("proxy-next-upstream-tries", |v| {
        parse_in_range(v, 0u32..=100)
    })? {
        a.policy.max_attempts = if n == 0 { u32::MAX } else { n };
    }
    if let Some(next) = r.get("proxy-next-upstream", parse_next_upstream)? {
        a.policy.next_upstream = next;
    }
    if r.defaults.retry_non_idempotent {
        a.policy.next_upstream.non_idempotent = true;
    }
    if let Some(t) = r.get("proxy-next-upstream-timeout", |v| {
        parse_in_range(v.strip_suffix('s').unwrap_or(v), 0u64..=604_800)
    })? {
        // 0 is nginx's "no limit".
        a.policy.next_upstream.timeout = (t != 0).then(|| Duration::from_secs(t));
    }
    a.service_upstream = r.flag("service-upstream")?.unwrap_or(false);
    a.policy.upstream_vhost = r.get("upstream-vhost", parse_vhost)?;
    a.policy.hash_by = r.get("upstream-hash-by", parse_hash_key)?;
    // Read only with a hash key, so they are reported as without effect otherwise.
    if a.policy.hash_by.is_some() && r.flag("upstream-hash-by-subset")?.unwrap_or(false) {
        let size = r
            .get("upstream-hash-by-subset-size", |v| {
                parse_in_range(v, 1u32..=1000)
            })?
            .unwrap_or(3);
        a.policy.hash_subset = Some(size);
    }
    a.policy.forwarded_prefix = r.get("x-forwarded-prefix", |v| {
        no_space_or_control(v)?;
        if v.is_empty() || !v.is_ascii() {
            return Err("expected a non-empty ASCII path prefix".into());
        }
        Ok(v.to_owned())
    })?;
    Ok(())
}

/// nginx's `proxy_next_upstream` list: `error`, `timeout`, `invalid_header`, `http_500`,
/// `http_502`, `http_503`, `http_504`, `http_403`, `http_404`, `http_429`, `non_idempotent`,
/// or `off` alone.
fn parse_next_upstream(v: &str) -> Result<NextUpstream, String> {
    let mut next = NextUpstream::off();
    let mut words = 0;
    for word in v.split_ascii_whitespace() {
        words += 1;
        match word {
            "off" => {}
            "error" | "invalid_header" => {
                next.connect_error = true;
                next.sent_error = true;
            }
            "timeout" => {
                next.connect_timeout = true;
                next.sent_timeout = true;
            }
            "non_idempotent" => next.non_idempotent = true,
            _ => {
                let status = word
                    .strip_prefix("http_")
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| matches!(c, 500 | 502 | 503 | 504 | 403 | 404 | 429))
                    .ok_or_else(|| {
                        format!(
                            "unknown condition {word:?} (expected error, timeout, invalid_header, \
                             http_500, http_502, http_503, http_504, http_403, http_404, \
                             http_429, non_idempotent or off)"
                        )
                    })?;
                if !next.statuses.contains(&status) {
                    next.statuses.push(status);
                }
            }
        }
    }
    if words == 0 {
        return Err("expected a list of conditions, or off".into());
    }
    if v.split_ascii_whitespace().any(|w| w == "off") && words > 1 {
        return Err("off cannot be combined with other conditions".into());
    }
    Ok(next)
}

/// An nginx-style key (`$request_uri`, `$http_x_user$arg_id`, `${cookie_sid}-x`): text and
/// the variables [`HashPart`] lists. Anything else is refused, not hashed as text.
pub(super) fn parse_hash_key(v: &str) -> Result<HashKey, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = v;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = match rest.strip_prefix('{') {
            Some(inner) => {
                let end = inner.find('}').ok_or("unclosed ${")?;
                (&inner[..end], &inner[end + 1..])
            }
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        if !text.is_empty() {
            parts.push(HashPart::Text(std::mem::take(&mut text)));
        }
        parts.push(hash_var(name)?);
        rest = after;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(HashPart::Text(text));
    }
    if !parts.iter().any(|p| !matches!(p, HashPart::Text(_))) {
        return Err("needs at least one variable, such as $request_uri".into());
    }
    Ok(HashKey { parts })
}

fn hash_var(name: &str) -> Result<HashPart, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    };
    Ok(match name {
        "request_uri" => HashPart::RequestUri,
        "uri" | "document_uri" => HashPart::Uri,
        "remote_addr" | "binary_remote_addr" => HashPart::RemoteAddr,
        "host" => HashPart::Host,
        "scheme" => HashPart::Scheme,
        _ => {
            if let Some(h) = named("http_") {
                HashPart::Header(h.to_ascii_lowercase().replace('_', "-"))
            } else if let Some(c) = named("cookie_") {
                HashPart::Cookie(c.to_owned())
            } else if let Some(a) = named("arg_") {
                HashPart::Arg(a.to_owned())
            } else {
                return Err(format!(
                    "unsupported variable ${name} (supported: $request_uri, $uri, \
                     $remote_addr, $binary_remote_addr, $host, $scheme, $http_*, $cookie_*, $arg_*)"
                ));
            }
        }
    })
}

/// A Host value: `host[:port]`, the host a DNS name (as Ingress hosts are checked; an IPv4
/// address passes as one) or a bracketed IPv6 address.
/// ingress-nginx takes nginx variables here (`$host`...); those are refused rather than sent
/// literally.
pub(super) fn parse_vhost(v: &str) -> Result<String, String> {
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
    let name_ok = v.starts_with('[')
        || crate::translate::hosts::validate_dns_name(&host.to_ascii_lowercase()).is_ok();
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
    fn upstream_hash_by() {
        use crate::snapshot::{HashKey, HashPart};
        let key = |v: &str| ok("upstream-hash-by", v).policy.hash_by;
        assert_eq!(
            key("$request_uri"),
            Some(HashKey {
                parts: vec![HashPart::RequestUri]
            })
        );
        assert_eq!(
            key("$http_x_user-${cookie_sid}:$arg_id$binary_remote_addr"),
            Some(HashKey {
                parts: vec![
                    HashPart::Header("x-user".into()),
                    HashPart::Text("-".into()),
                    HashPart::Cookie("sid".into()),
                    HashPart::Text(":".into()),
                    HashPart::Arg("id".into()),
                    HashPart::RemoteAddr,
                ]
            })
        );
        assert_eq!(nginx(&[]).expect("empty").policy.hash_by, None);
        let subset = |pairs: &[(&str, &str)]| nginx(pairs).map(|a| a.policy.hash_subset);
        let by = ("upstream-hash-by", "$request_uri");
        assert_eq!(
            subset(&[by, ("upstream-hash-by-subset", "true")]),
            Ok(Some(3))
        );
        assert_eq!(
            subset(&[
                by,
                ("upstream-hash-by-subset", "true"),
                ("upstream-hash-by-subset-size", "5")
            ]),
            Ok(Some(5))
        );
        assert_eq!(
            subset(&[by, ("upstream-hash-by-subset", "false")]),
            Ok(None)
        );
        assert_eq!(subset(&[("upstream-hash-by-subset", "true")]), Ok(None));
        for bad in ["0", "-1", "three"] {
            let e = nginx(&[
                by,
                ("upstream-hash-by-subset", "true"),
                ("upstream-hash-by-subset-size", bad),
            ])
            .expect_err(bad);
            assert!(e.key.ends_with("upstream-hash-by-subset-size"), "{e}");
        }
        assert_rejects(
            "upstream-hash-by",
            &[
                "plain",
                "$nonsense",
                "${request_uri",
                "$http_",
                "$",
                "$upstream_addr",
            ],
        );
    }

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
        assert!(ok("service-upstream", "true").service_upstream);
        assert!(!nginx(&[]).expect("empty").service_upstream);
        assert_rejects("service-upstream", &["yes-please"]);
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
        assert_eq!(
            ok("proxy-next-upstream-tries", "0").policy.max_attempts,
            u32::MAX
        );
        assert_rejects("proxy-next-upstream-tries", &["101", "-1", "three"]);
    }

    #[test]
    fn next_upstream_conditions() {
        use crate::snapshot::NextUpstream;
        assert_eq!(
            nginx(&[]).expect("empty").policy.next_upstream,
            NextUpstream::default()
        );
        // ingress-nginx's default list.
        assert_eq!(
            ok("proxy-next-upstream", "error timeout")
                .policy
                .next_upstream,
            NextUpstream::default()
        );
        let n = ok(
            "proxy-next-upstream",
            "error timeout http_502 http_503 http_502",
        )
        .policy
        .next_upstream;
        assert!(n.connect_error && n.connect_timeout && n.sent_error && n.sent_timeout);
        assert_eq!(n.statuses, vec![502, 503]);
        assert!(!n.non_idempotent);
        assert!(n.after_send());

        let n = ok("proxy-next-upstream", "http_404  non_idempotent")
            .policy
            .next_upstream;
        assert!(!n.connect_error && !n.connect_timeout && !n.sent_error && !n.sent_timeout);
        assert_eq!(n.statuses, vec![404]);
        assert!(n.non_idempotent);

        let n = ok("proxy-next-upstream", "timeout").policy.next_upstream;
        assert!(!n.connect_error && n.connect_timeout && !n.sent_error && n.sent_timeout);
        let n = ok("proxy-next-upstream", "invalid_header")
            .policy
            .next_upstream;
        assert!(n.connect_error && n.sent_error && !n.sent_timeout);

        let off = ok("proxy-next-upstream", "off").policy.next_upstream;
        assert_eq!(off, NextUpstream::off());
        assert!(!off.after_send());

        assert_rejects(
            "proxy-next-upstream",
            &[
                "",
                "  ",
                "http_501",
                "http_5xx",
                "error off",
                "retry",
                "http_",
            ],
        );
    }

    #[test]
    fn next_upstream_timeout() {
        use std::time::Duration;
        let t = |v: &str| {
            ok("proxy-next-upstream-timeout", v)
                .policy
                .next_upstream
                .timeout
        };
        assert_eq!(t("10"), Some(Duration::from_secs(10)));
        assert_eq!(t("3s"), Some(Duration::from_secs(3)));
        assert_eq!(t("0"), None);
        // The timeout combines with the condition list whatever their order.
        let a = nginx(&[
            ("proxy-next-upstream-timeout", "7"),
            ("proxy-next-upstream", "http_503"),
        ])
        .expect("valid");
        assert_eq!(a.policy.next_upstream.timeout, Some(Duration::from_secs(7)));
        assert_eq!(a.policy.next_upstream.statuses, vec![503]);
        assert_rejects(
            "proxy-next-upstream-timeout",
            &["-1", "1m", "ten", "604801"],
        );
    }
}
