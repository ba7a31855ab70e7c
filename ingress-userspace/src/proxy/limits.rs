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

use super::{errors::ProxyError, framing::Scanner};

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
    /// Client connections open at once, all listeners together (`--max-connections`).
    pub max_connections: usize,
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
            max_connections: tokio::sync::Semaphore::MAX_PERMITS,
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
        if !this.scanner.stopped() && this.flag.upgraded.load(Relaxed) {
            // Frames of the new protocol may already sit in the scanner as a "head" (read
            // with the upgrade request): that head never ends, so its timer must go too.
            this.scanner.stop();
            this.head_deadline = None;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match res {
            Poll::Ready(Ok(())) => {
                if this.scanner.feed(&buf.filled()[before..]) {
                    this.flag.conflict.store(true, Relaxed);
                }
                if !this.scanner.head_in_progress() {
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
