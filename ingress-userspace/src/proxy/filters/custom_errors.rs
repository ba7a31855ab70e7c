//! `custom-http-errors`: which responses are intercepted, and the headers the default backend
//! gets (the ingress-nginx set: `X-Code`, `X-Format`, `X-Original-URI`, `X-Namespace`,
//! `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Request-ID`; the caller adds the
//! client's `Host`).
use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::proxy::{headers::X_REQUEST_ID, router::Target};

/// Whether an upstream status is to be replaced.
pub fn intercepts(codes: &[u16], status: u16) -> bool {
    codes.contains(&status)
}

/// Headers for the request to the default backend.
pub fn error_headers(
    code: u16,
    request_headers: &HeaderMap,
    original_uri: &str,
    target: &Target,
    request_id: &HeaderValue,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-code", &code.to_string());
    let format = request_headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/html");
    set("x-format", format);
    set("x-original-uri", original_uri);
    set("x-namespace", &target.spec.origin.namespace);
    set("x-ingress-name", &target.spec.origin.name);
    // Upstream names are `namespace/service:port`.
    let svc = target
        .primary
        .name
        .split_once('/')
        .map_or(&*target.primary.name, |(_, s)| s);
    let (svc_name, svc_port) = svc.rsplit_once(':').unwrap_or((svc, ""));
    set("x-service-name", svc_name);
    set("x-service-port", svc_port);
    if !request_id.is_empty() {
        h.insert(X_REQUEST_ID.clone(), request_id.clone());
    }
    h
}
