//! Canary choice (ingress-nginx `canary-by-header`, `canary-by-header-value`,
//! `canary-by-header-pattern`, `canary-by-cookie`, `canary-weight`).
use http::HeaderMap;

use super::affinity::{cookie_tag, cookie_value};
use crate::snapshot::{Canary, CookieAffinity};

/// Whether this request goes to the canary, as ingress-nginx's balancer decides it: with
/// cookie affinity on the route, a session the primary holds stays there, and one the canary
/// holds stays there too unless `affinity-canary-behavior` is `legacy`; only a request in
/// neither is shaped by [`use_canary`]. (So, as there, a header or cookie that asks for the
/// canary does not move a session the primary holds.)
/// `primary_tag` and `canary_tag` are the two upstreams' cookie tags.
pub fn chooses_canary(
    canary: &Canary,
    affinity: Option<&CookieAffinity>,
    (primary_tag, canary_tag): (&str, &str),
    headers: &HeaderMap,
) -> bool {
    if let Some(tag) = affinity.and_then(|a| cookie_tag(a, headers)) {
        if tag == primary_tag {
            return false;
        }
        if canary.sticky && tag == canary_tag {
            return true;
        }
    }
    use_canary(canary, headers)
}

/// Whether this request goes to the canary, in ingress-nginx's order: the header decides when
/// it says so (the configured value, else a match of the configured pattern, else `always` /
/// `never`), then the cookie (`always` / `never`), then the weight, out of `weight_total`.
/// A header that does not decide leaves it to the cookie and the weight.
pub fn use_canary(canary: &Canary, headers: &HeaderMap) -> bool {
    if let Some(value) = canary.header.as_deref().and_then(|h| headers.get(h)) {
        if let Some(expected) = &canary.header_value {
            if value.as_bytes() == expected.as_bytes() {
                return true;
            }
        } else if let Some(pattern) = &canary.header_pattern {
            // A value that is not UTF-8 cannot match a text pattern.
            if value.to_str().is_ok_and(|v| pattern.regex.is_match(v)) {
                return true;
            }
        } else if value == "always" {
            // Exactly, as ingress-nginx's balancer compares: `Always` decides nothing.
            return true;
        } else if value == "never" {
            return false;
        }
    }
    if let Some(value) = canary
        .cookie
        .as_deref()
        .and_then(|c| cookie_value(headers, c))
    {
        if value == "always" {
            return true;
        }
        if value == "never" {
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
                missing: false,
                protocol: Default::default(),
                tls: None,
            }),
            label: "default-canary-80".into(),
            weight,
            weight_total: 100,
            header: Some("x-canary".into()),
            header_value: header_value.map(str::to_string),
            header_pattern: None,
            cookie: Some("canary".into()),
            sticky: true,
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
        // Other cookie values leave it to the weight, `Always` and `NEVER` included: ingress-nginx
        // compares exactly.
        assert!(!use_canary(&none, &headers(&[("cookie", "canary=yes")])));
        assert!(!use_canary(&none, &headers(&[("cookie", "canary=Always")])));
        assert!(use_canary(&all, &headers(&[("cookie", "canary=NEVER")])));
        assert!(!use_canary(&none, &headers(&[("x-canary", "ALWAYS")])));
        assert!(use_canary(&all, &headers(&[("x-canary", "Never")])));
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

    #[test]
    fn sessions_stay_where_they_are_held() {
        let aff = CookieAffinity {
            name: "route".into(),
            path: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
            mode: crate::snapshot::AffinityMode::Balanced,
        };
        use crate::proxy::upstream::upstream_tag;
        let (main_tag, canary_tag) = (
            upstream_tag("default/main:80"),
            upstream_tag("default/canary:80"),
        );
        let tags = (main_tag.as_str(), canary_tag.as_str());
        let cookie = |upstream: &str, extra: &str| {
            let v = format!("route=k|{}{extra}", upstream_tag(upstream));
            let mut h = HeaderMap::new();
            h.insert("cookie", HeaderValue::from_str(&v).expect("value"));
            h
        };
        let mut c = canary(100, None);
        let on_primary = cookie("default/main:80", "; canary=always");
        assert!(!chooses_canary(&c, Some(&aff), tags, &on_primary));
        assert!(chooses_canary(&c, None, tags, &on_primary), "no affinity");
        c.weight = 0;
        let on_canary = cookie("default/canary:80", "");
        assert!(chooses_canary(&c, Some(&aff), tags, &on_canary));
        c.sticky = false;
        assert!(!chooses_canary(&c, Some(&aff), tags, &on_canary), "legacy");
        let elsewhere = cookie("default/gone:80", "; canary=always");
        assert!(chooses_canary(&c, Some(&aff), tags, &elsewhere));
    }

    #[test]
    fn header_pattern() {
        let mut c = canary(0, None);
        c.header_pattern = Some(crate::snapshot::Pattern {
            source: "^(beta|alpha)-[0-9]+$".into(),
            regex: regex::Regex::new("^(beta|alpha)-[0-9]+$").expect("regex"),
        });
        assert!(use_canary(&c, &headers(&[("x-canary", "beta-7")])));
        assert!(use_canary(&c, &headers(&[("x-canary", "alpha-12")])));
        // Case-sensitive, as nginx's ngx.re.match without the `i` option.
        assert!(!use_canary(&c, &headers(&[("x-canary", "BETA-7")])));
        // With a pattern, `always` is just a value: it does not match, so the weight (0) decides.
        assert!(!use_canary(&c, &headers(&[("x-canary", "always")])));
        // A value that does not match leaves it to the cookie.
        let h = headers(&[("x-canary", "gamma-1"), ("cookie", "canary=always")]);
        assert!(use_canary(&c, &h));
        // A value that is not UTF-8 does not match and does not panic.
        let mut h = HeaderMap::new();
        h.insert(
            "x-canary",
            HeaderValue::from_bytes(b"beta-\xff").expect("opaque value"),
        );
        assert!(!use_canary(&c, &h));
        // An unanchored pattern finds its match anywhere in the value.
        c.header_pattern = Some(crate::snapshot::Pattern {
            source: "canary".into(),
            regex: regex::Regex::new("canary").expect("regex"),
        });
        assert!(use_canary(
            &c,
            &headers(&[("x-canary", "i-want-canary-now")])
        ));
        // A configured value wins over the pattern (ingress-nginx reads the pattern only
        // without a value).
        c.header_value = Some("v2".into());
        assert!(!use_canary(&c, &headers(&[("x-canary", "canary")])));
        assert!(use_canary(&c, &headers(&[("x-canary", "v2")])));
    }
}
