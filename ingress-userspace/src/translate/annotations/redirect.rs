//! `ssl-redirect`, `force-ssl-redirect`, `app-root`, `permanent-redirect(-code)`,
//! `temporal-redirect(-code)`. When both redirects are set the temporal one wins, as in
//! ingress-nginx.
use super::{no_space_or_control, parse_in_range, AnnotationError, Annotations, Reader};
use crate::snapshot::Redirect;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(v) = r.flag("ssl-redirect")? {
        a.policy.ssl_redirect = v;
    }
    if let Some(v) = r.flag("force-ssl-redirect")? {
        a.policy.force_ssl_redirect = v;
    }
    a.policy.app_root = r.get("app-root", parse_app_root)?;
    let permanent = r.get("permanent-redirect", parse_location)?;
    let permanent_code = r.get("permanent-redirect-code", parse_code)?.unwrap_or(301);
    let temporal = r.get("temporal-redirect", parse_location)?;
    let temporal_code = r.get("temporal-redirect-code", parse_code)?.unwrap_or(302);
    a.policy.redirect = match (temporal, permanent) {
        (Some(location), _) => Some(Redirect {
            status: temporal_code,
            location,
        }),
        (None, Some(location)) => Some(Redirect {
            status: permanent_code,
            location,
        }),
        (None, None) => None,
    };
    Ok(())
}

fn parse_code(v: &str) -> Result<u16, String> {
    parse_in_range(v, 300..=308)
}

fn parse_app_root(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    if !v.starts_with('/') || v.starts_with("//") {
        return Err("must be a path starting with /".into());
    }
    Ok(v.to_owned())
}

/// An absolute `http(s)://` URL or an absolute path.
pub(super) fn parse_location(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    if v.starts_with('/') && !v.starts_with("//") {
        return Ok(v.to_owned());
    }
    let uri: http::Uri = v.parse().map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(v.to_owned()),
        _ => Err("must be an http(s) URL or a path starting with /".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::snapshot::Redirect;

    #[test]
    fn ssl_redirect_flags() {
        assert!(ok("ssl-redirect", "true").policy.ssl_redirect);
        assert!(!ok("ssl-redirect", "false").policy.ssl_redirect);
        assert!(ok("force-ssl-redirect", "true").policy.force_ssl_redirect);
        assert!(!nginx(&[]).expect("empty").policy.force_ssl_redirect);
        assert_rejects("ssl-redirect", &["yes", "maybe"]);
        assert_rejects("force-ssl-redirect", &["on"]);
    }

    #[test]
    fn app_root() {
        assert_eq!(
            ok("app-root", "/app1").policy.app_root.as_deref(),
            Some("/app1")
        );
        assert_rejects("app-root", &["app1", "//evil.example", "/a b", "http://x/"]);
    }

    #[test]
    fn permanent_and_temporal_redirects() {
        let r = |pairs: &[(&str, &str)]| nginx(pairs).expect("valid").policy.redirect;
        assert_eq!(
            r(&[("permanent-redirect", "https://www.example.com/x")]),
            Some(Redirect {
                status: 301,
                location: "https://www.example.com/x".into()
            })
        );
        assert_eq!(
            r(&[
                ("permanent-redirect", "/moved"),
                ("permanent-redirect-code", "308")
            ]),
            Some(Redirect {
                status: 308,
                location: "/moved".into()
            })
        );
        assert_eq!(
            r(&[("temporal-redirect", "http://a.example/")]),
            Some(Redirect {
                status: 302,
                location: "http://a.example/".into()
            })
        );
        assert_eq!(
            r(&[
                ("temporal-redirect", "/t"),
                ("temporal-redirect-code", "307"),
                ("permanent-redirect", "/p"),
            ]),
            Some(Redirect {
                status: 307,
                location: "/t".into()
            })
        );
        assert_eq!(r(&[("permanent-redirect-code", "308")]), None);
        assert_rejects(
            "permanent-redirect",
            &["ftp://x/", "no-scheme", "https://a b", "//host/x"],
        );
        assert_rejects("temporal-redirect", &["javascript:alert(1)"]);
        assert_rejects("permanent-redirect-code", &["200", "404", "x", "-301"]);
        assert_rejects("temporal-redirect-code", &["309"]);
    }
}
