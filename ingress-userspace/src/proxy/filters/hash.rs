//! `upstream-hash-by`: the request's key, hashed with FNV-1a so every node (and every restart)
//! maps a key to the same endpoint.
use std::net::IpAddr;

use http::{header, HeaderMap, Uri};

use super::affinity::cookie_value;
use crate::snapshot::{HashKey, HashPart};

/// FNV-1a, 64 bits.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Folds in `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of `key` for a request. A value the request lacks (no such header, cookie or
/// query parameter) contributes nothing, as an empty nginx variable does.
pub fn key(key: &HashKey, uri: &Uri, headers: &HeaderMap, client: IpAddr, tls: bool) -> u64 {
    let mut h = Fnv::default();
    feed(key, uri, headers, client, tls, &mut |b| h.write(b));
    h.finish()
}

/// The value of `key` for a request, each part length-prefixed so that two different
/// requests never give the same bytes (`auth-cache-key`, where a clash would share an
/// authorization).
pub fn key_bytes(
    key: &HashKey,
    uri: &Uri,
    headers: &HeaderMap,
    client: IpAddr,
    tls: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for part in &key.parts {
        let mut value = Vec::new();
        feed_part(part, uri, headers, client, tls, &mut |b| {
            value.extend_from_slice(b)
        });
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(&value);
    }
    out
}

/// Feeds the request's value of every part of `key` to `sink`, in order.
fn feed(
    key: &HashKey,
    uri: &Uri,
    headers: &HeaderMap,
    client: IpAddr,
    tls: bool,
    sink: &mut dyn FnMut(&[u8]),
) {
    for part in &key.parts {
        feed_part(part, uri, headers, client, tls, sink);
    }
}

fn feed_part(
    part: &HashPart,
    uri: &Uri,
    headers: &HeaderMap,
    client: IpAddr,
    tls: bool,
    sink: &mut dyn FnMut(&[u8]),
) {
    match part {
        HashPart::Text(t) => sink(t.as_bytes()),
        HashPart::RequestUri => sink(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes()),
        HashPart::Uri => sink(uri.path().as_bytes()),
        HashPart::RemoteAddr => match client.to_canonical() {
            IpAddr::V4(a) => sink(&a.octets()),
            IpAddr::V6(a) => sink(&a.octets()),
        },
        HashPart::Host => {
            let host = host(uri, headers);
            for b in host.bytes() {
                sink(&[b.to_ascii_lowercase()]);
            }
        }
        HashPart::Scheme => sink(if tls { b"https" } else { b"http" }),
        HashPart::Header(name) => {
            if let Some(v) = headers.get(name.as_str()) {
                sink(v.as_bytes());
            }
        }
        HashPart::Cookie(name) => {
            if let Some(v) = cookie_value(headers, name) {
                sink(v.as_bytes());
            }
        }
        HashPart::Arg(name) => {
            if let Some(v) = arg(uri.query(), name) {
                sink(v.as_bytes());
            }
        }
    }
}

/// nginx's `$host`: the request's host without its port.
fn host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    if let Some(a) = uri.authority() {
        return a.host();
    }
    let v = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match v.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => v,
    }
}

/// The raw (undecoded) value of query parameter `name`, as nginx's `$arg_name`.
fn arg<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn k(parts: Vec<HashPart>) -> HashKey {
        HashKey { parts }
    }

    #[test]
    fn equal_requests_hash_equal_and_each_part_counts() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let uri = |s: &str| s.parse::<Uri>().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.insert("host", HeaderValue::from_static("A.example:8443"));
        h.insert("cookie", HeaderValue::from_static("a=1; sid=s1"));
        let empty = HeaderMap::new();

        let by = |parts, u: &str, hs: &HeaderMap| key(&k(parts), &uri(u), hs, ip, false);
        // $request_uri sees the query; $uri does not.
        assert_ne!(
            by(vec![HashPart::RequestUri], "/p?a=1", &empty),
            by(vec![HashPart::RequestUri], "/p?a=2", &empty)
        );
        assert_eq!(
            by(vec![HashPart::Uri], "/p?a=1", &empty),
            by(vec![HashPart::Uri], "/p?a=2", &empty)
        );
        // Header, cookie and argument values decide; their absence hashes as empty.
        let user = vec![HashPart::Header("x-user".into())];
        assert_ne!(by(user.clone(), "/", &h), by(user.clone(), "/", &empty));
        assert_eq!(by(user, "/", &empty), by(vec![], "/", &empty));
        let sid = vec![HashPart::Cookie("sid".into())];
        assert_eq!(
            by(sid.clone(), "/", &h),
            by(vec![HashPart::Text("s1".into())], "/", &empty)
        );
        let arg = vec![HashPart::Arg("id".into())];
        assert_eq!(
            by(arg.clone(), "/x?a=1&id=7", &empty),
            by(arg.clone(), "/y?id=7", &empty)
        );
        assert_ne!(
            by(arg.clone(), "/x?id=7", &empty),
            by(arg, "/x?id=8", &empty)
        );
        // $host is the host without its port, in lower case.
        assert_eq!(
            by(vec![HashPart::Host], "/", &h),
            by(vec![HashPart::Text("a.example".into())], "/", &empty)
        );
        // An IPv4 client hashes the same over an IPv6 socket.
        let addr = k(vec![HashPart::RemoteAddr]);
        assert_eq!(
            key(&addr, &uri("/"), &empty, ip, false),
            key(&addr, &uri("/"), &empty, mapped, true)
        );
    }
}
