//! Userspace fallback: copies bytes both ways when the kernel splice is unavailable.
use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::splice::{Ending, Quiet};
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

/// How often a half-closed pair is checked for bytes from the side still open.
const HALF_OPEN_CHECK: Duration = Duration::from_secs(5);

/// Copies until both sides sent FIN (each FIN passed on with `shutdown`), or until an error,
/// after which both sockets are reset (SO_LINGER 0). So is a pair one side has closed once
/// the other sent nothing for `half_open_idle` (see [`super::splice::HALF_OPEN_IDLE`]).
/// Bytes delivered before an error are still reported.
pub async fn copy(
    mut client: TcpStream,
    mut backend: TcpStream,
    half_open_idle: Duration,
) -> CopyReport {
    let sides = [Progress::default(), Progress::default()];
    let mut c = Counted::new(&mut client, &sides[0]);
    let mut b = Counted::new(&mut backend, &sides[1]);
    let res = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, BUF, BUF) => r.map_err(Some),
        () = half_open(&sides, half_open_idle) => Err(None),
    };
    let failed = (c.failed, b.failed);
    // What each side was written is what came from the other.
    let (client_bytes, backend_bytes) = (
        sides[1].written.load(Relaxed),
        sides[0].written.load(Relaxed),
    );
    let ending = match res {
        Ok(_) => Ending::Graceful,
        Err(None) => {
            tracing::debug!("passthrough copy: half-closed and idle; resetting both sides");
            for s in [&client, &backend] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            Ending::HalfOpenIdle
        }
        Err(Some(e)) => {
            // The side whose socket failed; when neither read nor write saw it (it cannot
            // happen with plain sockets), the backend.
            let side = if failed.0 {
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

/// Returns once one socket of the pair was shut (the FIN of the other passed on) and the
/// direction still open wrote nothing for `idle`.
async fn half_open(sides: &[Progress; 2], idle: Duration) {
    let mut quiet = Quiet::default();
    loop {
        tokio::time::sleep(HALF_OPEN_CHECK.min(idle)).await;
        let open = match (sides[0].shut.load(Relaxed), sides[1].shut.load(Relaxed)) {
            (true, false) => &sides[1],
            (false, true) => &sides[0],
            _ => {
                quiet.reset();
                continue;
            }
        };
        let written = open.written.load(Relaxed);
        if quiet.for_how_long(written, std::time::Instant::now()) >= idle {
            return;
        }
    }
}

/// What was written to one socket, and whether its write side was shut.
#[derive(Default)]
struct Progress {
    written: AtomicU64,
    shut: AtomicBool,
}

/// A socket that counts the bytes written to it and notes whether any call on it failed.
struct Counted<'a> {
    io: &'a mut TcpStream,
    progress: &'a Progress,
    failed: bool,
}

impl<'a> Counted<'a> {
    fn new(io: &'a mut TcpStream, progress: &'a Progress) -> Self {
        Counted {
            io,
            progress,
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
            this.progress.written.fetch_add(*n as u64, Relaxed);
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
        if let Poll::Ready(Ok(())) = &p {
            this.progress.shut.store(true, Relaxed);
        }
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
            let copying = tokio::spawn(copy(client_end, backend_end, Duration::from_secs(60)));
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

    /// A side that closed leaves the pair half-open: the other may still send (a response
    /// after the request's FIN), but once it sends nothing for the idle time both are reset.
    #[tokio::test]
    async fn a_half_closed_pair_is_reset_once_the_open_side_goes_quiet() {
        let (mut client, client_end) = pair().await;
        let (mut backend, backend_end) = pair().await;
        let idle = Duration::from_millis(1500);
        let copying = tokio::spawn(copy(client_end, backend_end, idle));
        // The backend closes; the client stays open and keeps sending for a while.
        backend.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("FIN passed on");
        let started = tokio::time::Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            client.write_all(b"x").await.expect("write");
        }
        let mut four = [0u8; 4];
        backend
            .read_exact(&mut four)
            .await
            .expect("bytes after the FIN");
        assert!(
            !copying.is_finished(),
            "reset while the open side was sending"
        );
        let report = tokio::time::timeout(Duration::from_secs(15), copying)
            .await
            .expect("a quiet half-open pair is ended")
            .expect("join");
        assert_eq!(report.ending, Ending::HalfOpenIdle);
        assert!(started.elapsed() >= Duration::from_millis(2800 + 1500));
        assert_eq!((report.client_bytes, report.backend_bytes), (4, 0));
        let mut rest = [0u8; 1];
        assert!(
            matches!(backend.read(&mut rest).await, Ok(0) | Err(_)),
            "backend side closed"
        );
    }
}
