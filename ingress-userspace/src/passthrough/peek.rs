//! Reading the ClientHello without consuming it, and replaying already-read bytes.
//!
//! The hello is only peeked (`MSG_PEEK`): it stays in the socket's receive queue, so the
//! kernel splice forwards it to the backend itself and the TLS terminator reads it as if
//! nothing happened. [`Replay`] covers callers that did consume bytes.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use rustix::net::RecvFlags;
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::sni::{parse_client_hello, HelloError, HelloParse};

/// Bounds on reading one ClientHello.
#[derive(Clone, Copy, Debug)]
pub struct PeekLimits {
    /// Bytes buffered at most (records and headers included).
    pub max_bytes: usize,
    /// Time allowed from accept to a complete ClientHello.
    pub timeout: Duration,
}

impl Default for PeekLimits {
    fn default() -> Self {
        PeekLimits {
            max_bytes: 16 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A complete ClientHello, still unread in the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// It names this host (lower-cased).
    Sni(String),
    /// It names no host.
    NoSni,
}

/// Why no ClientHello could be read.
#[derive(Debug, Error)]
pub enum PeekError {
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("client closed the connection after {0} bytes, before a complete ClientHello")]
    Closed(usize),
    #[error("ClientHello exceeds {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Invalid(#[from] HelloError),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// The first bytes of a connection, peeked into the start of the ClientHello buffer.
#[derive(Debug)]
pub struct FirstBytes {
    buf: Vec<u8>,
    len: usize,
}

/// Waits for the first bytes (or the end of the stream) and peeks as many as the hello
/// buffer's first size takes, consuming nothing: a ClientHello that arrived whole is read
/// by this one call, not by a wait for a byte and then a second peek.
pub async fn first_bytes(stream: &TcpStream, max_bytes: usize) -> io::Result<FirstBytes> {
    // Most hellos fit in 2 KiB; the buffer grows only when a peek fills it.
    let mut buf = vec![0u8; max_bytes.min(2048)];
    let len = stream.peek(&mut buf).await?;
    Ok(FirstBytes { buf, len })
}

/// Peeks at `stream`, from `first` on, until the buffered bytes hold a complete ClientHello,
/// within `limits`.
pub async fn peek_client_hello(
    stream: &TcpStream,
    first: FirstBytes,
    limits: PeekLimits,
) -> Result<Hello, PeekError> {
    tokio::time::timeout(limits.timeout, peek_loop(stream, first, limits.max_bytes))
        .await
        .map_err(|_| PeekError::Timeout(limits.timeout))?
}

/// What `n` peeked bytes at the start of `buf` say: a verdict, or `None` when more bytes
/// are needed (then `buf` has grown if the peek filled it).
fn judge(buf: &mut Vec<u8>, n: usize, max_bytes: usize) -> Option<Result<Hello, PeekError>> {
    if n == 0 {
        return Some(Err(PeekError::Closed(0)));
    }
    match parse_client_hello(&buf[..n]) {
        HelloParse::Found(name) => Some(Ok(Hello::Sni(name))),
        HelloParse::NoSni => Some(Ok(Hello::NoSni)),
        HelloParse::Invalid(e) => Some(Err(e.into())),
        HelloParse::Incomplete if n == buf.len() && n < max_bytes => {
            buf.resize((buf.len() * 2).min(max_bytes), 0);
            None
        }
        HelloParse::Incomplete if n == max_bytes => Some(Err(PeekError::TooLarge(max_bytes))),
        HelloParse::Incomplete => None,
    }
}

async fn peek_loop(
    stream: &TcpStream,
    first: FirstBytes,
    max_bytes: usize,
) -> Result<Hello, PeekError> {
    let FirstBytes { mut buf, len } = first;
    if let Some(verdict) = judge(&mut buf, len, max_bytes) {
        return verdict;
    }
    loop {
        let ready = stream.ready(tokio::io::Interest::READABLE).await?;
        let mut seen = 0;
        let res = stream.try_io(tokio::io::Interest::READABLE, || loop {
            let (n, _) =
                rustix::net::recv(stream, &mut buf[..], RecvFlags::PEEK | RecvFlags::DONTWAIT)?;
            seen = n;
            let size = buf.len();
            match judge(&mut buf, n, max_bytes) {
                Some(verdict) => return Ok(verdict),
                // The peek filled the buffer, which has grown: more may be queued already.
                None if buf.len() > size => {}
                // Wait for the next segment: WouldBlock clears the readiness so the next
                // arrival wakes us (no busy loop on data that is already there).
                None => return Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match res {
            Ok(verdict) => return verdict,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Closed flags are sticky in tokio's readiness: an EOF after a partial hello
                // is seen here instead of waiting for the timeout.
                if ready.is_read_closed() && seen > 0 {
                    return Err(PeekError::Closed(seen));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pin_project! {
    /// A stream that yields `prefix` before reading from `inner`; writes go to `inner`.
    #[derive(Debug)]
    pub struct Replay<S> {
        prefix: Bytes,
        #[pin]
        inner: S,
    }
}

impl<S> Replay<S> {
    /// Replays `prefix` (bytes already read from `inner`) ahead of `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Replay { prefix, inner }
    }

    /// The bytes not yet replayed.
    pub fn pending(&self) -> &[u8] {
        &self.prefix
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The unreplayed prefix and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replay_yields_prefix_then_inner_and_writes_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Replay::new(Bytes::from_static(b"hello "), a);
        b.write_all(b"world").await.unwrap();
        b.shutdown().await.unwrap();
        let mut got: Vec<u8> = Vec::new();
        let mut small = [0u8; 4];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), r.read(&mut small))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend(&small[..n]);
        }
        assert_eq!(got, b"hello world");
        r.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
