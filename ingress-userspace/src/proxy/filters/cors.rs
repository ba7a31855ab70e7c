//! `enable-cors`: preflight `OPTIONS` answered 204 by the proxy; other responses get the
//! `Access-Control-Allow-*` headers when the `Origin` is allowed.
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::{proxy::body::ResponseBody, snapshot::Cors};

/// The `Access-Control-Allow-Origin` value for the request's `Origin`, if allowed.
fn allowed_origin(cors: &Cors, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    if cors.allow_origins.iter().any(|o| o == "*") {
        // `*` even with credentials allowed, as ingress-nginx sends it: browsers then refuse
        // credentialed requests. Echoing the origin instead would let every site read
        // answers made with the user's cookies; such sites must be listed by name.
        return Some(HeaderValue::from_static("*"));
    }
    let origin = origin?;
    let text = origin.to_str().ok()?;
    cors.allow_origins
        .iter()
        .any(|o| origin_matches(o, text))
        .then(|| origin.clone())
}

/// Whether `origin` is the allowed origin `allowed`, case-insensitively as ingress-nginx
/// compares them; `scheme://*.example.com[:port]` stands for one more DNS label before
/// `example.com`, with that scheme and port.
fn origin_matches(allowed: &str, origin: &str) -> bool {
    let Some((scheme, rest)) = allowed.split_once("://") else {
        // `null`.
        return allowed == origin;
    };
    let Some(suffix) = rest.strip_prefix("*.") else {
        return allowed.eq_ignore_ascii_case(origin);
    };
    let Some((o_scheme, o_rest)) = origin.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(o_scheme) || o_rest.len() <= suffix.len() + 1 {
        return false;
    }
    let (label, dot_suffix) = o_rest.split_at(o_rest.len() - suffix.len() - 1);
    dot_suffix.starts_with('.')
        && dot_suffix[1..].eq_ignore_ascii_case(suffix)
        && !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The preflight answer, for an `OPTIONS` request from an allowed origin.
pub fn preflight(cors: &Cors, origin: Option<&HeaderValue>) -> Option<Response<ResponseBody>> {
    let origin = allowed_origin(cors, origin)?;
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    Some(resp)
}

/// Adds the CORS headers to an upstream response.
pub fn decorate(cors: &Cors, origin: Option<&HeaderValue>, response_headers: &mut HeaderMap) {
    let Some(origin) = allowed_origin(cors, origin) else {
        return;
    };
    let specific = origin != "*";
    response_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.allow_credentials {
        response_headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cors.expose_headers) {
            response_headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
    if specific {
        response_headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], creds: bool) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: "GET, PUT".into(),
            allow_headers: "X-A".into(),
            expose_headers: "X-B".into(),
            allow_credentials: creds,
            max_age: 600,
        }
    }

    #[test]
    fn origins() {
        let origin = HeaderValue::from_static("https://a.example");
        let req = Some(&origin);
        assert_eq!(
            allowed_origin(&cors(&["*"], false), req),
            Some(HeaderValue::from_static("*"))
        );
        // Never the origin echoed: with credentials, that would open the user's session to
        // every site.
        assert_eq!(
            allowed_origin(&cors(&["*"], true), req),
            Some(HeaderValue::from_static("*"))
        );
        assert_eq!(
            allowed_origin(&cors(&["*"], true), None),
            Some(HeaderValue::from_static("*"))
        );
        let null = HeaderValue::from_static("null");
        let listed = cors(&["capacitor://localhost", "null"], true);
        assert_eq!(allowed_origin(&listed, Some(&null)), Some(null.clone()));
        let app = HeaderValue::from_static("capacitor://localhost");
        assert_eq!(allowed_origin(&listed, Some(&app)), Some(app.clone()));
        assert_eq!(allowed_origin(&listed, req), None);
        assert_eq!(
            allowed_origin(&cors(&["https://b.example"], false), req),
            None
        );
        assert_eq!(
            allowed_origin(&cors(&["https://a.example"], false), None),
            None
        );
        let p = preflight(&cors(&["https://a.example"], true), req)
            .unwrap_or_else(|| panic!("no preflight"));
        assert_eq!(p.status(), 204);
        assert_eq!(p.headers()["access-control-allow-methods"], "GET, PUT");
        assert_eq!(p.headers()["access-control-max-age"], "600");
    }

    #[test]
    fn wildcard_origins_match_one_label() {
        let allowed = "https://*.example.com";
        for (origin, want) in [
            ("https://app.example.com", true),
            ("https://APP.Example.com", true),
            ("https://a.b.example.com", false),
            ("https://example.com", false),
            ("http://app.example.com", false),
            ("https://app.example.com:8443", false),
            ("https://appexample.com", false),
            ("https://app.example.com.evil.test", false),
        ] {
            assert_eq!(origin_matches(allowed, origin), want, "{origin}");
        }
        assert!(origin_matches(
            "https://*.example.com:8443",
            "https://x.example.com:8443"
        ));
        assert!(origin_matches(
            "https://Exact.example.org",
            "https://exact.example.org"
        ));
        assert!(!origin_matches(
            "https://exact.example.org",
            "https://other.example.org"
        ));
    }
}
