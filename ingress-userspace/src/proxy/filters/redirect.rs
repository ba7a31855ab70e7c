//! Redirects answered by the proxy: `ssl-redirect` / `force-ssl-redirect` (308 to https),
//! `permanent-redirect` / `temporal-redirect`, and `app-root` (302 from `/`).
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};

use crate::{
    proxy::{body::ResponseBody, errors},
    snapshot::RoutePolicy,
};

/// `proxy-redirect-from` / `-to`: the upstream's `Location`, and the URL of its `Refresh`,
/// get prefix `from` replaced by `to`, as nginx's `proxy_redirect from to`.
pub fn rewrite_upstream_redirects(headers: &mut HeaderMap, from: &str, to: &str) {
    if let Some(v) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        if let Some(rest) = v.strip_prefix(from) {
            if let Ok(new) = HeaderValue::from_str(&format!("{to}{rest}")) {
                headers.insert(header::LOCATION, new);
            }
        }
    }
    let refresh = HeaderName::from_static("refresh");
    if let Some(v) = headers.get(&refresh).and_then(|v| v.to_str().ok()) {
        // `5; url=http://...`: only the URL part is a redirect.
        let url_at = v.to_ascii_lowercase().find("url=").map(|i| i + 4);
        if let Some(at) = url_at {
            if let Some(rest) = v[at..].strip_prefix(from) {
                let new = format!("{}{to}{rest}", &v[..at]);
                if let Ok(new) = HeaderValue::from_str(&new) {
                    headers.insert(refresh, new);
                }
            }
        }
    }
}

/// `status` (308 unless `http-redirect-code` says otherwise) to https for a plain-HTTP request
/// when the route asks for it. As ingress-nginx, one trailing `/` of the request URI is
/// dropped (`/` itself goes to the bare host) unless `preserve-trailing-slash`; the port is
/// named when it is not 443, or always with `use-port-in-redirects`.
pub fn ssl_redirect(
    policy: &RoutePolicy,
    host_tls: bool,
    host: &str,
    uri: &Uri,
    https_port: u16,
    status: StatusCode,
) -> Option<Response<ResponseBody>> {
    if !(policy.force_ssl_redirect || (policy.ssl_redirect && host_tls)) {
        return None;
    }
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = match pq.strip_suffix('/') {
        Some(stripped) if !policy.preserve_trailing_slash => stripped,
        _ => pq,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let location = if https_port == 443 && !policy.use_port_in_redirects {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{https_port}{pq}")
    };
    Some(errors::redirect(status, &location))
}

/// The fixed redirect of the route, if any.
pub fn fixed(policy: &RoutePolicy) -> Option<Response<ResponseBody>> {
    let r = policy.redirect.as_ref()?;
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| s.is_redirection())?;
    Some(errors::redirect(status, &r.location))
}

/// 302 from `/` to the host's app root.
pub fn app_root(root: Option<&str>, path: &str) -> Option<Response<ResponseBody>> {
    let root = root?;
    (path == "/" && root != "/").then(|| errors::redirect(StatusCode::FOUND, root))
}

/// `from-to-www-redirect`: 308 to the same scheme on host `to`, the request URI kept but for
/// one trailing `/` (as ingress-nginx's redirect server does: `/` goes to the bare host), and
/// the HTTPS port named when it is not 443.
pub fn www(to: &str, tls: bool, https_port: u16, uri: &Uri) -> Response<ResponseBody> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = target.strip_suffix('/').unwrap_or(target);
    let location = match (tls, https_port) {
        (false, _) => format!("http://{to}{target}"),
        (true, 443) => format!("https://{to}{target}"),
        (true, port) => format!("https://{to}:{port}{target}"),
    };
    errors::redirect(StatusCode::PERMANENT_REDIRECT, &location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_redirect_drops_one_trailing_slash_unless_asked() {
        let location = |policy: &RoutePolicy, uri: &str, port: u16| {
            let uri: Uri = uri.parse().unwrap_or_else(|e| panic!("{e}"));
            ssl_redirect(
                policy,
                true,
                "h.example",
                &uri,
                port,
                StatusCode::PERMANENT_REDIRECT,
            )
            .and_then(|r| r.headers().get(header::LOCATION).cloned())
            .and_then(|v| v.to_str().map(str::to_owned).ok())
        };
        let mut p = RoutePolicy::default();
        assert_eq!(
            location(&p, "/a/b/", 443).as_deref(),
            Some("https://h.example/a/b")
        );
        assert_eq!(location(&p, "/", 443).as_deref(), Some("https://h.example"));
        assert_eq!(
            location(&p, "/a/?x=1", 443).as_deref(),
            Some("https://h.example/a/?x=1"),
            "the URI ends with the query"
        );
        assert_eq!(
            location(&p, "/a", 8443).as_deref(),
            Some("https://h.example:8443/a")
        );
        p.preserve_trailing_slash = true;
        p.use_port_in_redirects = true;
        assert_eq!(
            location(&p, "/a/b/", 443).as_deref(),
            Some("https://h.example:443/a/b/")
        );
        p.ssl_redirect = false;
        assert_eq!(location(&p, "/a/b/", 443), None);
    }

    #[test]
    fn upstream_redirects_are_rewritten_by_prefix() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://internal:8080/login?x=1"),
        );
        h.insert(
            "refresh",
            HeaderValue::from_static("5; URL=http://internal:8080/done"),
        );
        rewrite_upstream_redirects(
            &mut h,
            "http://internal:8080/",
            "https://www.example.com/app/",
        );
        assert_eq!(h[header::LOCATION], "https://www.example.com/app/login?x=1");
        assert_eq!(h["refresh"], "5; URL=https://www.example.com/app/done");
        // Other prefixes are left alone.
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("https://elsewhere/"),
        );
        rewrite_upstream_redirects(&mut h, "http://internal:8080/", "/");
        assert_eq!(h[header::LOCATION], "https://elsewhere/");
    }
}
