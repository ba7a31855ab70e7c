//! A deadline for a new connection to show which protocol it speaks.
//!
//! hyper's header-read timeout starts once the HTTP/1 parser runs, but the automatic
//! HTTP/1-or-HTTP/2 detection before it waits for the first bytes with no timer: a client that
//! connects and sends nothing, or stalls inside the 24-byte HTTP/2 preface, would hold a
//! connection forever. [`Preface`] watches the bytes read until the protocol is decided (24
//! bytes seen, or bytes that cannot start the HTTP/2 preface) and signals it; the connection
//! is cut if that does not happen within the header-read timeout.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wraps a connection and reports when its first bytes have decided the protocol.
pub struct Preface<S> {
    inner: S,
    seen: usize,
    decided: Option<oneshot::Sender<()>>,
}

/// Resolves when the protocol is decided or the connection is gone.
pub struct Decided(oneshot::Receiver<()>);

impl<S> Preface<S> {
    /// Wraps `inner`; the [`Decided`] half goes to whoever enforces the deadline.
    pub fn new(inner: S) -> (Self, Decided) {
        let (tx, rx) = oneshot::channel();
        let p = Preface {
            inner,
            seen: 0,
            decided: Some(tx),
        };
        (p, Decided(rx))
    }

    fn observe(&mut self, bytes: &[u8]) {
        if self.decided.is_none() || bytes.is_empty() {
            return;
        }
        let end = (self.seen + bytes.len()).min(H2_PREFACE.len());
        let expected = &H2_PREFACE[self.seen..end];
        let diverged = bytes[..end - self.seen] != *expected;
        self.seen = end;
        if diverged || self.seen == H2_PREFACE.len() {
            if let Some(tx) = self.decided.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Decided {
    /// Completes only if `timeout` passes before the protocol is decided; never otherwise.
    pub async fn expired(self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.0).await.is_ok() {
            std::future::pending::<()>().await;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Preface<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if new.is_empty() {
                // EOF: nothing more will come; let the connection end on its own.
                if let Some(tx) = this.decided.take() {
                    let _ = tx.send(());
                }
            } else {
                this.observe(new);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Preface<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decided_after(chunks: &[&[u8]]) -> bool {
        let (mut p, mut d) = Preface::new(());
        for c in chunks {
            p.observe(c);
        }
        d.0.try_recv().is_ok()
    }

    #[test]
    fn http1_is_decided_by_its_first_byte() {
        assert!(decided_after(&[b"G"]));
        assert!(decided_after(&[b"GET / HTTP/1.1\r\n"]));
    }

    #[test]
    fn h2_preface_is_decided_only_when_complete() {
        assert!(!decided_after(&[]));
        assert!(!decided_after(&[b"PRI * HT"]));
        assert!(!decided_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r"]));
        assert!(decided_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]));
        assert!(decided_after(&[H2_PREFACE, b"\x00\x00\x00\x04"]));
    }

    #[test]
    fn a_prefix_that_diverges_from_the_h2_preface_decides() {
        assert!(decided_after(&[b"PRI * HT", b"XX"]));
        assert!(decided_after(&[b"PRX"]));
    }
}
