//! Limits against abuse, and the request-smuggling guard.
//!
//! hyper enforces header size and count (`max_buf_size`, `max_headers`; oversize heads get
//! 431/414), the header-read timeout (slowloris; it also bounds keep-alive idle time), rejects
//! duplicate differing `Content-Length` and a `Transfer-Encoding` whose last coding is not
//! `chunked` (400). It *accepts* `Transfer-Encoding` together with `Content-Length` (RFC 9112
//! allows processing it as chunked), and codings such as `gzip, chunked`; those are
//! smuggling-shaped, so we reject them too: the coding list in [`check_framing`], and the
//! CL+TE pair with [`FramingGuard`], which watches the raw HTTP/1 header lines because hyper
//! drops the `Content-Length` before the request reaches us.
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{header, Request, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::errors::ProxyError;

/// Connection and request limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line + headers), bytes. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
    /// Time allowed to receive a complete request head, also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Idle HTTP/1.1 upstream connections kept per endpoint.
    pub upstream_max_idle_per_endpoint: usize,
    /// How long an idle upstream connection is kept.
    pub upstream_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 128,
            upstream_max_idle_per_endpoint: 64,
            upstream_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Rejects HTTP/1 requests whose framing is smuggling-shaped.
pub fn check_framing<B>(req: &Request<B>, guard: &FramingFlag) -> Result<(), ProxyError> {
    if req.version() > Version::HTTP_11 {
        return Ok(());
    }
    if guard.is_set() {
        return Err(ProxyError::BadRequest);
    }
    let mut te = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    match (te.next(), te.next()) {
        (None, _) => Ok(()),
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(ProxyError::BadRequest),
    }
}

/// Rejects methods nginx would not parse: anything but upper-case letters, `_` and `-`.
/// hyper takes any token, so `get` or `G3T` would reach an upstream that may read them
/// differently from the proxy's own method checks (CORS preflight, retries).
pub fn check_method(method: &http::Method) -> Result<(), ProxyError> {
    let ok = method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProxyError::BadRequest)
    }
}

/// Set when an HTTP/1 header block on the connection carried both `Content-Length` and
/// `Transfer-Encoding`.
#[derive(Debug, Default)]
pub struct FramingFlag(AtomicBool);

impl FramingFlag {
    /// Whether a conflicting header block was seen.
    pub fn is_set(&self) -> bool {
        self.0.load(Relaxed)
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest header-name prefix we classify (`transfer-encoding:`).
const PREFIX: usize = 18;

/// Scans header lines for `Content-Length:` and `Transfer-Encoding:` in one block.
#[derive(Debug)]
struct Scanner {
    preface_seen: usize,
    disabled: bool,
    collecting: bool,
    line: [u8; PREFIX],
    line_len: usize,
    classified: bool,
    saw_cl: bool,
    saw_te: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            preface_seen: 0,
            disabled: false,
            collecting: true,
            line: [0; PREFIX],
            line_len: 0,
            classified: false,
            saw_cl: false,
            saw_te: false,
        }
    }
}

impl Scanner {
    /// Feeds bytes read from the client; true once a conflicting block was seen.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.disabled {
            return false;
        }
        if self.preface_seen < H2_PREFACE.len() {
            let n = data.len().min(H2_PREFACE.len() - self.preface_seen);
            if data[..n] == H2_PREFACE[self.preface_seen..self.preface_seen + n] {
                self.preface_seen += n;
                if self.preface_seen == H2_PREFACE.len() {
                    // HTTP/2: framing is binary and checked by the h2 codec.
                    self.disabled = true;
                    return false;
                }
            } else {
                self.preface_seen = H2_PREFACE.len();
            }
        }
        while !data.is_empty() {
            if self.collecting {
                let b = data[0];
                data = &data[1..];
                if b == b'\n' {
                    self.end_line();
                } else {
                    self.line[self.line_len] = b.to_ascii_lowercase();
                    self.line_len += 1;
                    if self.line_len == PREFIX {
                        // Long enough to tell; skip the rest of the line fast.
                        self.classify();
                        self.collecting = false;
                    }
                }
            } else {
                match memchr::memchr(b'\n', data) {
                    Some(p) => {
                        data = &data[p + 1..];
                        self.start_line();
                    }
                    None => data = &[],
                }
            }
            if self.saw_cl && self.saw_te {
                return true;
            }
        }
        false
    }

    fn start_line(&mut self) {
        self.collecting = true;
        self.line_len = 0;
        self.classified = false;
    }

    fn end_line(&mut self) {
        let line = &self.line[..self.line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // End of a header block: the next block starts clean.
            self.saw_cl = false;
            self.saw_te = false;
        } else if !self.classified {
            self.classify();
        }
        self.start_line();
    }

    fn classify(&mut self) {
        self.classified = true;
        let line = &self.line[..self.line_len];
        if line.starts_with(b"content-length:") {
            self.saw_cl = true;
        } else if line.starts_with(b"transfer-encoding:") {
            self.saw_te = true;
        }
    }
}

