//! Redirects answered by the proxy: `ssl-redirect` / `force-ssl-redirect` (308 to https),
//! `permanent-redirect` / `temporal-redirect`, and `app-root` (302 from `/`).
use http::{Response, StatusCode, Uri};

use crate::{
    proxy::{body::ResponseBody, errors},
    snapshot::RoutePolicy,
};

/// 308 to https for a plain-HTTP request when the route asks for it.
pub fn ssl_redirect(
    policy: &RoutePolicy,
    host_tls: bool,
    host: &str,
    uri: &Uri,
    https_port: u16,
) -> Option<Response<ResponseBody>> {
    if !(policy.force_ssl_redirect || (policy.ssl_redirect && host_tls)) {
        return None;
    }
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let location = if https_port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{https_port}{pq}")
    };
    Some(errors::redirect(StatusCode::PERMANENT_REDIRECT, &location))
}

/// The fixed redirect of the route, if any.
pub fn fixed(policy: &RoutePolicy) -> Option<Response<ResponseBody>> {
    let r = policy.redirect.as_ref()?;
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| s.is_redirection())?;
    Some(errors::redirect(status, &r.location))
}

/// 302 from `/` to the app root.
pub fn app_root(policy: &RoutePolicy, path: &str) -> Option<Response<ResponseBody>> {
    let root = policy.app_root.as_deref()?;
    (path == "/" && root != "/").then(|| errors::redirect(StatusCode::FOUND, root))
}
