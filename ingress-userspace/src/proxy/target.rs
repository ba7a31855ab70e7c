//! What a request names before it is routed: its path as nginx matches locations (decoded,
//! dot-segments resolved, slashes merged) and a `Host` that is one valid value. Routing on
//! the raw path would let `/%61dmin`, `/x/../admin` or `//admin` miss an `/admin` rule and
//! fall through to a laxer one, while the upstream resolves them to `/admin` anyway.
use std::borrow::Cow;

use http::{header, Request, Version};

/// Why a request target or `Host` was refused (400, never forwarded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("invalid percent-encoding in the path")]
    BadEscape,
    #[error("the path contains an encoded NUL")]
    Nul,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("HTTP/1.1 request without a Host")]
    MissingHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("asterisk-form request target")]
    Asterisk,
    #[error("authority-form request target outside CONNECT")]
    AuthorityForm,
}

/// The path routes are matched against: percent-decoded, `.` and `..` segments resolved and
/// repeated slashes merged, as nginx's `$uri`. Borrowed when the raw path is already in that
/// form (nearly always). Bytes that are not UTF-8 after decoding become U+FFFD.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, TargetError> {
    if raw == "*" {
        // `OPTIONS *` asks about the server, not a resource behind a route: nginx refuses it
        // (400), and no Ingress path can match it.
        return Err(TargetError::Asterisk);
    }
    if !raw.starts_with('/') {
        // `GET host:port`: only CONNECT may name an authority alone (refused before this),
        // and nginx answers 400. Forwarding it would route by that authority to `/`.
        return Err(TargetError::AuthorityForm);
    }
    if !raw.contains('%') && !raw.contains("//") && !raw.contains("/.") {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = percent_decode(raw.as_bytes())?;
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    // The leading '/' makes the first split element empty.
    for seg in decoded.split(|&b| b == b'/').skip(1) {
        trailing_slash = true;
        match seg {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(TargetError::AboveRoot);
                }
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut path = Vec::with_capacity(decoded.len());
    for seg in &out {
        path.push(b'/');
        path.extend_from_slice(seg);
    }
    if trailing_slash || path.is_empty() {
        path.push(b'/');
    }
    Ok(Cow::Owned(match String::from_utf8(path) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, TargetError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |j: usize| raw.get(j).and_then(|c| (*c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(TargetError::BadEscape);
        };
        let v = (hi * 16 + lo) as u8;
        if v == 0 {
            return Err(TargetError::Nul);
        }
        out.push(v);
        i += 3;
    }
    Ok(out)
}

/// Percent-encodes what may not stand in a path as is (controls, space, `"#%<>?\^`{|}`,
/// non-ASCII): for a path built from a normalized (decoded) one, such as a rewrite target.
pub fn encode_path(path: &str) -> Cow<'_, str> {
    percent_encode(path, |b| {
        b.is_ascii_graphic() && !b"\"#%<>?\\^`{|}".contains(&b)
    })
}

/// `s` with every byte `keep` refuses written as `%XX`.
fn percent_encode(s: &str, keep: impl Fn(u8) -> bool) -> Cow<'_, str> {
    if s.bytes().all(&keep) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Percent-encodes what a query may not carry (controls, space, non-ASCII, `"#<>\^`{|}`);
/// `%`, `&`, `=` and `?` stay as written.
pub fn encode_query(query: &str) -> Cow<'_, str> {
    percent_encode(query, |b| {
        b.is_ascii_graphic() && !b"\"#<>\\^`{|}".contains(&b)
    })
}

/// RFC 9112 §3.2: one `Host` at most, present in HTTP/1.1 unless the target carries the
/// authority, and a valid host[:port] (no userinfo, path or whitespace). The authority of an
/// absolute-form target or HTTP/2's `:authority` is held to the same rules: it is what is
/// routed on and what the upstream gets as `Host`.
pub fn check_host<B>(req: &Request<B>) -> Result<(), TargetError> {
    if let Some(a) = req.uri().authority() {
        if !valid_host(a.as_str().as_bytes()) {
            return Err(TargetError::InvalidHost);
        }
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    match host {
        Some(h) if valid_host(h.as_bytes()) => Ok(()),
        Some(_) => Err(TargetError::InvalidHost),
        None if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            Err(TargetError::MissingHost)
        }
        None => Ok(()),
    }
}

/// host[:port] per RFC 3986 reg-name / IPv4 / bracketed IP literal; `..` refused as nginx does.
fn valid_host(h: &[u8]) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
    !h.is_empty()
        && h.iter().all(|&b| allowed(b))
        && !h.windows(2).any(|w| w == b"..")
        && h[0] != b'.'
        && h[0] != b':'
        && valid_brackets(h)
        && valid_port(h)
}

