//! ClientHello parser: finds the SNI host name in the first bytes of a TLS connection.
//!
//! A pure function over the bytes received so far. The ClientHello may be fragmented over
//! several TLS records (large post-quantum key shares) and those over several TCP segments;
//! the parser reassembles the handshake message from the records it is given and answers
//! `Incomplete` until the whole message is there. Everything is bounds-checked: any byte
//! sequence yields a verdict, never a panic (fuzzed in `fuzz/fuzz_targets/clienthello.rs`).
use std::borrow::Cow;

use thiserror::Error;

/// Largest ClientHello handshake message accepted (header included). Real ones with an
/// X25519MLKEM768 key share are ~1.8 KB; this leaves room for many extensions.
pub const MAX_HELLO_LEN: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// TLSPlaintext.length limit (RFC 8446 5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// What the bytes received so far say about the SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloParse {
    /// A complete ClientHello naming this host (lower-cased, validated).
    Found(String),
    /// A complete ClientHello without a server_name host name.
    NoSni,
    /// A valid prefix of a ClientHello: read more bytes.
    Incomplete,
    /// Not a ClientHello we accept.
    Invalid(HelloError),
}

/// Why the bytes are not an acceptable ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum HelloError {
    #[error("not a TLS handshake record (content type {0})")]
    NotHandshake(u8),
    #[error("unsupported record version {0:#06x}")]
    RecordVersion(u16),
    #[error("record length {0} is zero or above 2^14")]
    RecordLength(usize),
    #[error("first handshake message is type {0}, not ClientHello")]
    NotClientHello(u8),
    #[error("ClientHello of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("extension {0} appears twice")]
    DuplicateExtension(u16),
    #[error("invalid server_name: {0}")]
    BadServerName(&'static str),
}

/// Parses the first bytes of a connection. See the module doc.
pub fn parse_client_hello(input: &[u8]) -> HelloParse {
    match reassemble(input) {
        Ok(Some(msg)) => match parse_hello_body(&msg) {
            Ok(Some(name)) => HelloParse::Found(name),
            Ok(None) => HelloParse::NoSni,
            Err(e) => HelloParse::Invalid(e),
        },
        Ok(None) => HelloParse::Incomplete,
        Err(e) => HelloParse::Invalid(e),
    }
}

/// Collects the handshake message body from consecutive handshake records. `Ok(None)`: the
/// records so far are a valid prefix. Borrows when the message sits in one record.
fn reassemble(input: &[u8]) -> Result<Option<Cow<'_, [u8]>>, HelloError> {
    let mut rest = input;
    let mut joined: Option<Vec<u8>> = None;
    let mut first: &[u8] = &[];
    loop {
        // Validate whatever part of the record header is there, byte by byte, so garbage is
        // rejected as early as possible.
        if let Some(&ty) = rest.first() {
            if ty != CONTENT_HANDSHAKE {
                return Err(HelloError::NotHandshake(ty));
            }
        }
        if let Some(&major) = rest.get(1) {
            if major != 3 {
                let minor = rest.get(2).copied().unwrap_or(0);
                return Err(HelloError::RecordVersion(u16::from_be_bytes([
                    major, minor,
                ])));
            }
        }
        if let Some(&minor) = rest.get(2) {
            if minor > 4 {
                return Err(HelloError::RecordVersion(u16::from_be_bytes([3, minor])));
            }
        }
        if rest.len() < RECORD_HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > MAX_RECORD_LEN {
            return Err(HelloError::RecordLength(len));
        }
        let available = &rest[RECORD_HEADER..];
        let payload = &available[..len.min(available.len())];
        match joined.as_mut() {
            None if first.is_empty() => first = payload,
            None => {
                let mut v = Vec::with_capacity(first.len() + payload.len());
                v.extend_from_slice(first);
                v.extend_from_slice(payload);
                joined = Some(v);
            }
            Some(v) => v.extend_from_slice(payload),
        }
        let msg: &[u8] = joined.as_deref().unwrap_or(first);
        if let Some(&ty) = msg.first() {
            if ty != HANDSHAKE_CLIENT_HELLO {
                return Err(HelloError::NotClientHello(ty));
            }
        }
        if msg.len() >= HANDSHAKE_HEADER {
            let body_len =
                usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]);
            let total = HANDSHAKE_HEADER + body_len;
            if total > MAX_HELLO_LEN {
                return Err(HelloError::TooLarge(total));
            }
            if msg.len() >= total {
                let body = HANDSHAKE_HEADER..total;
                return Ok(Some(match joined {
                    Some(mut v) => {
                        v.truncate(total);
                        v.drain(..HANDSHAKE_HEADER);
                        Cow::Owned(v)
                    }
                    None => Cow::Borrowed(&first[body]),
                }));
            }
        }
        if payload.len() < len {
            return Ok(None);
        }
        rest = &available[len..];
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a complete ClientHello body (RFC 8446 4.1.2, RFC 5246 7.4.1.2).
fn parse_hello_body(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(body);
    let version = r.u16("legacy_version")?;
    if version >> 8 != 3 {
        return Err(HelloError::Malformed("legacy_version is not 3.x"));
    }
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher_suites length"));
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(HelloError::Malformed("no compression method"));
    }
    if r.is_empty() {
        // Pre-extension (SSL 3.0 style) hello.
        return Ok(None);
    }
    let mut exts = Reader(r.vec16("extensions")?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("trailing bytes after extensions"));
    }
    // Extension types seen, to reject duplicates (RFC 8446 4.2) without allocating: a
    // ClientHello has a few dozen extensions at most, a linear scan is cheap.
    let mut seen: Vec<u16> = Vec::new();
    let mut sni = None;
    while !exts.is_empty() {
        let ty = exts.u16("extension type")?;
        let data = exts.vec16("extension data")?;
        if seen.contains(&ty) {
            return Err(HelloError::DuplicateExtension(ty));
        }
        seen.push(ty);
        if ty == EXT_SERVER_NAME {
            sni = parse_server_name(data)?;
        }
    }
    Ok(sni)
}

