//! `backend-protocol`, `load-balance`, `proxy-next-upstream-tries`.
use super::{parse_in_range, AnnotationError, Annotations, Reader};
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
    Ok(())
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
