//! `proxy-cookie-path` and `proxy-cookie-domain`: the `Path` and `Domain` attributes of the
//! upstream's `Set-Cookie` headers rewritten as nginx's `proxy_cookie_path` and
//! `proxy_cookie_domain` do, so cookies follow a `rewrite-target` or a public host name.
use http::{header, HeaderMap, HeaderValue};

use crate::snapshot::CookieRewrite;

/// Rewrites every `Set-Cookie` of an upstream response.
pub fn apply(headers: &mut HeaderMap, rw: &CookieRewrite) {
    let header::Entry::Occupied(mut entry) = headers.entry(header::SET_COOKIE) else {
        return;
    };
    for value in entry.iter_mut() {
        let Ok(text) = value.to_str() else {
            continue;
        };
        if let Some(new) = rewrite(text, rw).and_then(|s| HeaderValue::from_str(&s).ok()) {
            *value = new;
        }
    }
}

/// One `Set-Cookie` value rewritten, or `None` when nothing in it matched.
fn rewrite(cookie: &str, rw: &CookieRewrite) -> Option<String> {
    let mut changed = false;
    let mut parts: Vec<String> = Vec::new();
    for (i, part) in cookie.split(';').enumerate() {
        // The first part is the cookie's name=value, never an attribute.
        let attr = (i > 0).then(|| part.trim_start().split_once('=')).flatten();
        let new_value = match attr {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("path") => {
                rw.path.as_ref().and_then(|(from, to)| {
                    value
                        .trim()
                        .strip_prefix(from.as_str())
                        .map(|rest| format!("{to}{rest}"))
                })
            }
            Some((name, value)) if name.trim().eq_ignore_ascii_case("domain") => rw
                .domain
                .as_ref()
                .and_then(|(from, to)| rewrite_domain(value.trim(), from, to)),
            _ => None,
        };
        match (attr, new_value) {
            (Some((name, _)), Some(v)) => {
                changed = true;
                parts.push(format!(" {}={v}", name.trim()));
            }
            _ => parts.push(part.to_owned()),
        }
    }
    changed.then(|| parts.join(";"))
}

/// nginx's domain match: the whole domain, case-insensitively, a leading dot on either side
/// ignored (and kept on the cookie's).
fn rewrite_domain(value: &str, from: &str, to: &str) -> Option<String> {
    let (dot, bare) = match value.strip_prefix('.') {
        Some(rest) => (".", rest),
        None => ("", value),
    };
    let from = from.strip_prefix('.').unwrap_or(from);
    bare.eq_ignore_ascii_case(from)
        .then(|| format!("{dot}{}", to.strip_prefix('.').unwrap_or(to)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(path: Option<(&str, &str)>, domain: Option<(&str, &str)>) -> CookieRewrite {
        let own = |p: Option<(&str, &str)>| p.map(|(a, b)| (a.to_owned(), b.to_owned()));
        CookieRewrite {
            path: own(path),
            domain: own(domain),
        }
    }

    #[test]
    fn path_prefix_is_replaced() {
        let r = rw(Some(("/two/", "/")), None);
        assert_eq!(
            rewrite("sid=1; Path=/two/some/uri/; HttpOnly", &r).as_deref(),
            Some("sid=1; Path=/some/uri/; HttpOnly")
        );
        assert_eq!(
            rewrite("sid=1; path=/two/", &r).as_deref(),
            Some("sid=1; path=/")
        );
        // Another prefix, no path, or a cookie value that looks like one: untouched.
        assert_eq!(rewrite("sid=1; Path=/one/", &r), None);
        assert_eq!(rewrite("sid=1; HttpOnly", &r), None);
        assert_eq!(rewrite("path=/two/x", &r), None);
    }

    #[test]
    fn domain_matches_whole_and_case_insensitively() {
        let r = rw(None, Some(("localhost", "example.org")));
        assert_eq!(
            rewrite("a=b; Domain=LocalHost; Path=/", &r).as_deref(),
            Some("a=b; Domain=example.org; Path=/")
        );
        assert_eq!(
            rewrite("a=b; domain=.localhost", &r).as_deref(),
            Some("a=b; domain=.example.org")
        );
        assert_eq!(rewrite("a=b; Domain=notlocalhost", &r), None);
        assert_eq!(rewrite("a=b; Domain=localhost.evil", &r), None);
    }

    #[test]
    fn every_set_cookie_is_rewritten() {
        let r = rw(Some(("/app/", "/")), Some((".internal", ".example.com")));
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; Path=/app/x; Domain=internal"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("b=2; Path=/other"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("c=3; Path=/app"),
        );
        apply(&mut h, &r);
        let all: Vec<_> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            all,
            vec![
                "a=1; Path=/x; Domain=example.com",
                "b=2; Path=/other",
                "c=3; Path=/app"
            ]
        );
    }
}
