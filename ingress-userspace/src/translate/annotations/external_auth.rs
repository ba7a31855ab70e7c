//! `auth-url`, `auth-method`, `auth-signin`, `auth-signin-redirect-param`, `auth-response-headers`,
//! `auth-cache-key`, `auth-cache-duration`, `auth-request-redirect` (the `X-Auth-Request-Redirect`
//! the service gets), `auth-always-set-cookie`, `auth-proxy-set-headers` (a ConfigMap of
//! headers for the service, read by the translator): external authentication (see
//! `proxy::filters::external_auth`). The controller ConfigMap's `global-auth-*` keys give every
//! Ingress without its own `auth-url` the same, unless it says `enable-global-auth: "false"`.
use std::{sync::Arc, time::Duration};

use super::{is_token, no_space_or_control, parse_token, AnnotationError, Annotations, Reader};
use crate::snapshot::{AuthCacheSpec, ExternalAuth};

/// Variables `auth-url` and `auth-signin` may use (replaced per request).
const VARIABLES: &[&str] = &[
    "$escaped_request_uri",
    "$request_uri",
    "$best_http_host",
    "$http_host",
    "$host",
    "$scheme",
];

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    // Read (so checked, and never "unread") even without a global auth to turn off.
    r.flag("enable-global-auth")?;
    let global = r.comes_from_global_auth("auth-url");
    let Some(url) = r.get("auth-url", parse_url)? else {
        return Ok(());
    };
    let method = r
        .get("auth-method", |v| {
            if is_token(v) && v.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(v.to_owned())
            } else {
                Err("expected an HTTP method such as GET".to_string())
            }
        })?
        .unwrap_or_else(|| "GET".to_owned());
    let signin = r.get("auth-signin", |v| {
        no_space_or_control(v)?;
        check_variables(v)?;
        if v.starts_with("http://") || v.starts_with("https://") || v.starts_with('/') {
            Ok(v.to_owned())
        } else {
            Err("expected an http(s) URL or a path".to_string())
        }
    })?;
    let redirect_param = r
        .get("auth-signin-redirect-param", |v| {
            parse_token(v, "query parameter name")
        })?
        .unwrap_or_else(|| "rd".to_owned());
    let response_headers = r
        .get("auth-response-headers", super::parse_header_names)?
        .unwrap_or_default();
    let cache = match r.get("auth-cache-key", super::upstream::parse_hash_key)? {
        None => None,
        Some(key) => Some(AuthCacheSpec {
            key,
            valid: r
                .get("auth-cache-duration", parse_cache_duration)?
                .unwrap_or_else(|| {
                    let five_minutes = Duration::from_secs(300);
                    vec![
                        (Some(200), five_minutes),
                        (Some(202), five_minutes),
                        (Some(401), five_minutes),
                    ]
                }),
        }),
    };
    let namespace = r.namespace().to_owned();
    a.auth_proxy_set_headers = r.get("auth-proxy-set-headers", |v| {
        crate::translate::header_sets::reference(&namespace, v)
            .map_err(|_| "expected a ConfigMap name or namespace/name".to_string())
    })?;
    a.policy.external_auth = Some(Arc::new(ExternalAuth {
        url,
        method,
        signin,
        redirect_param,
        response_headers,
        cache,
        request_redirect: r.get("auth-request-redirect", |v| {
            no_space_or_control(v)?;
            check_variables(v)?;
            Ok(v.to_owned())
        })?,
        always_set_cookie: r.flag("auth-always-set-cookie")?.unwrap_or(false),
        global,
        proxy_set_headers: Vec::new(),
        denied: false,
    }));
    Ok(())
}

/// nginx's `proxy_cache_valid` lists, comma-separated: status codes (or `any`) then a time
/// (`30s`, `5m`, `1h`, `1d`; seconds when bare), e.g. `200 202 10m, 401 1m`.
fn parse_cache_duration(v: &str) -> Result<Vec<(Option<u16>, Duration)>, String> {
    let mut out = Vec::new();
    for group in v.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let words: Vec<&str> = group.split_whitespace().collect();
        let Some((time, codes)) = words.split_last() else {
            continue;
        };
        let ttl = parse_time(time)?;
        if codes.is_empty() {
            return Err(format!("{group:?}: which status codes?"));
        }
        for code in codes {
            let code = match *code {
                "any" => None,
                c => Some(
                    c.parse::<u16>()
                        .ok()
                        .filter(|n| (100..=599).contains(n))
                        .ok_or_else(|| format!("{c:?} is not a status code"))?,
                ),
            };
            out.push((code, ttl));
        }
    }
    if out.is_empty() {
        return Err("expected status codes and a time, such as 200 202 5m".into());
    }
    Ok(out)
}

/// An nginx time: digits and one unit of s, m, h, d (seconds when none), at most a week.
pub(crate) fn parse_time(v: &str) -> Result<Duration, String> {
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{v:?} is not a time"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{v:?}: unit must be s, m, h or d")),
    };
    if secs == 0 || secs > 7 * 86_400 {
        return Err(format!("{v:?}: must be between 1s and 7d"));
    }
    Ok(Duration::from_secs(secs))
}

