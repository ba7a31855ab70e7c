//! Protocol upgrades (WebSocket and any other `Upgrade`): the request goes to the upstream on
//! a dedicated HTTP/1.1 connection; on `101 Switching Protocols` both sides are taken over by
//! hyper and joined with `copy_bidirectional`. Tunnels are tracked by the drain and cut when
//! the drain timeout passes, and closed after `idle` without a byte either way (the route's
//! `proxy-read-timeout`, as nginx closes a WebSocket the upstream leaves silent). The
//! request is logged when its tunnel closes.
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::HeaderMap;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use super::{access_log::Completion, headers::remove_hop_by_hop, Shared};

/// The access-log record of an upgraded request: written when its tunnel closes, with the
/// bytes the upstream sent through it and the whole time, as nginx logs a WebSocket, not at
/// the `101`. Rides on the `101` response as an extension to reach the tunnel; whichever of
/// the two lets go of it last writes it.
#[derive(Clone, Default)]
pub(crate) struct TunnelLog(Arc<Mutex<Option<Completion>>>);

impl TunnelLog {
    /// Keeps the request's record until the tunnel closes.
    pub(crate) fn hold(&self, completion: Completion) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(completion);
    }

    /// The tunnel closed after carrying `to_client` bytes from the upstream: log now.
    fn close(&self, to_client: u64) {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = taken {
            c.add_bytes(usize::try_from(to_client).unwrap_or(usize::MAX));
        }
    }
}

/// One side of a tunnel that records, in milliseconds since `start`, when bytes last came in
/// from it, and how many did. Every byte the tunnel moves is read from one side first, so
/// reads alone tell.
struct Active<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
    read: u64,
}

impl<T> Active<T> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.read += (buf.filled().len() - before) as u64;
            this.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Joins the client's and the upstream's upgraded connections in a tracked task; closes
/// both after `idle` without traffic, then writes the request's `log`.
pub(crate) fn spawn_tunnel(
    shared: &Shared,
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    log: TunnelLog,
) {
    let force = shared.drain.force.clone();
    shared.drain.tracker.spawn(async move {
        let (c, u) = tokio::join!(client, upstream);
        let (c, u) = match (c, u) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade did not complete");
                log.close(0);
                return;
            }
        };
        let (start, last) = (Instant::now(), Arc::new(AtomicU64::new(0)));
        let side = |io| Active {
            io,
            start,
            last: last.clone(),
            read: 0,
        };
        let (mut c, mut u) = (side(TokioIo::new(c)), side(TokioIo::new(u)));
        tunnel(&mut c, &mut u, start, &last, idle, &force).await;
        log.close(u.read);
    });
}

/// Copies both ways until either side ends, the drain's deadline, or `idle` without a byte.
async fn tunnel<C, U>(
    c: &mut Active<C>,
    u: &mut Active<U>,
    start: Instant,
    last: &AtomicU64,
    idle: Duration,
    force: &tokio_util::sync::CancellationToken,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(c, u);
    tokio::pin!(copy);
    loop {
        let quiet_until = start + Duration::from_millis(last.load(Relaxed)) + idle;
        tokio::select! {
            r = &mut copy => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upgraded tunnel ended with an error");
                }
                return;
            }
            _ = force.cancelled() => return,
            _ = tokio::time::sleep_until(quiet_until) => {
                let last = start + Duration::from_millis(last.load(Relaxed));
                if last + idle <= Instant::now() {
                    tracing::debug!(?idle, "upgraded tunnel idle; closing it");
                    return;
                }
            }
        }
    }
}

/// Headers of a `101` going back to the client: hop-by-hop removed, `Upgrade` kept.
pub fn switching_headers(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers, true);
}
