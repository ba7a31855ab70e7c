//! Userspace fallback: copies bytes both ways when the kernel splice is unavailable.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::splice::Ending;
use super::watch::Side;

/// Copy buffer per direction.
const BUF: usize = 64 * 1024;

/// Result of one copied connection.
#[derive(Clone, Copy, Debug)]
pub struct CopyReport {
    pub ending: Ending,
    /// Bytes client -> backend (ClientHello included) and backend -> client.
    pub client_bytes: u64,
    pub backend_bytes: u64,
}

/// Copies until both sides sent FIN (each FIN passed on with `shutdown`), or until an error,
/// after which both sockets are reset (SO_LINGER 0). Bytes delivered before an error are
/// still reported.
pub async fn copy(mut client: TcpStream, mut backend: TcpStream) -> CopyReport {
    let mut c = Counted::new(&mut client);
    let mut b = Counted::new(&mut backend);
    let res = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, BUF, BUF).await;
    // What each side was written is what came from the other.
    let (client_bytes, backend_bytes) = (b.written, c.written);
    let ending = match res {
        Ok(_) => Ending::Graceful,
        Err(e) => {
            // The side whose socket failed; when neither read nor write saw it (it cannot
            // happen with plain sockets), the backend.
            let side = if c.failed {
                Side::Client
            } else {
                Side::Backend
            };
            tracing::debug!(error = %e, ?side, "passthrough copy ended with an error; resetting both sides");
            for s in [&client, &backend] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            Ending::Reset(side)
        }
    };
    CopyReport {
        ending,
        client_bytes,
        backend_bytes,
    }
}

/// A socket that counts the bytes written to it and notes whether any call on it failed.
struct Counted<'a> {
    io: &'a mut TcpStream,
    written: u64,
    failed: bool,
}

impl<'a> Counted<'a> {
    fn new(io: &'a mut TcpStream) -> Self {
        Counted {
            io,
            written: 0,
            failed: false,
        }
    }

    fn note<T>(&mut self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &p {
            self.failed = true;
        }
        p
    }
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut *this.io).poll_read(cx, buf);
        this.note(p)
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut *this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &p {
            this.written += *n as u64;
        }
        this.note(p)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut *this.io).poll_flush(cx);
        this.note(p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut *this.io).poll_shutdown(cx);
        this.note(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pair of connected sockets: (the end the test holds, the end given to `copy`).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    /// A reset reports the bytes moved before it and the side that reset.
    #[tokio::test]
    async fn a_reset_keeps_the_byte_counts_and_names_its_side() {
        for side in [Side::Client, Side::Backend] {
            let (mut client, client_end) = pair().await;
            let (mut backend, backend_end) = pair().await;
            let copying = tokio::spawn(copy(client_end, backend_end));
            client.write_all(b"hello").await.expect("write");
            let mut got = [0u8; 5];
            backend.read_exact(&mut got).await.expect("read");
            backend.write_all(b"abc").await.expect("write");
            let mut got = [0u8; 3];
            client.read_exact(&mut got).await.expect("read");
            let resetting = match side {
                Side::Client => client,
                Side::Backend => backend,
            };
            socket2::SockRef::from(&resetting)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
            drop(resetting);
            let report = tokio::time::timeout(Duration::from_secs(5), copying)
                .await
                .expect("copy ends")
                .expect("join");
            assert!(
                matches!(report.ending, Ending::Reset(s) if s == side),
                "{side:?}: {report:?}"
            );
            assert_eq!((report.client_bytes, report.backend_bytes), (5, 3));
        }
    }
}
