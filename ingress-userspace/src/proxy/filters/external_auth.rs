//! `auth-url`: an external service (oauth2-proxy and the like) decides whether a request may
//! pass, as ingress-nginx's `auth_request` does. The service gets the request's headers and
//! `X-Original-URL` / `X-Original-Method`, without the body; 2xx lets the request through
//! (with the `auth-response-headers` of its answer), 401 becomes a redirect to `auth-signin`
//! or a 401, 403 a 403, and anything else (including no answer in time) a 500.
//!
//! One connection per check, as nginx's `auth_request` makes by default; over `https://` the
//! service's certificate is not verified, as nginx's `proxy_ssl_verify` is off by default
//! and as for HTTPS upstreams.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use http_body_util::Empty;
use hyper::body::Incoming;
use rustls::ClientConfig;

use super::super::{body::ResponseBody, errors, headers, outbound::Original};
use crate::snapshot::ExternalAuth;

/// How long the auth service has to answer, connection included.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reaches auth services over HTTP/1.1, plain or TLS, and keeps their answers where
/// `auth-cache-key` asks.
#[derive(Debug, Clone)]
pub struct AuthClient {
    tls: Arc<ClientConfig>,
    cache: Arc<AnswerCache>,
}

/// What an auth service said, as much as deciding needs: its status and the headers the
/// decision uses (`auth-response-headers`, `WWW-Authenticate`).
#[derive(Clone, Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
}

/// (route scope, `auth-cache-key` value).
type CacheKey = (u64, Vec<u8>);

/// Kept answers with the time they expire, at most `CACHE_ENTRIES`.
#[derive(Debug, Default)]
struct AnswerCache {
    entries: Mutex<HashMap<CacheKey, (Answer, Instant)>>,
}

/// Bound on kept answers; past it, expired ones go, then the half nearest expiry.
const CACHE_ENTRIES: usize = 10_000;

impl AnswerCache {
    fn get(&self, key: &CacheKey, now: Instant) -> Option<Answer> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, until)| *until > now)
            .map(|(a, _)| a.clone())
    }

    fn put(&self, key: CacheKey, answer: Answer, until: Instant, now: Instant) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_ENTRIES && !map.contains_key(&key) {
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= CACHE_ENTRIES {
                let mut ends: Vec<Instant> = map.values().map(|(_, u)| *u).collect();
                ends.sort_unstable();
                let cutoff = ends[ends.len() / 2];
                map.retain(|_, (_, u)| *u > cutoff);
            }
        }
        map.insert(key, (answer, until));
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl AuthClient {
    /// A client using `tls` (offering `http/1.1`) for `https://` services.
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        AuthClient {
            tls,
            cache: Arc::default(),
        }
    }

    /// Answers kept (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Sends `req` (absolute URI) on a new connection and returns the answer's head.
    /// The request carries no Host ([`subrequest`] leaves the client's out): the service's
    /// own name goes.
    async fn exchange(&self, req: Request<Empty<Bytes>>) -> Result<Response<Incoming>, String> {
        super::super::outbound::exchange(&self.tls, req).await
    }
}

/// What the auth service said.
pub enum Verdict {
    /// Pass, with these headers of its answer set on the request going upstream, and its
    /// `Set-Cookie`s for the answer to the client (see [`add_cookies`]).
    Allow {
        pass: Vec<(HeaderName, HeaderValue)>,
        cookies: Vec<HeaderValue>,
    },
    /// Answer the client with this instead.
    Respond(Box<http::Response<ResponseBody>>),
}

/// Asks the auth service of `cfg` about `req`, or takes its kept answer for the same
/// `auth-cache-key` value within `scope` (the route; given when `cfg` keeps answers).
pub async fn check(
    client: &AuthClient,
    cfg: &ExternalAuth,
    req: &Original<'_>,
    scope: Option<u64>,
) -> Verdict {
    if cfg.denied {
        return Verdict::Respond(Box::new(errors::status_response(
            StatusCode::SERVICE_UNAVAILABLE,
        )));
    }
    let now = Instant::now();
    let cache_key = cfg.cache.as_ref().zip(scope).map(|(c, scope)| {
        let value = super::hash::key_bytes(&c.key, req.uri, req.headers, req.client, req.tls);
        (scope, value)
    });
    if let Some(answer) = cache_key.as_ref().and_then(|k| client.cache.get(k, now)) {
        return decide(cfg, req, &answer);
    }
    let asked = async {
        let sub = subrequest(cfg, req).map_err(|e| format!("request not built: {e}"))?;
        tokio::time::timeout(AUTH_TIMEOUT, client.exchange(sub))
            .await
            .map_err(|_| "no answer in time".to_string())?
    };
    let answer = match asked.await {
        // The body is not needed; dropping the answer closes the connection.
        Ok(a) => Answer {
            status: a.status(),
            headers: kept_headers(cfg, a.headers()),
        },
        Err(e) => {
            tracing::warn!(url = %cfg.url, error = %e, "auth-url check failed");
            return Verdict::Respond(Box::new(errors::status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
            )));
        }
    };
    if let (Some(spec), Some(key)) = (&cfg.cache, cache_key) {
        let code = answer.status.as_u16();
        let ttl = spec
            .valid
            .iter()
            .find(|(c, _)| c.is_none_or(|c| c == code))
            .map(|(_, ttl)| *ttl);
        if let Some(ttl) = ttl {
            client.cache.put(key, answer.clone(), now + ttl, now);
        }
    }
    decide(cfg, req, &answer)
}

