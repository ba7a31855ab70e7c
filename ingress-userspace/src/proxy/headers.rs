//! Header handling on the way through: hop-by-hop removal (RFC 9110 §7.6.1), the
//! `X-Forwarded-*` / `X-Scheme` / `X-Real-IP` / `X-Request-ID` set, and request ids.
use std::net::IpAddr;

use http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue,
};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Scheme` (ingress-nginx sends it, equal to `X-Forwarded-Proto`).
pub static X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
/// `X-Scheme` (ingress-nginx sends it, equal to `X-Forwarded-Proto`).
pub static X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
/// `X-Original-Forwarded-For`: the `X-Forwarded-For` the client sent, as ingress-nginx keeps it.
pub static X_ORIGINAL_FORWARDED_FOR: HeaderName =
    HeaderName::from_static("x-original-forwarded-for");
/// `X-Forwarded-Prefix` (the `x-forwarded-prefix` annotation).
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY: HeaderName = HeaderName::from_static("proxy");

/// The items of a comma-separated header, every field of that name, trimmed (empty ones
/// included); values that are not text are skipped.
pub fn list_items(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The `Content-Length` a message declares, when it is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Drops request headers whose names contain `_`, as nginx does by default
/// (`underscores_in_headers off`, ingress-nginx `enable-underscores-in-headers: false`): CGI,
/// WSGI and PHP servers read `X_Forwarded_For` as `X-Forwarded-For`, so a client could pass
/// forged forwarding headers beside the ones the proxy sets.
pub fn drop_underscored(headers: &mut HeaderMap) {
    remove_where(headers, |name| name.contains('_'));
}

/// Removes the upstream response headers nginx never passes on (its `proxy_hide_header`
/// defaults): `X-Accel-*`, which nginx acts on and an application may fill with internal paths,
/// `X-Pad`, and `Server` unless `server` (ingress-nginx `allow-backend-server-header`), so the
/// upstream's software and version stay private; and `Date`, which the server writes afresh
/// from this node's clock, as nginx does (a pod's clock may be off).
pub fn hide_upstream_private(headers: &mut HeaderMap, server: bool) {
    headers.remove(http::header::DATE);
    remove_where(headers, |name| {
        name.starts_with("x-accel-") || name == "x-pad" || (!server && name == "server")
    });
}

/// Removes every header whose name satisfies `pred`; allocates only when one does.
fn remove_where(headers: &mut HeaderMap, pred: impl Fn(&str) -> bool) {
    if !headers.keys().any(|k| pred(k.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| pred(k.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers: those listed in `Connection`, `Connection` itself,
/// `Keep-Alive`, `Proxy-*`, `TE` (except a `trailers` request), `Trailer`,
/// `Transfer-Encoding`, and `Upgrade` unless the exchange is an upgrade (then `Connection:
/// upgrade` is set afresh for the next hop).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = list_items(headers, header::CONNECTION)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| !(upgrading && n == header::UPGRADE))
            .collect();
        for name in listed {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(header::TRAILER);
    // With both, the body was framed by Transfer-Encoding; a Content-Length passed on would
    // describe a different body to the next hop (RFC 9112 §6.3 says remove it).
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    } else {
        single_content_length(headers);
    }
    headers.remove(header::TRANSFER_ENCODING);
    if upgrading {
        // The next hop must see the upgrade request (or acceptance) too.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    if let Some(te) = headers.remove(header::TE) {
        let trailers = te.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::PROXY_AUTHENTICATE);
    remove_where(headers, |name| name.starts_with("proxy-"));
}

/// Folds a repeated `Content-Length` (`2` twice, or `2, 2`) into one field. hyper's parsers
/// accept the repeats when every value is the same (RFC 9110 §8.6) and keep them as sent,
/// but an HTTP/2 peer refuses a message with more than one value.
fn single_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let mut lengths = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|v| v.trim_ascii());
    let Some(length) = lengths.next().map(<[u8]>::to_vec) else {
        return;
    };
    // Differing values never get here (hyper refuses the message); leave them if they did.
    if lengths.all(|v| v == length.as_slice()) {
        if let Ok(v) = HeaderValue::from_bytes(&length) {
            headers.insert(header::CONTENT_LENGTH, v);
        }
    }
}

/// Joins several `Cookie` lines into one, `; `-separated: HTTP/2 clients send one line per
/// cookie (RFC 9113 §8.2.3), and an HTTP/1.1 upstream expects a single header.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(header::COOKIE).iter();
    if lines.next().is_none() || lines.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Values of the forwarded headers: computed once per connection, and per request only when
