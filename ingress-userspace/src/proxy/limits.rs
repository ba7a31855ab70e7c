//! Limits against abuse, and the request-smuggling guard.
//!
//! hyper enforces header size and count (`max_buf_size`, `max_headers`; oversize heads get
//! 431/414), the header-read timeout (slowloris; it also bounds keep-alive idle time), rejects
//! duplicate differing `Content-Length` and a `Transfer-Encoding` whose last coding is not
//! `chunked` (400). It *accepts* `Transfer-Encoding` together with `Content-Length` (RFC 9112
//! allows processing it as chunked), and codings such as `gzip, chunked`; those are
//! smuggling-shaped, so we reject them too: the coding list in [`check_framing`], and the
//! CL+TE pair with [`FramingGuard`], which watches the raw HTTP/1 header lines because hyper
//! drops the `Content-Length` before the request reaches us. The same watcher bounds a head
//! from its first bytes (`client-header-timeout`), which hyper's timer cannot do.
use std::{
    future::Future,
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
    /// Time allowed to receive a complete request head, also the keep-alive idle limit
    /// (`--keep-alive`): hyper's timer runs from the end of the previous response.
    pub header_read_timeout: Duration,
    /// Time an HTTP/1.1 request head may take once its first bytes arrived
    /// (`--client-header-timeout`), enforced by [`FramingGuard`].
    pub client_header_timeout: Duration,
    /// Longest wait between two reads of a request body (`--client-body-timeout`); a route's
    /// shorter `proxy-send-timeout` wins.
    pub client_body_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a new connection has to send its PROXY protocol header (`use-proxy-protocol`).
    pub proxy_protocol_timeout: Duration,
    /// Time a write to the client may make no progress (a client that stopped reading)
    /// before the connection is closed: nginx's `send_timeout`. An HTTP/2 stream that gets
    /// no flow-control window for this long is reset instead (`body::StallShared`).
    pub client_send_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams served on one client connection before it is closed gracefully
    /// (GOAWAY), as nginx's `keepalive_requests` (1000): a client that opens and resets
    /// streams just slowly enough to pass the HTTP/2 codec's reset limit must reconnect, not
    /// drive requests on one connection forever. HTTP/1.1 connections are not counted: one
    /// request at a time cannot pile up, and closing one races the client's next request.
    /// 0: no limit.
    pub max_requests_per_connection: usize,
    /// Idle HTTP/1.1 upstream connections kept per endpoint.
    pub upstream_max_idle_per_endpoint: usize,
    /// How long an idle upstream connection is kept.
    pub upstream_idle_timeout: Duration,
    /// Requests one upstream HTTP/1.1 connection serves before it is closed; 0: no limit.
    pub upstream_max_requests: u64,
    /// How long one upstream HTTP/1.1 connection is reused at most.
    pub upstream_max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(30),
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            proxy_protocol_timeout: Duration::from_secs(5),
            client_send_timeout: Duration::from_secs(60),
            h2_max_concurrent_streams: 128,
            max_requests_per_connection: 1000,
            upstream_max_idle_per_endpoint: 320,
            upstream_idle_timeout: Duration::from_secs(60),
            upstream_max_requests: 10_000,
            upstream_max_lifetime: Duration::from_secs(3600),
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

/// Shared between a connection's [`FramingGuard`] and its request handler: the guard raises
/// `conflict` at an HTTP/1 header block with both `Content-Length` and `Transfer-Encoding`;
/// the handler raises `upgraded` when it switches the connection to another protocol.
#[derive(Debug, Default)]
pub struct FramingFlag {
    conflict: AtomicBool,
    upgraded: AtomicBool,
}

impl FramingFlag {
    /// Whether a conflicting header block was seen.
    pub fn is_set(&self) -> bool {
        self.conflict.load(Relaxed)
    }

    /// The connection is switching protocols (a `101` is on its way to the client): the bytes
    /// that follow are the new protocol's (WebSocket frames), not request heads, so the guard
    /// stops reading them as HTTP and stops timing them as a head.
    pub fn set_upgraded(&self) {
        self.upgraded.store(true, Relaxed);
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest header line start we keep: a `Content-Length` line with its value and some
/// whitespace fits; a longer one of those fails closed.
const LINE: usize = 64;

/// Where the scanner is in the inbound HTTP/1 byte stream. Bodies are skipped by their own
/// framing, as hyper reads them, so header-looking lines inside a body are never taken for a
/// head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Lines of a request head (request line included).
    Head,
    /// This many more body bytes (Content-Length).
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
}

/// hyper's chunked-body grammar, state by state (its `ChunkedState`), so that where the
/// scanner thinks a body ends is where hyper does. A looser reading would let text that
/// hyper takes as trailer bytes pass for a head of its own, and a large `Content-Length` in
/// it would make the scanner skip the real next head as a body. Whatever hyper refuses ends
/// the connection, so the scanner stops there too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// The first hex digit of a chunk size.
    Start,
    /// More hex digits, or whitespace, `;` or CR after them.
    Size(u64),
    /// Whitespace after the size.
    SizeLws(u64),
    /// A chunk extension, up to CR.
    Extension(u64),
    /// The LF ending a size line.
    SizeLf(u64),
    /// This many more chunk-data bytes.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk's size line (or a trailer line): CR, or a trailer's first byte.
    EndCr,
    /// A trailer line, up to CR (a bare LF does not end it).
    Trailer,
    /// The LF after a trailer line.
    TrailerLf,
    /// The LF ending the body.
    EndLf,
}

impl Chunked {
    /// The state after byte `b`; `None` where hyper refuses the body.
    fn step(self, b: u8) -> Option<Chunked> {
        use Chunked::*;
        let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
        Some(match (self, b) {
            (Start, b) => Size(hex(b)?),
            (Size(n), b) if b.is_ascii_hexdigit() => Size(n.checked_mul(16)?.checked_add(hex(b)?)?),
            (Size(n) | SizeLws(n), b' ' | b'\t') => SizeLws(n),
            (Size(n) | SizeLws(n), b';') => Extension(n),
            (Size(n) | SizeLws(n) | Extension(n), b'\r') => SizeLf(n),
            (Size(_) | SizeLws(_) | Extension(_), b'\n') => return None,
            (Size(_) | SizeLws(_), _) => return None,
            (Extension(n), _) => Extension(n),
            (SizeLf(0), b'\n') => EndCr,
            (SizeLf(n), b'\n') => Data(n),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (EndCr, b'\r') => EndLf,
            (Trailer, b'\r') => TrailerLf,
            (EndCr | Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            // EndLf's LF is taken by the caller (the body ends); Data is skipped in bulk.
            (SizeLf(_) | DataCr | DataLf | TrailerLf | EndLf | Data(_), _) => return None,
        })
    }
}

/// Skips up to `n` body bytes of `data`: how many are still to come, and what follows them.
fn skip(n: u64, data: &[u8]) -> (u64, &[u8]) {
    let take = n.min(data.len() as u64);
    (n - take, &data[take as usize..])
}

/// Follows the HTTP/1 request stream (heads, then bodies by their framing) and spots a head
/// with both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug)]
struct Scanner {
    preface_seen: usize,
    /// Nothing more to check: HTTP/2, or a stream hyper itself refuses and closes.
    disabled: bool,
    phase: Phase,
    line: [u8; LINE],
    line_len: usize,
    /// The current line outgrew `line`; only its start is kept.
    long: bool,
    saw_cl: bool,
    saw_te: bool,
    /// The head's `Content-Length` value, when it parsed.
    cl: Option<u64>,
    conflict: bool,
    /// Bytes of a request head have arrived, and not yet its end.
    in_head: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            preface_seen: 0,
            disabled: false,
            phase: Phase::Head,
            line: [0; LINE],
            line_len: 0,
            long: false,
            saw_cl: false,
            saw_te: false,
            cl: None,
            conflict: false,
            in_head: false,
        }
    }
}