/// The headers of an answer a decision can use.
fn kept_headers(cfg: &ExternalAuth, head: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in cfg
        .response_headers
        .iter()
        .map(String::as_str)
        .chain(["www-authenticate", "set-cookie"])
    {
        for v in head.get_all(name) {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                out.append(n, v.clone());
            }
        }
    }
    out
}

/// The verdict on an answer of the auth service.
fn decide(cfg: &ExternalAuth, req: &Original<'_>, answer: &Answer) -> Verdict {
    let status = answer.status;
    let head = &answer.headers;
    if status.is_success() {
        let pass = cfg
            .response_headers
            .iter()
            .filter_map(|name| {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                let v = head.get(&name)?.clone();
                Some((name, v))
            })
            .collect();
        let cookies = head.get_all(header::SET_COOKIE).iter().cloned().collect();
        return Verdict::Allow { pass, cookies };
    }
    let response = match status {
        StatusCode::UNAUTHORIZED => match &cfg.signin {
            Some(signin) => signin_redirect(&req.expand(signin), &cfg.redirect_param, req),
            None => {
                let mut r = errors::status_response(StatusCode::UNAUTHORIZED);
                if let Some(v) = head.get(header::WWW_AUTHENTICATE) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v.clone());
                }
                r
            }
        },
        StatusCode::FORBIDDEN => errors::status_response(StatusCode::FORBIDDEN),
        other => {
            tracing::warn!(url = %cfg.url, status = other.as_u16(), "auth-url service answered neither 2xx, 401 nor 403");
            errors::status_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    Verdict::Respond(Box::new(response))
}

/// Adds the auth service's `Set-Cookie`s to the answer to the client: on 2xx and redirects,
/// or on every answer with `auth-always-set-cookie` (nginx's `add_header` without and with
/// `always`).
pub fn add_cookies(
    headers: &mut HeaderMap,
    cfg: &ExternalAuth,
    status: StatusCode,
    cookies: Vec<HeaderValue>,
) {
    let added_by_default = matches!(
        status.as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    );
    if cfg.always_set_cookie || added_by_default {
        for c in cookies {
            headers.append(header::SET_COOKIE, c);
        }
    }
}

/// Sets the auth service's `auth-response-headers` on the request going upstream. Each one
/// the service did not send is removed, so a client cannot supply it (nginx's
/// `proxy_set_header` of an empty value does the same).
pub fn set_response_headers(
    headers: &mut HeaderMap,
    cfg: &ExternalAuth,
    pass: Vec<(HeaderName, HeaderValue)>,
) {
    for name in &cfg.response_headers {
        headers.remove(name.as_str());
    }
    for (name, value) in pass {
        headers.insert(name, value);
    }
}

/// The auth request: the client's headers (hop-by-hop and body framing left out), who asked
/// for what, and no body.
fn subrequest(cfg: &ExternalAuth, req: &Original<'_>) -> Result<Request<Empty<Bytes>>, String> {
    let uri: Uri = req
        .expand(&cfg.url)
        .parse()
        .map_err(|e| format!("bad URL: {e}"))?;
    let method = Method::from_bytes(cfg.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut h = req.headers.clone();
    headers::remove_hop_by_hop(&mut h, false);
    for gone in [header::HOST, header::CONTENT_LENGTH, header::EXPECT] {
        h.remove(gone);
    }
    let original_url = req.url();
    let redirect = cfg.request_redirect.as_ref().map(|t| req.expand(t));
    let pairs = [
        ("x-original-url", original_url.as_str()),
        ("x-original-method", req.method.as_str()),
        (
            "x-auth-request-redirect",
            redirect.as_deref().unwrap_or(req.request_uri()),
        ),
        ("x-forwarded-host", req.host),
        ("x-forwarded-proto", req.scheme()),
    ];
    for (name, value) in pairs {
        let v = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        h.insert(HeaderName::from_static(name), v);
    }
    let client =
        HeaderValue::from_str(&req.client.to_canonical().to_string()).map_err(|e| e.to_string())?;
    h.insert(headers::X_REAL_IP.clone(), client.clone());
    h.insert(headers::X_FORWARDED_FOR.clone(), client);
    // `auth-proxy-set-headers` last, over the ones above, as its `proxy_set_header` lines
    // follow them in ingress-nginx's auth location.
    for (name, value) in &cfg.proxy_set_headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        if value.is_empty() {
            h.remove(&name);
        } else {
            h.insert(
                name,
                HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            );
        }
    }
    let mut sub = Request::new(Empty::new());
    *sub.method_mut() = method;
    *sub.uri_mut() = uri;
    *sub.headers_mut() = h;
    Ok(sub)
}

