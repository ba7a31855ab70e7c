//! Canary choice (ingress-nginx `canary-by-header`, `canary-by-header-value`,
//! `canary-by-cookie`, `canary-weight`).
use http::HeaderMap;

use super::affinity::cookie_value;
use crate::snapshot::Canary;

/// Whether this request goes to the canary, in ingress-nginx's order: the header decides when
/// it says so (`always` / `never`, or the configured value), then the cookie (`always` /
/// `never`), then the weight, out of `weight_total`.
pub fn use_canary(canary: &Canary, headers: &HeaderMap) -> bool {
    if let Some(value) = canary.header.as_deref().and_then(|h| headers.get(h)) {
        match &canary.header_value {
            Some(expected) if value.as_bytes() == expected.as_bytes() => return true,
            Some(_) => {}
            None if value.as_bytes().eq_ignore_ascii_case(b"always") => return true,
            None if value.as_bytes().eq_ignore_ascii_case(b"never") => return false,
            None => {}
        }
    }
    if let Some(value) = canary
        .cookie
        .as_deref()
        .and_then(|c| cookie_value(headers, c))
    {
        if value.eq_ignore_ascii_case("always") {
            return true;
        }
        if value.eq_ignore_ascii_case("never") {
            return false;
        }
    }
    match canary.weight {
        0 => false,
        w if w >= canary.weight_total => true,
        w => rand::random_range(0..canary.weight_total) < w,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderValue;

    use super::*;
    use crate::snapshot::{ObjectRef, Upstream};

    fn canary(weight: u32, header_value: Option<&str>) -> Canary {
        Canary {
            origin: ObjectRef::default(),
            upstream: Arc::new(Upstream {
                name: "default/canary:80".into(),
                endpoints: Vec::new(),
                protocol: Default::default(),
            }),
            weight,
            weight_total: 100,
            header: Some("x-canary".into()),
            header_value: header_value.map(str::to_string),
            cookie: Some("canary".into()),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let none = canary(0, None);
        let all = canary(100, None);
        assert!(!use_canary(&none, &headers(&[])));
        assert!(use_canary(&all, &headers(&[])));
        let mut thousandths = canary(0, None);
        thousandths.weight_total = 1000;
        thousandths.weight = 1000;
        assert!(use_canary(&thousandths, &headers(&[])));
        thousandths.weight = 1;
        let picked = (0..20_000)
            .filter(|_| use_canary(&thousandths, &headers(&[])))
            .count();
        // 1 in 1000: about 20 of 20,000, and far from the 200 a percentage would give.
        assert!((2..=60).contains(&picked), "{picked}");
        // The cookie decides over the weight, both ways.
        assert!(use_canary(
            &none,
            &headers(&[("cookie", "a=1; canary=always")])
        ));
        assert!(!use_canary(&all, &headers(&[("cookie", "canary=never")])));
        // Other cookie values leave it to the weight.
        assert!(!use_canary(&none, &headers(&[("cookie", "canary=yes")])));
        assert!(use_canary(&all, &headers(&[("cookie", "canary=no")])));
        // The header decides over the cookie.
        let h = headers(&[("x-canary", "never"), ("cookie", "canary=always")]);
        assert!(!use_canary(&none, &h));
        let h = headers(&[("x-canary", "always"), ("cookie", "canary=never")]);
        assert!(use_canary(&none, &h));
        // A header value that is not the configured one leaves it to the cookie.
        let v2 = canary(0, Some("v2"));
        let h = headers(&[("x-canary", "v1"), ("cookie", "canary=always")]);
        assert!(use_canary(&v2, &h));
    }
}
