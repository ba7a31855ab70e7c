//! `ssl-redirect`, `force-ssl-redirect` (with `preserve-trailing-slash` and
//! `use-port-in-redirects`), `app-root`, `permanent-redirect(-code)`,
//! `temporal-redirect(-code)`. When both redirects are set the temporal one wins, as in
//! ingress-nginx. Also `proxy-redirect-from` / `proxy-redirect-to`, which rewrite the
//! upstream's own redirects.
use super::{no_space_or_control, parse_in_range, AnnotationError, Annotations, Reader};
use crate::snapshot::Redirect;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(v) = r.flag("ssl-redirect")? {
        a.policy.ssl_redirect = v;
    }
    if let Some(v) = r.flag("force-ssl-redirect")? {
        a.policy.force_ssl_redirect = v;
    }
    a.policy.preserve_trailing_slash = r.flag("preserve-trailing-slash")?.unwrap_or(false);
    a.policy.use_port_in_redirects = r.flag("use-port-in-redirects")?.unwrap_or(false);
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
    let from = r
        .get("proxy-redirect-from", parse_redirect_prefix)?
        .flatten();
    let to = r.get("proxy-redirect-to", parse_redirect_prefix)?;
    a.policy.redirect_rewrite = match (from, to) {
        (Some(from), Some(Some(to))) => Some((from, to)),
        (Some(_), None) => {
            return Err(r.error(
                "proxy-redirect-from",
                "needs proxy-redirect-to (the prefix put in its place)",
            ))
        }
        _ => None,
    };
    Ok(())
}

/// A URL prefix of `proxy-redirect-from` / `-to`; `off` turns the rewrite off (`None`).
fn parse_redirect_prefix(v: &str) -> Result<Option<String>, String> {
    no_space_or_control(v)?;
    match v {
        "" => Err("must not be empty".into()),
        "off" => Ok(None),
        // nginx's `default` means "the proxy_pass URL", which has no counterpart here.
        "default" => Err("default is not supported; give the prefix".into()),
        _ => Ok(Some(v.to_owned())),
    }
}

fn parse_code(v: &str) -> Result<u16, String> {
    parse_in_range(v, 300..=308)
}

fn parse_app_root(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    if !local_path(v) {
        return Err("must be a path starting with / (no backslash)".into());
    }
    Ok(v.to_owned())
}

/// A path on the same host: browsers read a backslash as a slash, so `/\evil.example` in a
/// `Location` would send them to another host, as `//evil.example` would.
fn local_path(v: &str) -> bool {
    v.starts_with('/') && !v.starts_with("//") && !v.contains('\\')
}

/// An absolute `http(s)://` URL or an absolute path.
pub(super) fn parse_location(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    if v.starts_with('/') {
        return if local_path(v) {
            Ok(v.to_owned())
        } else {
            Err("a path must start with a single / and hold no backslash".into())
        };
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
    fn proxy_redirect() {
        let a = nginx(&[
            ("proxy-redirect-from", "http://internal:8080/"),
            ("proxy-redirect-to", "https://www.example.com/app/"),
        ])
        .expect("valid");
        assert_eq!(
            a.policy.redirect_rewrite,
            Some((
                "http://internal:8080/".to_string(),
                "https://www.example.com/app/".to_string()
            ))
        );
        let off = nginx(&[("proxy-redirect-from", "off"), ("proxy-redirect-to", "/x")]);
        assert_eq!(off.expect("valid").policy.redirect_rewrite, None);
        let to_off = nginx(&[
            ("proxy-redirect-from", "http://a/"),
            ("proxy-redirect-to", "off"),
        ]);
        assert_eq!(to_off.expect("valid").policy.redirect_rewrite, None);
        let e = nginx(&[("proxy-redirect-from", "http://a/")]).expect_err("no to");
        assert!(
            e.key.ends_with("proxy-redirect-from") && e.value == "http://a/",
            "{e}"
        );
        assert_rejects("proxy-redirect-from", &["default", "http://a b/"]);
    }

    #[test]
    fn ssl_redirect_flags() {
        assert!(ok("ssl-redirect", "true").policy.ssl_redirect);
        assert!(!ok("ssl-redirect", "false").policy.ssl_redirect);
        assert!(ok("force-ssl-redirect", "true").policy.force_ssl_redirect);
        assert!(!nginx(&[]).expect("empty").policy.force_ssl_redirect);
        assert_rejects("ssl-redirect", &["yes", "maybe"]);
        assert_rejects("force-ssl-redirect", &["on"]);
        assert!(
            ok("preserve-trailing-slash", "true")
                .policy
                .preserve_trailing_slash
        );
        assert!(
            ok("use-port-in-redirects", "true")
                .policy
                .use_port_in_redirects
        );
        let none = nginx(&[]).expect("empty").policy;
        assert!(!none.preserve_trailing_slash && !none.use_port_in_redirects);
        assert_rejects("preserve-trailing-slash", &["yes"]);
    }

    #[test]
    fn app_root() {
        assert_eq!(
            ok("app-root", "/app1").policy.app_root.as_deref(),
            Some("/app1")
        );
        assert_rejects(
            "app-root",
            &[
                "app1",
                "//evil.example",
                "/\\evil.example",
                "/a b",
                "http://x/",
            ],
        );
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
            &[
                "ftp://x/",
                "no-scheme",
                "https://a b",
                "//host/x",
                "/\\host/x",
            ],
        );
        assert_rejects("temporal-redirect", &["javascript:alert(1)"]);
        assert_rejects("permanent-redirect-code", &["200", "404", "x", "-301"]);
        assert_rejects("temporal-redirect-code", &["309"]);
    }
}
