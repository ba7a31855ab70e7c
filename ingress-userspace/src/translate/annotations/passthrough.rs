//! `ssl-passthrough` and, under our prefix only, `proxy-protocol` (PROXY v2 header to the
//! passthrough backend).
use super::{parse_bool, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    a.passthrough = r.flag("ssl-passthrough")?.unwrap_or(false);
    a.proxy_protocol = r.get_own("proxy-protocol", parse_bool)?.unwrap_or(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse, test_support::*, Defaults, OWN_PREFIX};
    use std::collections::BTreeMap;

    #[test]
    fn passthrough_and_proxy_protocol() {
        assert!(ok("ssl-passthrough", "true").passthrough);
        assert!(!ok("ssl-passthrough", "false").passthrough);
        assert_rejects("ssl-passthrough", &["tls"]);
        // proxy-protocol is ours only: the nginx-prefixed one is unknown, hence ignored.
        assert!(!ok("proxy-protocol", "true").proxy_protocol);
        let own = |v: &str| {
            let map = BTreeMap::from([
                (format!("{OWN_PREFIX}ssl-passthrough"), "true".to_owned()),
                (format!("{OWN_PREFIX}proxy-protocol"), v.to_owned()),
            ]);
            parse("ns", Some(&map), &Defaults::default()).result
        };
        let a = own("true").expect("valid");
        assert!(a.passthrough && a.proxy_protocol);
        let e = own("v2").expect_err("invalid");
        assert_eq!(e.key, format!("{OWN_PREFIX}proxy-protocol"));
    }
}
