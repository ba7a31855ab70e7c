//! `auth-url`, `auth-method`, `auth-signin`, `auth-signin-redirect-param`,
//! `auth-response-headers`: external authentication (see `proxy::filters::external_auth`).
use std::sync::Arc;

use super::{is_token, no_space_or_control, parse_token, AnnotationError, Annotations, Reader};
use crate::snapshot::ExternalAuth;

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
        .get("auth-response-headers", |v| {
            v.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if is_token(h) {
                        Ok(h.to_ascii_lowercase())
                    } else {
                        Err(format!("{h:?} is not a header name"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        })?
        .unwrap_or_default();
    a.policy.external_auth = Some(Arc::new(ExternalAuth {
        url,
        method,
        signin,
        redirect_param,
        response_headers,
    }));
    Ok(())
}

/// An `http://` or `https://` URL with a host.
fn parse_url(v: &str) -> Result<String, String> {
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
        ] {
            let e = nginx(&[("auth-url", "http://a/b"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name), "{e}");
        }
    }
}
