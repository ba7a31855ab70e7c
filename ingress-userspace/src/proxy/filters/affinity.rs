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

/// Whether a response served by endpoint `served` sets the cookie: not when the cookie
/// already names it, nor when it names another endpoint that still exists (failed or
/// ejected), unless `change-on-failure` says so.
pub fn sets_cookie(
    aff: &CookieAffinity,
    served: usize,
    routed: Option<usize>,
    named_exists: bool,
) -> bool {
    if routed == Some(served) {
        return false;
    }
    !named_exists || aff.change_on_failure
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
    if let Some(secs) = aff.expires {
        let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
        s.push_str(&format!("; Expires={}", httpdate::fmt_http_date(at)));
    }
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
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
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
        aff.same_site = None;
        aff.expires = Some(3600);
        let v = set_cookie(&aff, "abc", "/", false).unwrap_or_else(|| panic!("no cookie"));
        let v = v.to_str().unwrap_or_default();
        let date = v
            .split("; ")
            .find_map(|a| a.strip_prefix("Expires="))
            .unwrap_or_else(|| panic!("no Expires: {v}"));
        let at = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date}: {e}"));
        let ahead = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        assert!((3590..=3600).contains(&ahead), "{v}");
    }

    #[test]
    fn cookie_changes_only_when_it_must() {
        let mut aff = CookieAffinity {
            name: "c".into(),
            path: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
        };
        // Its endpoint served: nothing to change.
        assert!(!sets_cookie(&aff, 2, Some(2), true));
        // No cookie, or one naming no endpoint of the upstream: a new one.
        assert!(sets_cookie(&aff, 2, None, false));
        // Its endpoint is there but failed or is ejected: kept, unless asked.
        assert!(!sets_cookie(&aff, 2, Some(1), true));
        assert!(!sets_cookie(&aff, 2, None, true));
        aff.change_on_failure = true;
        assert!(sets_cookie(&aff, 2, Some(1), true));
        assert!(sets_cookie(&aff, 2, None, true));
    }
}