/// An `http://` or `https://` URL with a host, holding only the variables the proxy
/// replaces.
pub(super) fn parse_url(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    check_variables(v)?;
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err("expected http(s)://host[:port]/path".into());
    }
    Ok(v.to_owned())
}

/// Only the variables the proxy replaces may appear: any other would be sent literally.
fn check_variables(v: &str) -> Result<(), String> {
    let mut rest = v;
    while let Some(at) = rest.find('$') {
        rest = &rest[at..];
        match VARIABLES.iter().find(|var| rest.starts_with(**var)) {
            Some(var) => rest = &rest[var.len()..],
            None => {
                return Err(format!(
                    "unsupported variable in {v:?} (supported: {})",
                    VARIABLES.join(", ")
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn external_auth() {
        assert_eq!(nginx(&[]).expect("empty").policy.external_auth, None);
        let a = nginx(&[
            ("auth-url", "http://oauth2-proxy.auth.svc:4180/oauth2/auth"),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
            (
                "auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
        ])
        .expect("valid");
        let e = a.policy.external_auth.expect("set");
        assert_eq!(e.url, "http://oauth2-proxy.auth.svc:4180/oauth2/auth");
        assert_eq!(e.method, "GET");
        assert_eq!(
            e.signin.as_deref(),
            Some("https://$host/oauth2/start?rd=$escaped_request_uri")
        );
        assert_eq!(e.redirect_param, "rd");
        assert_eq!(e.request_redirect, None);
        let a = nginx(&[
            ("auth-url", "http://a/b"),
            ("auth-request-redirect", "https://$host$request_uri"),
        ])
        .expect("valid");
        assert_eq!(
            a.policy
                .external_auth
                .and_then(|e| e.request_redirect.clone())
                .as_deref(),
            Some("https://$host$request_uri")
        );
        assert_eq!(
            e.response_headers,
            ["x-auth-request-user", "x-auth-request-email"]
        );
        let tls = ok("auth-url", "https://$host/oauth2/auth")
            .policy
            .external_auth;
        assert_eq!(
            tls.map(|e| e.url.clone()).as_deref(),
            Some("https://$host/oauth2/auth")
        );
        assert_rejects(
            "auth-url",
            &[
                "ftp://auth.example/check",
                "auth.example/check",
                "http:///x",
                "http://$remote_addr/x",
                "http://u@h/x",
            ],
        );
        for (name, bad) in [
            ("auth-method", "get"),
            ("auth-signin", "ftp://x"),
            ("auth-response-headers", "X Bad"),
            ("auth-request-redirect", "$remote_addr"),
            ("auth-request-redirect", "/a b"),
        ] {
            let e = nginx(&[("auth-url", "http://a/b"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name), "{e}");
        }
    }

    #[test]
    fn auth_cache() {
        use std::time::Duration;
        let a = nginx(&[
            ("auth-url", "http://a/b"),
            ("auth-cache-key", "$cookie_session$http_authorization"),
        ])
        .expect("valid");
        let c = a
            .policy
            .external_auth
            .and_then(|e| e.cache.clone())
            .expect("cache");
        assert_eq!(c.key.parts.len(), 2);
        let five = Duration::from_secs(300);
        assert_eq!(
            c.valid,
            vec![(Some(200), five), (Some(202), five), (Some(401), five)]
        );
        let a = nginx(&[
            ("auth-url", "http://a/b"),
            ("auth-cache-key", "$remote_addr"),
            ("auth-cache-duration", "200 202 10m, 401 30s, any 2"),
        ])
        .expect("valid");
        let c = a
            .policy
            .external_auth
            .and_then(|e| e.cache.clone())
            .expect("cache");
        assert_eq!(
            c.valid,
            vec![
                (Some(200), Duration::from_secs(600)),
                (Some(202), Duration::from_secs(600)),
                (Some(401), Duration::from_secs(30)),
                (None, Duration::from_secs(2)),
            ]
        );
        let a = nginx(&[
            ("auth-url", "http://a/b"),
            ("auth-always-set-cookie", "true"),
        ])
        .expect("valid");
        assert!(a.policy.external_auth.is_some_and(|e| e.always_set_cookie));
        // A duration without a key keeps nothing.
        let a = nginx(&[
            ("auth-url", "http://a/b"),
            ("auth-cache-duration", "200 5m"),
        ])
        .expect("valid");
        assert!(a.policy.external_auth.is_some_and(|e| e.cache.is_none()));
        for (name, bad) in [
            ("auth-cache-key", "$remote_user"),
            ("auth-cache-duration", "5m"),
            ("auth-cache-duration", "200 5y"),
            ("auth-cache-duration", "999 5m"),
            ("auth-cache-duration", "200 0s"),
            ("auth-cache-duration", "200 30d"),
        ] {
            let mut pairs = vec![
                ("auth-url", "http://a/b"),
                ("auth-cache-key", "$remote_addr"),
            ];
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, bad));
            let e = nginx(&pairs).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }
}