/// Brackets enclose an IP literal that is the whole host (`[::1]`, `[::1]:80`), nothing
/// else: `[a]junk` or `a[b]` would route as one name and reach the upstream as another.
fn valid_brackets(h: &[u8]) -> bool {
    let opens = h.iter().filter(|&&b| b == b'[').count();
    let closes = h.iter().filter(|&&b| b == b']').count();
    match (opens, closes) {
        (0, 0) => true,
        (1, 1) => {
            let end = h.iter().position(|&b| b == b']').unwrap_or(0);
            h[0] == b'[' && end > 1 && matches!(h.get(end + 1), None | Some(b':'))
        }
        _ => false,
    }
}

/// The port after the host, if any, is a TCP port: digits, at most 65535 (an empty port is
/// allowed by RFC 3986). A colon outside brackets marks it.
fn valid_port(h: &[u8]) -> bool {
    let after_literal = match h.iter().rposition(|&b| b == b']') {
        Some(end) => &h[end + 1..],
        None => h,
    };
    match after_literal.iter().position(|&b| b == b':') {
        None => true,
        Some(i) => {
            let port = &after_literal[i + 1..];
            port.iter().all(u8::is_ascii_digit)
                && (port.is_empty()
                    || std::str::from_utf8(port).is_ok_and(|p| p.parse::<u16>().is_ok()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        for p in ["/", "/foo", "/foo/bar/", "/.well-known/acme"] {
            let n = normalize_path(p).expect("valid");
            assert!(matches!(n, Cow::Borrowed(_)) || n == p, "{p}");
            assert_eq!(n, p);
        }
    }

    #[test]
    fn asterisk_form_is_refused() {
        assert_eq!(normalize_path("*"), Err(TargetError::Asterisk));
        assert_eq!(normalize_path(""), Err(TargetError::AuthorityForm));
    }

    #[test]
    fn paths_resolve_as_nginx_matches_them() {
        for (raw, want) in [
            ("/%66oo", "/foo"),
            ("/x/../foo", "/foo"),
            ("//foo", "/foo"),
            ("/foo/../bar", "/bar"),
            ("/%62ar/", "/bar/"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a%2Fb", "/a/b"),
            ("/a/%2e%2e/b", "/b"),
            ("/a//b///c", "/a/b/c"),
            ("/.well-known/x", "/.well-known/x"),
            ("/caf%C3%A9", "/café"),
            ("/%FF", "/\u{FFFD}"),
            ("/a%20b", "/a b"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        assert_eq!(normalize_path("/%zz"), Err(TargetError::BadEscape));
        assert_eq!(normalize_path("/%4"), Err(TargetError::BadEscape));
        assert_eq!(normalize_path("/a%00b"), Err(TargetError::Nul));
        assert_eq!(normalize_path("/.."), Err(TargetError::AboveRoot));
        assert_eq!(normalize_path("/a/../../b"), Err(TargetError::AboveRoot));
        assert_eq!(normalize_path("/%2e%2e/etc"), Err(TargetError::AboveRoot));
    }

    #[test]
    fn encoding_round_trips_what_decoding_made() {
        assert_eq!(encode_path("/a b/c%d?e#f"), "/a%20b/c%25d%3Fe%23f");
        assert_eq!(encode_path("/café"), "/caf%C3%A9");
        assert!(matches!(encode_path("/users/7"), Cow::Borrowed(_)));
    }

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn host_rules() {
        let ok = |v, uri, h: &[&str]| check_host(&req(v, uri, h));
        assert_eq!(ok(Version::HTTP_11, "/", &["r.test"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &["R.Test:8080"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &["[::1]:80"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &["10.0.0.1"]), Ok(()));
        assert_eq!(ok(Version::HTTP_10, "/", &[]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "http://r.test/", &[]), Ok(()));
        assert_eq!(ok(Version::HTTP_2, "https://r.test/", &[]), Ok(()));
        assert_eq!(
            ok(Version::HTTP_11, "/", &["r.test", "x.test"]),
            Err(TargetError::DuplicateHost)
        );
        assert_eq!(
            ok(Version::HTTP_11, "/", &[]),
            Err(TargetError::MissingHost)
        );
        // The authority of the target is checked as a Host would be.
        for uri in ["http://evil.test:80@r.test/", "http://r.test:99999/"] {
            assert_eq!(
                ok(Version::HTTP_11, uri, &["r.test"]),
                Err(TargetError::InvalidHost),
                "{uri}"
            );
            assert_eq!(
                ok(Version::HTTP_2, uri, &[]),
                Err(TargetError::InvalidHost),
                "{uri}"
            );
        }
        assert_eq!(ok(Version::HTTP_2, "https://r.test:8443/", &[]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &["r.test:"]), Ok(()));
        for bad in [
            "",
            "r.test:65536",
            "r.test:1:2",
            "[::1]:x",
            "a@r.test",
            "r.test/evil",
            "r .test",
            "r..test",
            ".r.test",
            "r.test\\x",
            "[::1]junk",
            "[h]junk",
            "a[::1]",
            "[::1",
            "::1]",
            "[]",
            "[[::1]]",
        ] {
            assert_eq!(
                ok(Version::HTTP_11, "/", &[bad]),
                Err(TargetError::InvalidHost),
                "{bad:?}"
            );
        }
    }
}
