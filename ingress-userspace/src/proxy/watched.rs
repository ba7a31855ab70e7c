//! A client connection whose inbound bytes are shown to a watcher before hyper parses them:
//! the request-smuggling scanner ([`super::limits`]) and the protocol-preface deadline
//! ([`super::preface`]) both see the stream this way, without buffering or altering it.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees every chunk read from the connection, in order.
pub trait ReadWatcher {
    /// `bytes` were just read; an empty slice means end of stream.
    fn saw(&mut self, bytes: &[u8]);
}

/// `inner` with its reads shown to `watcher`; writes pass straight through.
#[derive(Debug)]
pub struct Watched<S, W> {
    inner: S,
    watcher: W,
}

impl<S, W> Watched<S, W> {
    /// Wraps `inner`.
    pub fn new(inner: S, watcher: W) -> Self {
        Watched { inner, watcher }
    }
}

impl<S: AsyncRead + Unpin, W: ReadWatcher + Unpin> AsyncRead for Watched<S, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.watcher.saw(&buf.filled()[before..]);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin, W: Unpin> AsyncWrite for Watched<S, W> {
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