/// 302 to the sign-in page, with the page to come back to in `param` unless the sign-in URL
/// already names it (as ingress-nginx builds it).
fn signin_redirect(signin: &str, param: &str, req: &Original<'_>) -> http::Response<ResponseBody> {
    let has_param = signin
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some(param)));
    let location = if has_param {
        signin.to_string()
    } else {
        let sep = if signin.contains('?') { '&' } else { '?' };
        format!("{signin}{sep}{param}={}", escape(&req.url()))
    };
    errors::redirect(StatusCode::FOUND, &location)
}

/// Percent-encodes everything but unreserved characters (RFC 3986), as a query value.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Original<'a> {
        Original {
            method: &Method::POST,
            uri,
            headers,
            host: "app.example",
            tls: true,
            client: "192.0.2.9".parse().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    #[test]
    fn variables_are_expanded_and_the_signin_gets_its_rd() {
        let uri: Uri = "/a b?x=1"
            .replace(' ', "%20")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let h = HeaderMap::new();
        let o = original(&uri, &h);
        assert_eq!(
            o.expand("https://$host/oauth2/start?rd=$escaped_request_uri"),
            "https://app.example/oauth2/start?rd=%2Fa%2520b%3Fx%3D1"
        );
        let r = signin_redirect("https://auth.example/start", "rd", &o);
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://auth.example/start?rd=https%3A%2F%2Fapp.example%2Fa%2520b%3Fx%3D1"
        );
        // A sign-in URL that already says where to come back to is left as it is.
        let r = signin_redirect("https://auth.example/start?rd=/home", "rd", &o);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://auth.example/start?rd=/home"
        );
    }

    #[test]
    fn the_subrequest_carries_the_original_request_without_its_body() {
        let uri: Uri = "/p?q=1".parse().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("_oauth2_proxy=abc"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::HOST, HeaderValue::from_static("app.example"));
        let o = original(&uri, &h);
        let cfg = ExternalAuth {
            url: "http://auth.internal:4180/oauth2/auth".into(),
            method: "GET".into(),
            signin: None,
            redirect_param: "rd".into(),
            response_headers: vec![],
            cache: None,
            request_redirect: None,
            always_set_cookie: false,
            global: false,
            proxy_set_headers: Vec::new(),
            denied: false,
        };
        let sub = subrequest(&cfg, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sub.method(), Method::GET);
        assert_eq!(sub.uri(), "http://auth.internal:4180/oauth2/auth");
        let sh = sub.headers();
        assert_eq!(sh[header::COOKIE], "_oauth2_proxy=abc");
        assert_eq!(sh["x-original-url"], "https://app.example/p?q=1");
        assert_eq!(sh["x-original-method"], "POST");
        assert_eq!(sh["x-forwarded-for"], "192.0.2.9");
        for gone in [header::CONTENT_LENGTH, header::CONNECTION, header::HOST] {
            assert!(!sh.contains_key(&gone), "{gone}");
        }
        assert_eq!(sh["x-auth-request-redirect"], "/p?q=1");
        let cfg = ExternalAuth {
            request_redirect: Some("https://$host/back?to=$escaped_request_uri".into()),
            ..cfg
        };
        let sub = subrequest(&cfg, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sub.headers()["x-auth-request-redirect"],
            "https://app.example/back?to=%2Fp%3Fq%3D1"
        );
        // `auth-proxy-set-headers` go last: added, replacing, or (empty) removing.
        let cfg = ExternalAuth {
            proxy_set_headers: vec![
                ("x-auth-tenant".into(), "blue".into()),
                ("x-original-method".into(), "GET".into()),
                ("cookie".into(), String::new()),
            ],
            ..cfg
        };
        let sub = subrequest(&cfg, &o).unwrap_or_else(|e| panic!("{e}"));
        let sh = sub.headers();
        assert_eq!(sh["x-auth-tenant"], "blue");
        assert_eq!(sh["x-original-method"], "GET");
        assert!(!sh.contains_key(header::COOKIE));
    }

    #[test]
    fn kept_answers_are_bounded_and_expire() {
        let cache = AnswerCache::default();
        let now = Instant::now();
        let answer = Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        };
        for i in 0..(CACHE_ENTRIES as u64 + 10) {
            let until = now + Duration::from_secs(60 + i);
            cache.put((i, b"k".to_vec()), answer.clone(), until, now);
        }
        assert!(cache.len() <= CACHE_ENTRIES, "{}", cache.len());
        // The latest stays; an expired one is not served.
        let last = (CACHE_ENTRIES as u64 + 9, b"k".to_vec());
        assert!(cache.get(&last, now).is_some());
        assert!(cache
            .get(&last, now + Duration::from_secs(100_000))
            .is_none());
    }
}
