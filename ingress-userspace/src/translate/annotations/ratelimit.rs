//! `limit-rps`, `limit-rpm`, `limit-connections` (per client address; `0` disables),
//! `limit-burst-multiplier`, `limit-whitelist` (or its newer name `limit-allowlist`: client
//! networks not limited), and `limit-rate` / `limit-rate-after` (kilobytes per second and
//! kilobytes, as ingress-nginx writes them into `limit_rate ...k`).
use super::{parse_in_range, source_range::parse_ranges, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(n) = r.get("limit-rps", |v| parse_in_range(v, 0u32..=1_000_000))? {
        a.policy.limit_rps = (n != 0).then_some(n);
    }
    if let Some(n) = r.get("limit-rpm", |v| parse_in_range(v, 0u32..=60_000_000))? {
        a.policy.limit_rpm = (n != 0).then_some(n);
    }
    if let Some(n) = r.get("limit-connections", |v| parse_in_range(v, 0u32..=1_000_000))? {
        a.policy.limit_connections = (n != 0).then_some(n);
    }
    if let Some(n) = r.get("limit-burst-multiplier", |v| parse_in_range(v, 1u32..=1000))? {
        a.policy.limit_burst_multiplier = n;
    }
    // Read only with a rate, so a lone `limit-rate-after` is reported as without effect.
    if let Some(kb) = r
        .get("limit-rate", |v| {
            parse_in_range(v, 0u64..=u64::from(u32::MAX))
        })?
        .filter(|kb| *kb != 0)
    {
        let after = r
            .get("limit-rate-after", |v| {
                parse_in_range(v, 0u64..=u64::from(u32::MAX))
            })?
            .unwrap_or(0);
        a.policy.limit_rate = Some(crate::snapshot::SendRate {
            bytes_per_sec: kb * 1024,
            after: after * 1024,
        });
    }
    // ingress-nginx renamed the annotation; the newer name wins when both are given.
    for name in ["limit-whitelist", "limit-allowlist"] {
        if let Some(nets) = r.get(name, parse_ranges)? {
            a.policy.limit_exempt = nets;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn limit_rate_in_kilobytes() {
        let a = nginx(&[("limit-rate", "100"), ("limit-rate-after", "2048")]).expect("valid");
        assert_eq!(
            a.policy.limit_rate,
            Some(crate::snapshot::SendRate {
                bytes_per_sec: 102_400,
                after: 2_097_152
            })
        );
        assert_eq!(ok("limit-rate", "0").policy.limit_rate, None);
        assert_eq!(ok("limit-rate-after", "10").policy.limit_rate, None);
        assert_rejects("limit-rate", &["-1", "1m", "1.5", "99999999999"]);
        let e = nginx(&[("limit-rate", "1"), ("limit-rate-after", "lots")]).expect_err("bad");
        assert!(e.key.ends_with("limit-rate-after"), "{e}");
    }

    #[test]
    fn limit_rps() {
        assert_eq!(ok("limit-rps", "10").policy.limit_rps, Some(10));
        assert_eq!(ok("limit-rps", "0").policy.limit_rps, None);
        assert_eq!(nginx(&[]).expect("empty").policy.limit_rps, None);
        assert_rejects("limit-rps", &["-1", "ten", "1.5", "2000000"]);
    }

    #[test]
    fn limit_rpm_burst_and_exempt_networks() {
        let a = nginx(&[
            ("limit-rpm", "120"),
            ("limit-burst-multiplier", "2"),
            ("limit-whitelist", "10.0.0.0/8, 192.0.2.7"),
        ])
        .expect("valid");
        assert_eq!(a.policy.limit_rpm, Some(120));
        assert_eq!(a.policy.limit_burst_multiplier, 2);
        let nets: Vec<String> = a
            .policy
            .limit_exempt
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32"]);
        assert_eq!(nginx(&[]).expect("empty").policy.limit_burst_multiplier, 5);
        let a = nginx(&[
            ("limit-whitelist", "10.0.0.0/8"),
            ("limit-allowlist", "172.16.0.0/12"),
        ])
        .expect("valid");
        assert_eq!(a.policy.limit_exempt.len(), 1);
        assert_eq!(a.policy.limit_exempt[0].to_string(), "172.16.0.0/12");
        assert_eq!(
            ok("limit-connections", "4").policy.limit_connections,
            Some(4)
        );
        assert_eq!(ok("limit-connections", "0").policy.limit_connections, None);
        assert_rejects("limit-connections", &["-1", "many", "1000001"]);
        assert_rejects("limit-rpm", &["-1", "x"]);
        assert_rejects("limit-burst-multiplier", &["0", "1.5"]);
        assert_rejects("limit-allowlist", &["10.0.0.0/33", "nope"]);
    }
}
