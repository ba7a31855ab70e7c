//! `enable-cors` and `cors-allow-origin`, `-methods`, `-headers`, `-credentials`,
//! `-expose-headers`, `cors-max-age`, with ingress-nginx's defaults. Read only with
//! `enable-cors: "true"`.
use super::{AnnotationError, Annotations, Reader};
use crate::snapshot::Cors;

/// ingress-nginx default for `cors-allow-methods`.
pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// ingress-nginx default for `cors-allow-headers`.
pub const DEFAULT_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
/// ingress-nginx default for `cors-max-age` (20 days).
pub const DEFAULT_MAX_AGE: u64 = 1_728_000;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if r.flag("enable-cors")? != Some(true) {
        return Ok(());
    }
    let allow_origins = r
        .get("cors-allow-origin", parse_origins)?
        .unwrap_or_else(|| vec!["*".into()]);
    let allow_methods = r
        .get("cors-allow-methods", |v| {
            list_of(v, false, |s| s.bytes().all(|b| b.is_ascii_alphabetic()))
        })?
        .unwrap_or_else(|| DEFAULT_METHODS.into());
    let allow_headers = r
        .get("cors-allow-headers", |v| list_of(v, false, header_name))?
        .unwrap_or_else(|| DEFAULT_HEADERS.into());
    let expose_headers = r
        .get("cors-expose-headers", |v| list_of(v, true, header_name))?
        .unwrap_or_default();
    let allow_credentials = r.flag("cors-allow-credentials")?.unwrap_or(true);
    let max_age = r
        .get("cors-max-age", |v| {
            v.parse::<u64>()
                .map_err(|_| "expected a number of seconds".to_string())
        })?
        .unwrap_or(DEFAULT_MAX_AGE);
    a.policy.cors = Some(Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials,
        max_age,
    });
    Ok(())
}

fn header_name(s: &str) -> bool {
    s == "*"
        || (!s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// A comma-separated list whose items all satisfy `item`; returned normalised as `a, b`.
fn list_of(v: &str, allow_empty: bool, item: impl Fn(&str) -> bool) -> Result<String, String> {
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() && !allow_empty {
        return Err("must not be empty".into());
    }
    match items.iter().find(|s| !item(s)) {
        Some(bad) => Err(format!("invalid item {bad:?}")),
        None => Ok(items.join(", ")),
    }
}

/// `*`, or origins `scheme://host[:port]` where host may start with `*.`, or `null`: as
/// ingress-nginx, any lower-case scheme (`capacitor://localhost` of a mobile app), and `null`
/// for the origin of a sandboxed page or a file.
fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if origins.is_empty() {
        return Err("must not be empty".into());
    }
    for o in &origins {
        if o == "*" || o == "null" {
            continue;
        }
        let rest = o
            .split_once("://")
            .filter(|(scheme, _)| {
                !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_lowercase())
            })
            .map(|(_, rest)| rest)
            .ok_or_else(|| {
                format!("{o:?} must be *, null, or start with a lower-case scheme and ://")
            })?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let host = host.strip_prefix("*.").unwrap_or(host);
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
        if !host_ok || !port_ok {
            return Err(format!("{o:?} is not an origin"));
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn cors_defaults() {
        assert_eq!(ok("enable-cors", "false").policy.cors, None);
        assert_eq!(ok("cors-allow-origin", "junk").policy.cors, None);
        assert_eq!(
            ok("enable-cors", "true").policy.cors,
            Some(Cors {
                allow_origins: vec!["*".into()],
                allow_methods: DEFAULT_METHODS.into(),
                allow_headers: DEFAULT_HEADERS.into(),
                expose_headers: String::new(),
                allow_credentials: true,
                max_age: DEFAULT_MAX_AGE,
            })
        );
    }

    #[test]
    fn cors_overrides() {
        let a = nginx(&[
            ("enable-cors", "true"),
            (
                "cors-allow-origin",
                "https://a.example.com, http://*.b.example:8080, capacitor://localhost, null",
            ),
            ("cors-allow-methods", "GET,POST"),
            ("cors-allow-headers", "X-Custom, Content-Type"),
            ("cors-expose-headers", "X-Total"),
            ("cors-allow-credentials", "false"),
            ("cors-max-age", "600"),
        ])
        .expect("valid");
        assert_eq!(
            a.policy.cors,
            Some(Cors {
                allow_origins: vec![
                    "https://a.example.com".into(),
                    "http://*.b.example:8080".into(),
                    "capacitor://localhost".into(),
                    "null".into(),
                ],
                allow_methods: "GET, POST".into(),
                allow_headers: "X-Custom, Content-Type".into(),
                expose_headers: "X-Total".into(),
                allow_credentials: false,
                max_age: 600,
            })
        );
    }

    #[test]
    fn cors_invalid_values() {
        for (name, bad) in [
            ("enable-cors", "please"),
            ("cors-allow-origin", "example.com"),
            ("cors-allow-origin", "HTTPS://a.example.com"),
            ("cors-allow-origin", "://a.example.com"),
            ("cors-allow-origin", "nil"),
            ("cors-allow-origin", "https://a.example.com/path"),
            ("cors-allow-origin", "https://a:99999"),
            ("cors-allow-methods", "GET;DROP"),
            ("cors-allow-methods", ""),
            ("cors-allow-headers", "X-A\r\nSet-Cookie: x"),
            ("cors-expose-headers", "a b"),
            ("cors-allow-credentials", "maybe"),
            ("cors-max-age", "-1"),
        ] {
            let mut pairs = vec![(name, bad)];
            if name != "enable-cors" {
                pairs.push(("enable-cors", "true"));
            }
            let e = nginx(&pairs).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }
}