/// a trusted peer's forwarding headers change them ([`super::real_ip::RealIp::from_headers`]).
#[derive(Clone, Debug)]
pub struct ForwardedValues {
    /// The client's address (canonical form): for source ranges, rate limits and the log.
    pub client_ip: IpAddr,
    /// The client address as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub client: HeaderValue,
    /// The address the connection came from (the PROXY header's source, if any), appended to
    /// an incoming `X-Forwarded-For` with `append_xff`.
    pub hop: HeaderValue,
    /// `http` or `https` (or what a trusted peer's `X-Forwarded-Proto` says).
    pub proto: HeaderValue,
    /// Whether the client used HTTPS: decides `ssl-redirect` and the scheme of redirects.
    pub https: bool,
    /// Port the client connected to.
    pub port: HeaderValue,
    /// The first `X-Forwarded-Host` entry from a trusted peer: the upstream's `Host`, the
    /// `X-Forwarded-Host` passed on and the host of `ssl-redirect`'s Location, as
    /// ingress-nginx's `$best_http_host` (routing still uses the request's own host).
    pub host: Option<HeaderValue>,
    /// Append the client to an incoming `X-Forwarded-For` instead of replacing it.
    pub append_xff: bool,
    /// The connection's peer may set the forwarding headers (`proxy-real-ip-cidr`).
    pub trusted_peer: bool,
}

impl ForwardedValues {
    /// Values for a client at `client` connected to `port`, over TLS or not; `append_xff` as
    /// ingress-nginx's `compute-full-forwarded-for`.
    pub fn new(client: IpAddr, port: u16, tls: bool, append_xff: bool) -> Self {
        let client = client.to_canonical();
        let value = ip_value(client);
        ForwardedValues {
            client_ip: client,
            hop: value.clone(),
            client: value,
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            https: tls,
            port: HeaderValue::from(port),
            host: None,
            append_xff,
            trusted_peer: false,
        }
    }

    /// Whether the connection's peer may set the forwarding headers.
    pub fn with_trust(mut self, trusted: bool) -> Self {
        self.trusted_peer = trusted;
        self
    }

    /// The client is `ip` (named by a trusted peer); the hop stays the connection's.
    pub fn set_client(&mut self, ip: IpAddr) {
        self.client_ip = ip.to_canonical();
        self.client = ip_value(self.client_ip);
    }
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("0.0.0.0"))
}

/// Sets the forwarding headers on a request going upstream. `X-Forwarded-For` is the client
/// address alone unless `append_xff`: a client can write anything into the header it sends,
/// so by default (as ingress-nginx) nothing of it reaches an upstream that trusts the first
/// entry. Appending is for a proxy chain whose front hop is trusted.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    fwd: &ForwardedValues,
    host: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    let original = incoming_xff(headers);
    let xff = match &original {
        Some(prev) if fwd.append_xff => {
            let mut v = Vec::with_capacity(prev.len() + 2 + fwd.hop.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(fwd.hop.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| fwd.hop.clone())
        }
        _ => fwd.client.clone(),
    };
    // Upstreams written for ingress-nginx may read the client's own chain from here even
    // when `X-Forwarded-For` is replaced.
    if let Some(prev) = original {
        headers.insert(X_ORIGINAL_FORWARDED_FOR.clone(), prev);
    }
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), fwd.client.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), fwd.proto.clone());
    headers.insert(X_FORWARDED_SCHEME.clone(), fwd.proto.clone());
    headers.insert(X_SCHEME.clone(), fwd.proto.clone());
    headers.insert(X_FORWARDED_PORT.clone(), fwd.port.clone());
    if let Some(h) = fwd.host.as_ref().or(host) {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
    if request_id.is_empty() {
        headers.remove(&X_REQUEST_ID);
    } else {
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    }
    // httpoxy (CVE-2016-5385): a CGI-style upstream exposes `Proxy` as `HTTP_PROXY`, which
    // its HTTP clients then use as their proxy. ingress-nginx clears it the same way.
    headers.remove(&PROXY);
}

/// The `X-Forwarded-For` the client sent, its lines joined in order (a list header may be
/// split over lines); `None` when absent or empty.
fn incoming_xff(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut lines = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter(|v| !v.is_empty());
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(first.clone());
    };
    let mut v = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        v.extend_from_slice(b", ");
        v.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&v).ok()
}