/// Parses the server_name extension (RFC 6066 3); `None` if it names no host.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut ext = Reader(data);
    let mut list = Reader(ext.vec16("server_name_list")?);
    if !ext.is_empty() {
        return Err(HelloError::Malformed("trailing bytes in server_name"));
    }
    if list.is_empty() {
        return Err(HelloError::BadServerName("empty server_name_list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8("name_type")?;
        let name = list.vec16("server name")?;
        if name_type != NAME_TYPE_HOST {
            continue;
        }
        if host.is_some() {
            return Err(HelloError::BadServerName("two host names"));
        }
        host = Some(validate_host(name)?);
    }
    Ok(host)
}

/// A DNS host name: LDH labels (underscore tolerated), 1..=63 bytes each, at most 253 in
/// all, no trailing dot (RFC 6066 forbids it). Returned lower-cased.
fn validate_host(name: &[u8]) -> Result<String, HelloError> {
    if name.is_empty() {
        return Err(HelloError::BadServerName("empty"));
    }
    if name.len() > 253 {
        return Err(HelloError::BadServerName("longer than 253 bytes"));
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(HelloError::BadServerName("empty label"));
        }
        if label.len() > 63 {
            return Err(HelloError::BadServerName("label longer than 63 bytes"));
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HelloError::BadServerName(
                "character outside letters, digits, '-', '_'",
            ));
        }
    }
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello handshake message (header included) with the given extensions.
    pub(crate) fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        let mut e = Vec::new();
        for (ty, data) in exts {
            e.extend(ty.to_be_bytes());
            e.extend((data.len() as u16).to_be_bytes());
            e.extend(data);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend(body);
        msg
    }

    pub(crate) fn sni_ext(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for (ty, n) in names {
            list.push(*ty);
            list.extend((n.len() as u16).to_be_bytes());
            list.extend(*n);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        (0, data)
    }

    /// Wraps a handshake message in records of at most `chunk` bytes.
    pub(crate) fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in msg.chunks(chunk) {
            out.extend([22, 3, 1]);
            out.extend((c.len() as u16).to_be_bytes());
            out.extend(c);
        }
        out
    }

    #[test]
    fn finds_sni_in_one_record_and_lowercases() {
        let m = hello(&[(10, vec![0, 2, 0, 29]), sni_ext(&[(0, b"Api.Example.COM")])]);
        assert_eq!(
            parse_client_hello(&records(&m, 16384)),
            HelloParse::Found("api.example.com".into())
        );
    }

    #[test]
    fn every_prefix_is_incomplete_across_fragmented_records() {
        let m = hello(&[(51, vec![9; 1300]), sni_ext(&[(0, b"a.example.com")])]);
        for chunk in [1, 7, 100, 1000, 16384] {
            let wire = records(&m, chunk);
            for end in 0..wire.len() {
                assert_eq!(
                    parse_client_hello(&wire[..end]),
                    HelloParse::Incomplete,
                    "chunk {chunk} end {end}"
                );
            }
            assert_eq!(
                parse_client_hello(&wire),
                HelloParse::Found("a.example.com".into())
            );
        }
    }

    #[test]
    fn trailing_records_after_the_hello_are_ignored() {
        let m = hello(&[sni_ext(&[(0, b"x.test")])]);
        let mut wire = records(&m, 50);
        wire.extend([23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(
            parse_client_hello(&wire),
            HelloParse::Found("x.test".into())
        );
    }

    #[test]
    fn no_sni_variants() {
        assert_eq!(
            parse_client_hello(&records(&hello(&[(10, vec![0, 0])]), 999)),
            HelloParse::NoSni
        );
        // Only a non-host name type.
        let m = hello(&[sni_ext(&[(7, b"whatever")])]);
        assert_eq!(parse_client_hello(&records(&m, 999)), HelloParse::NoSni);
        // No extensions block at all.
        let mut m = hello(&[]);
        m.truncate(m.len() - 2);
        let len = m.len() - 4;
        m[2] = (len >> 8) as u8;
        m[3] = len as u8;
        assert_eq!(parse_client_hello(&records(&m, 999)), HelloParse::NoSni);
    }

    #[test]
    fn rejects_garbage_early() {
        assert!(matches!(
            parse_client_hello(b"G"),
            HelloParse::Invalid(HelloError::NotHandshake(b'G'))
        ));
        assert!(matches!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            HelloParse::Invalid(_)
        ));
        assert!(matches!(
            parse_client_hello(&[22, 2]),
            HelloParse::Invalid(HelloError::RecordVersion(_))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 9]),
            HelloParse::Invalid(HelloError::RecordVersion(_))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0, 0]),
            HelloParse::Invalid(HelloError::RecordLength(0))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0x40, 1]),
            HelloParse::Invalid(HelloError::RecordLength(_))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0, 4, 2]),
            HelloParse::Invalid(HelloError::NotClientHello(2))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0, 4, 1, 1, 0, 0]),
            HelloParse::Invalid(HelloError::TooLarge(_))
        ));
        // SSLv2-compatible hello.
        assert!(matches!(
            parse_client_hello(&[0x80, 0x2e, 1]),
            HelloParse::Invalid(HelloError::NotHandshake(0x80))
        ));
    }

    #[test]
    fn rejects_bad_names_and_structure() {
        for name in [
            &b""[..],
            b"a..b",
            b"a.b.",
            b"sp ace",
            b"nul\0x",
            &[b'a'; 64][..],
            b"\xc3\xa9.example",
        ] {
            let m = hello(&[sni_ext(&[(0, name)])]);
            assert!(
                matches!(
                    parse_client_hello(&records(&m, 999)),
                    HelloParse::Invalid(HelloError::BadServerName(_))
                ),
                "{name:?}"
            );
        }
        let m = hello(&[sni_ext(&[(0, b"a.test"), (0, b"b.test")])]);
        assert!(matches!(
            parse_client_hello(&records(&m, 999)),
            HelloParse::Invalid(HelloError::BadServerName(_))
        ));
        let m = hello(&[(10, vec![0, 0]), (10, vec![0, 0])]);
        assert_eq!(
            parse_client_hello(&records(&m, 999)),
            HelloParse::Invalid(HelloError::DuplicateExtension(10))
        );
        let m = hello(&[(0, vec![])]);
        assert!(matches!(
            parse_client_hello(&records(&m, 999)),
            HelloParse::Invalid(HelloError::Malformed(_))
        ));
        // Extension length running past the block.
        let mut m = hello(&[sni_ext(&[(0, b"a.test")])]);
        let n = m.len();
        m[n - 7] = 0xff;
        assert!(matches!(
            parse_client_hello(&records(&m, 999)),
            HelloParse::Invalid(_)
        ));
        // A non-handshake record in the middle of the hello.
        let m = hello(&[sni_ext(&[(0, b"a.test")])]);
        let mut wire = records(&m[..10], 10);
        wire.extend([23, 3, 3, 0, 1, 0]);
        assert_eq!(
            parse_client_hello(&wire),
            HelloParse::Invalid(HelloError::NotHandshake(23))
        );
    }

    #[test]
    fn max_length_name_is_accepted() {
        let label = [b'a'; 63];
        let mut name = Vec::new();
        for i in 0..4 {
            if i > 0 {
                name.push(b'.');
            }
            name.extend(&label[..if i == 3 { 61 } else { 63 }]);
        }
        assert_eq!(name.len(), 253);
        let m = hello(&[sni_ext(&[(0, &name)])]);
        assert!(
            matches!(parse_client_hello(&records(&m, 999)), HelloParse::Found(n) if n.len() == 253)
        );
    }

    /// Real first flights of rustls clients, committed under tests/data/clienthello/.
    #[test]
    fn captured_rustls_hellos_byte_by_byte() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/clienthello/");
        let cases = [
            (
                "found__pass.test__rustls_x25519mlkem768.bin",
                HelloParse::Found("pass.test".into()),
            ),
            (
                "found__pass.test__rustls_records_of_64_bytes.bin",
                HelloParse::Found("pass.test".into()),
            ),
            (
                "found__pass.test__rustls_tls12_only.bin",
                HelloParse::Found("pass.test".into()),
            ),
            (
                "found__upper.example.com__rustls_mixed_case.bin",
                HelloParse::Found("upper.example.com".into()),
            ),
            ("nosni__rustls_sni_disabled.bin", HelloParse::NoSni),
        ];
        for (file, want) in cases {
            let wire = std::fs::read(format!("{corpus}{file}")).expect("corpus file");
            for end in 0..wire.len() {
                assert_eq!(
                    parse_client_hello(&wire[..end]),
                    HelloParse::Incomplete,
                    "{file} prefix {end}"
                );
            }
            assert_eq!(parse_client_hello(&wire), want, "{file}");
            // Bytes after the hello (early data, the next flight) change nothing.
            let mut more = wire.clone();
            more.extend([23, 3, 3, 0, 2, 0, 0]);
            assert_eq!(parse_client_hello(&more), want, "{file} + trailing record");
        }
    }
}