impl Scanner {
    /// Feeds bytes read from the client; true once a conflicting head was seen.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.disabled || self.conflict {
            return self.conflict;
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
        while !data.is_empty() && !self.disabled && !self.conflict {
            data = match self.phase {
                Phase::Head => {
                    self.in_head = true;
                    self.lines(data)
                }
                Phase::Body(n) => {
                    let (left, rest) = skip(n, data);
                    self.phase = if left == 0 {
                        Phase::Head
                    } else {
                        Phase::Body(left)
                    };
                    rest
                }
                Phase::Chunked(state) => self.chunked(state, data),
            };
        }
        self.conflict
    }

    /// Head lines, up to the end of the head or of `data`. Only the first
    /// `LINE` bytes of a line are kept; the rest is skipped to the line break.
    fn lines<'d>(&mut self, mut data: &'d [u8]) -> &'d [u8] {
        while !data.is_empty() {
            let end = memchr::memchr(b'\n', data);
            let line = &data[..end.unwrap_or(data.len())];
            let take = line.len().min(LINE - self.line_len);
            for (dst, src) in self.line[self.line_len..self.line_len + take]
                .iter_mut()
                .zip(line)
            {
                *dst = src.to_ascii_lowercase();
            }
            self.line_len += take;
            self.long |= line.len() > take;
            let Some(end) = end else {
                return &[];
            };
            data = &data[end + 1..];
            self.end_line();
            if self.phase != Phase::Head {
                break;
            }
        }
        data
    }

    fn end_line(&mut self) {
        let line = &self.line[..self.line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && !self.long {
            self.end_head();
        } else {
            self.header(self.long);
        }
        self.line_len = 0;
        self.long = false;
    }

    fn header(&mut self, long: bool) {
        let line = &self.line[..self.line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"content-length:") {
            self.saw_cl = true;
            if long {
                // Padded past any real value: its body cannot be followed, so fail closed.
                self.conflict = true;
            }
            // A value that does not parse is one hyper refuses too (400, connection closed).
            self.cl = std::str::from_utf8(value.trim_ascii())
                .ok()
                .and_then(|v| v.parse().ok());
        } else if line.starts_with(b"transfer-encoding:") {
            self.saw_te = true;
        }
    }

    /// The empty line ending a head: what follows is decided by the head's framing, as hyper
    /// decides it.
    fn end_head(&mut self) {
        self.in_head = false;
        let (cl, te) = (self.saw_cl, self.saw_te);
        let len = self.cl.take();
        self.saw_cl = false;
        self.saw_te = false;
        self.phase = match (cl, te, len) {
            (true, true, _) => {
                self.conflict = true;
                Phase::Head
            }
            (_, true, _) => Phase::Chunked(Chunked::Start),
            (true, false, Some(0)) | (false, false, _) => Phase::Head,
            (true, false, Some(n)) => Phase::Body(n),
            (true, false, None) => {
                // hyper refuses this head; nothing after it is read as HTTP.
                self.disabled = true;
                Phase::Head
            }
        };
    }

    /// Follows a chunked body through `data`: what follows its end, or nothing.
    fn chunked<'d>(&mut self, mut state: Chunked, mut data: &'d [u8]) -> &'d [u8] {
        loop {
            if let Chunked::Data(n) = state {
                let (left, rest) = skip(n, data);
                data = rest;
                state = if left == 0 {
                    Chunked::DataCr
                } else {
                    Chunked::Data(left)
                };
            }
            let Some((&b, rest)) = data.split_first() else {
                self.phase = Phase::Chunked(state);
                return data;
            };
            data = rest;
            if state == Chunked::EndLf && b == b'\n' {
                self.phase = Phase::Head;
                return data;
            }
            match state.step(b) {
                Some(next) => state = next,
                None => {
                    // hyper refuses this body and closes the connection.
                    self.disabled = true;
                    return &[];
                }
            }
        }
    }
}