/// The request's id: a sane client-supplied `X-Request-ID`, else 32 random hex digits, or
/// empty (no id) unless `generate`.
pub fn request_id(headers: &HeaderMap, generate: bool) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let ok =
            !v.is_empty() && v.len() <= 200 && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    if !generate {
        return HeaderValue::from_static("");
    }
    let n: u128 = rand::random();
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (31 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "x"),
            ("proxy-foo", "x"),
            ("te", "gzip, trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "1"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["te", "x-keep"], "{names:?}");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn repeated_content_length_is_folded() {
        for pairs in [
            &[("content-length", "2"), ("content-length", "2")][..],
            &[("content-length", "2, 2")],
            &[("content-length", "2,2"), ("content-length", " 2")],
        ] {
            let mut h = map(pairs);
            remove_hop_by_hop(&mut h, false);
            let all: Vec<_> = h.get_all("content-length").iter().collect();
            assert_eq!(all, ["2"], "{pairs:?}");
        }
        let mut h = map(&[("content-length", "2"), ("content-length", "3")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(
            h.get_all("content-length").iter().count(),
            2,
            "left as it was"
        );
    }

    #[test]
    fn upgrade_kept_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ]);
        assert!(wants_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert!(h.contains_key("upgrade"));
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn forwarded_replaces_or_appends_and_sets() {
        let incoming = || {
            map(&[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
                ("x-real-ip", "6.6.6.6"),
                ("proxy", "http://attacker.example:8080"),
            ])
        };
        let client = "::ffff:192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}"));
        let id = HeaderValue::from_static("abc");
        let host = HeaderValue::from_static("a.example");

        let mut h = incoming();
        set_forwarded(
            &mut h,
            &ForwardedValues::new(client, 443, true, false),
            Some(&host),
            &id,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-scheme"], "https");
        assert_eq!(h["x-scheme"], "https");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-request-id"], "abc");
        assert!(!h.contains_key("proxy"), "httpoxy");
        // What the client sent stays readable, joined into one line.
        assert_eq!(h.get_all("x-original-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-original-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 10.0.0.3"
        );

        // Nothing sent, nothing claimed.
        let mut h = map(&[("x-forwarded-for", "")]);
        set_forwarded(
            &mut h,
            &ForwardedValues::new(client, 80, false, true),
            None,
            &id,
        );
        assert!(!h.contains_key("x-original-forwarded-for"));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-scheme"], "http");

        let mut h = incoming();
        set_forwarded(
            &mut h,
            &ForwardedValues::new(client, 443, true, true),
            Some(&host),
            &id,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"
        );
    }

    #[test]
    fn cookies_are_joined_and_conflicting_lengths_dropped() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
        let mut one = map(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1; b=2");

        let mut r = map(&[("content-length", "100"), ("transfer-encoding", "chunked")]);
        remove_hop_by_hop(&mut r, false);
        assert!(r.is_empty(), "{r:?}");
        let mut r = map(&[("content-length", "100")]);
        remove_hop_by_hop(&mut r, false);
        assert_eq!(r["content-length"], "100");
    }

    #[test]
    fn request_ids() {
        let a = request_id(&HeaderMap::new(), true);
        assert_eq!(a.len(), 32);
        assert_ne!(a, request_id(&HeaderMap::new(), true));
        let h = map(&[("x-request-id", "given-1")]);
        assert_eq!(request_id(&h, true), "given-1");
        assert_eq!(request_id(&h, false), "given-1");
        let h = map(&[("x-request-id", "has space")]);
        assert_eq!(request_id(&h, true).len(), 32);
        assert!(request_id(&HeaderMap::new(), false).is_empty());
    }

    #[test]
    fn underscored_request_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-real_ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        drop_underscored(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "x-forwarded-for"]);
    }

    #[test]
    fn upstream_private_headers_are_hidden_as_nginx_does() {
        let answer = || {
            let mut h = HeaderMap::new();
            for (k, v) in [
                ("server", "gunicorn/20.1.0"),
                ("x-accel-redirect", "/protected/file"),
                ("x-accel-buffering", "no"),
                ("x-pad", "avoid browser bug"),
                ("x-accelerated", "kept"),
                ("content-type", "text/plain"),
            ] {
                h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h
        };
        let names = |h: &HeaderMap| {
            let mut n: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            n.sort_unstable();
            n
        };
        let mut h = answer();
        hide_upstream_private(&mut h, false);
        assert_eq!(names(&h), ["content-type", "x-accelerated"]);
        let mut h = answer();
        hide_upstream_private(&mut h, true);
        assert_eq!(names(&h), ["content-type", "server", "x-accelerated"]);
    }
}
