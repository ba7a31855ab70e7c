//! `affinity: cookie`: the endpoint is named by a cookie holding its stable hash.
use http::{header, HeaderMap, HeaderValue};

use crate::snapshot::CookieAffinity;

/// The value of cookie `name` in the request, if any.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The `Set-Cookie` value naming endpoint cookie `value`, for a request that came over TLS
/// or not (`Secure` over HTTPS, as ingress-nginx sets it).
pub fn set_cookie(
    aff: &CookieAffinity,
    value: &str,
    route_path: &str,
    tls: bool,
) -> Option<HeaderValue> {
    let path = aff.path.as_deref().unwrap_or(route_path);
    let mut s = format!("{}={}; Path={}", aff.name, value, path);
    if let Some(age) = aff.max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if let Some(same_site) = aff.same_site {
        s.push_str(&format!("; SameSite={same_site}"));
    }
    if tls || aff.secure || aff.same_site == Some("None") {
        s.push_str("; Secure");
    }
    s.push_str("; HttpOnly");
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; INGRESSCOOKIE=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, "INGRESSCOOKIE"), Some("abc"));
        assert_eq!(cookie_value(&h, "c"), None);
        let mut aff = CookieAffinity {
            name: "INGRESSCOOKIE".into(),
            path: None,
            max_age: Some(60),
            same_site: None,
            secure: false,
        };
        let v = set_cookie(&aff, "abc", "/app", false).unwrap_or_else(|| panic!("no cookie"));
        assert_eq!(v, "INGRESSCOOKIE=abc; Path=/app; Max-Age=60; HttpOnly");
        let v = set_cookie(&aff, "abc", "/app", true).unwrap_or_else(|| panic!("no cookie"));
        assert_eq!(
            v,
            "INGRESSCOOKIE=abc; Path=/app; Max-Age=60; Secure; HttpOnly"
        );
        aff.same_site = Some("None");
        let v = set_cookie(&aff, "abc", "/app", false).unwrap_or_else(|| panic!("no cookie"));
        assert_eq!(
            v,
            "INGRESSCOOKIE=abc; Path=/app; Max-Age=60; SameSite=None; Secure; HttpOnly"
        );
    }
}