/// An IO wrapper that watches inbound HTTP/1 header blocks for `Content-Length` +
/// `Transfer-Encoding` and raises a [`FramingFlag`]. The request that carries them is parsed
/// after its bytes were read, so the flag is up before that request reaches the handler.
/// Heuristic in one direction only: a body that itself contains both header lines flags the
/// connection, failing closed (400) for later requests on it.
#[derive(Debug)]
pub struct FramingGuard<S> {
    inner: S,
    scanner: Scanner,
    flag: Arc<FramingFlag>,
}

impl<S> FramingGuard<S> {
    /// Wraps `inner`; the returned flag is shared with the request handler.
    pub fn new(inner: S) -> (Self, Arc<FramingFlag>) {
        let flag = Arc::new(FramingFlag::default());
        (
            FramingGuard {
                inner,
                scanner: Scanner::default(),
                flag: flag.clone(),
            },
            flag,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if this.scanner.feed(&buf.filled()[before..]) {
                this.flag.0.store(true, Relaxed);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The status hyper answered a request it refused while parsing its head with (400, 414 or
/// 431), so the refusal is counted and logged like any other answer; `None` for every other
/// connection error (nothing was answered).
pub(crate) fn refused_status(err: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return if h.is_parse_too_large() {
                // hyper has no public test for its 414; its message is the one way to tell.
                Some(if h.to_string().contains("URI too long") {
                    414
                } else {
                    431
                })
            } else if h.is_parse() && !h.is_parse_status() && !h.is_parse_version_h2() {
                Some(400)
            } else {
                None
            };
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut s = Scanner::default();
        chunks.iter().any(|c| s.feed(c))
    }

    #[test]
    fn only_methods_nginx_parses_pass() {
        for m in ["GET", "POST", "PROPFIND", "M-SEARCH", "VERSION_CONTROL"] {
            let method = http::Method::from_bytes(m.as_bytes()).expect("token");
            assert!(check_method(&method).is_ok(), "{m}");
        }
        for m in ["get", "Get", "G3T", "GET!", "x"] {
            let method = http::Method::from_bytes(m.as_bytes()).expect("token");
            assert!(check_method(&method).is_err(), "{m}");
        }
    }

    #[test]
    fn flags_cl_and_te_in_one_block() {
        let req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(scan(&[req]));
        // Split at every position: the state machine must carry across reads.
        for i in 0..req.len() {
            assert!(scan(&[&req[..i], &req[i..]]), "split at {i}");
        }
        assert!(scan(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"
        ]));
    }

    #[test]
    fn separate_blocks_are_fine() {
        let two = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(!scan(&[two]));
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nX-Transfer-Encoding: x\r\n\r\n"
        ]));
    }

    #[test]
    fn h2_preface_disables() {
        let mut data = H2_PREFACE.to_vec();
        data.extend_from_slice(b"\ncontent-length:\ntransfer-encoding:\n");
        assert!(!scan(&[&data]));
    }

    #[test]
    fn te_codings() {
        let flag = FramingFlag::default();
        let ok = Request::builder()
            .header("transfer-encoding", "Chunked")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(check_framing(&ok, &flag).is_ok());
        let gz = Request::builder()
            .header("transfer-encoding", "gzip, chunked")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_framing(&gz, &flag), Err(ProxyError::BadRequest));
        let two = Request::builder()
            .header("transfer-encoding", "chunked")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_framing(&two, &flag), Err(ProxyError::BadRequest));
    }
}
