//! `enable-cors`: preflight `OPTIONS` answered 204 by the proxy; other responses get the
//! `Access-Control-Allow-*` headers when the `Origin` is allowed.
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::{proxy::body::ResponseBody, snapshot::Cors};

/// The `Access-Control-Allow-Origin` value for the request's `Origin`, if allowed.
fn allowed_origin(cors: &Cors, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    if cors.allow_origins.iter().any(|o| o == "*") {
        // A wildcard cannot be combined with credentials: echo the origin then.
        return match (cors.allow_credentials, origin) {
            (true, Some(o)) => Some(o.clone()),
            _ => Some(HeaderValue::from_static("*")),
        };
    }
    let origin = origin?;
    cors.allow_origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
        .then(|| origin.clone())
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
        assert_eq!(
            allowed_origin(&cors(&["*"], true), req),
            Some(origin.clone())
        );
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
}