/// An IO wrapper that follows the inbound HTTP/1 stream (heads, and bodies by their framing)
/// and raises a [`FramingFlag`] at a head with both `Content-Length` and
/// `Transfer-Encoding`. The request that carries them is parsed after its bytes were read, so
/// the flag is up before that request reaches the handler.
///
/// It also bounds the time from a head's first bytes to its end (`client-header-timeout`):
/// hyper's own head timer runs from the end of the previous response, so it is the keep-alive
/// limit too and cannot be shorter than that. The timer is armed only when a read ends inside
/// a head, so a head that arrives whole costs none.
#[derive(Debug)]
pub struct FramingGuard<S> {
    inner: S,
    scanner: Scanner,
    flag: Arc<FramingFlag>,
    head_timeout: Duration,
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FramingGuard<S> {
    /// Wraps `inner`, allowing each head `head_timeout` from its first bytes; the returned
    /// flag is shared with the request handler.
    pub fn new(inner: S, head_timeout: Duration) -> (Self, Arc<FramingFlag>) {
        let flag = Arc::new(FramingFlag::default());
        (
            FramingGuard {
                inner,
                scanner: Scanner::default(),
                flag: flag.clone(),
                head_timeout,
                head_deadline: None,
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
        if !this.scanner.disabled && this.flag.upgraded.load(Relaxed) {
            // Frames of the new protocol may already sit in the scanner as a "head" (read
            // with the upgrade request): that head never ends, so its timer must go too.
            this.scanner.disabled = true;
            this.head_deadline = None;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match res {
            Poll::Ready(Ok(())) => {
                if this.scanner.feed(&buf.filled()[before..]) {
                    this.flag.conflict.store(true, Relaxed);
                }
                if !this.scanner.in_head || this.scanner.disabled {
                    this.head_deadline = None;
                } else if this.head_deadline.is_none() {
                    this.head_deadline = Some(Box::pin(tokio::time::sleep(this.head_timeout)));
                }
            }
            Poll::Pending => {
                if let Some(d) = this.head_deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        tracing::debug!("client-header-timeout: request head incomplete");
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head not received within client-header-timeout",
                        )));
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
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
    fn a_head_is_in_progress_from_its_first_byte_to_its_blank_line() {
        let mut s = Scanner::default();
        let steps: &[(&[u8], bool)] = &[
            (b"\r\n", false), // a stray line break before a request starts none
            (b"POST / HTTP/1.1\r\nHost: x\r\n", true),
            (b"Content-Length: 4\r\n\r\nab", false), // the body is not the head's
            (b"cd", false),
            (b"GET /next", true),
            (b" HTTP/1.1\r\n\r\n", false),
        ];
        for (bytes, in_head) in steps {
            s.feed(bytes);
            assert_eq!(
                s.in_head,
                *in_head,
                "after {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_head_times_out_and_a_finished_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1024);
        let (mut guard, _) = FramingGuard::new(server, Duration::from_secs(5));
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = guard.read(&mut buf).await.expect("a whole head");
        assert_eq!(n, 18);
        // Idle after a whole head: no timer, the read just waits.
        let idle = tokio::time::timeout(Duration::from_secs(60), guard.read(&mut buf)).await;
        assert!(idle.is_err(), "an idle connection is not the head timer's");
        client.write_all(b"GET / HT").await.expect("write");
        let n = guard.read(&mut buf).await.expect("part of a head");
        assert_eq!(n, 8);
        let err = guard.read(&mut buf).await.expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
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

    /// Every way of splitting `data` in two reads gives `want`.
    fn scan_all_splits(data: &[u8], want: bool) {
        assert_eq!(scan(&[data]), want, "whole");
        for i in 0..data.len() {
            assert_eq!(scan(&[&data[..i], &data[i..]]), want, "split at {i}");
        }
    }

    #[test]
    fn header_lines_inside_bodies_are_body() {
        let body = b"Content-Length: 12\nTransfer-Encoding: chunked\n\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let mut fixed = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        fixed.extend_from_slice(body);
        scan_all_splits(&fixed, false);
        let mut chunked =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n");
        scan_all_splits(&chunked, false);
        // The stream is followed past each body: a conflicting head after it is still caught.
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        for first in [&fixed, &chunked] {
            let mut two = first.clone();
            two.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            two.extend_from_slice(bad);
            scan_all_splits(&two, true);
        }
    }

    /// Trailers end at an empty CRLF line only, as hyper reads them: a bare LF line inside
    /// them does not end the body, so a head written after it is trailer bytes, and a
    /// conflicting head after the real end is still caught.
    #[test]
    fn trailers_end_where_hyper_ends_them() {
        let bad = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\nX-T: a\n\nGET /fake HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"
            .to_vec();
        stream.extend_from_slice(bad);
        scan_all_splits(&stream, true);
        // The same hidden text is never a head of its own, even when it conflicts.
        let hidden = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\n\
            GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        scan_all_splits(hidden, false);
        // No trailers: `0`, CRLF, CRLF, then the next head.
        let mut plain = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec();
        plain.extend_from_slice(bad);
        scan_all_splits(&plain, true);
    }

    /// Chunk framing hyper refuses (it closes the connection) stops the scanner, with no
    /// verdict on what follows; what hyper takes (whitespace and extensions after the size,
    /// upper-case hex) is followed to the body's end.
    #[test]
    fn chunk_framing_hyper_refuses_stops_the_scan() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "3\nabc\r\n0\r\n\r\n",     // bare LF after the size
            "3;ext\nabc\r\n0\r\n\r\n", // bare LF after an extension
            "3\r\nabcX\r\n0\r\n\r\n",  // data longer than its size
            "3\r\nabc\n0\r\n\r\n",     // bare LF after data
            "x\r\n0\r\n\r\n",          // no size digit
            "3 x\r\nabc\r\n0\r\n\r\n", // junk after the size's whitespace
            "0\r\nX: 1\rY\r\n\r\n",    // CR without LF in a trailer
            "0\r\n\rX",                // CR without LF at the end
            "11111111111111111\r\n",   // a size past 64 bits
        ] {
            let mut s = Scanner::default();
            s.feed(format!("{head}{body}").as_bytes());
            assert!(s.disabled, "{body:?}");
        }
        for body in [
            "A \t;a=\"b\"\r\n0123456789\r\n0\r\n\r\n",
            "0 \r\nT: 1\r\nU: 2\r\n\r\n",
        ] {
            let mut s = Scanner::default();
            s.feed(format!("{head}{body}").as_bytes());
            assert!(!s.disabled, "{body:?}");
            assert_eq!(s.phase, Phase::Head, "{body:?}");
        }
    }

    #[test]
    fn a_padded_content_length_fails_closed() {
        let pad = " ".repeat(LINE);
        let req = format!("POST / HTTP/1.1\r\nContent-Length:{pad}2\r\n\r\nhi");
        assert!(scan(&[req.as_bytes()]));
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
