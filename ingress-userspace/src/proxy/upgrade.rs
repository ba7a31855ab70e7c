//! Protocol upgrades (WebSocket and any other `Upgrade`): the request goes to the upstream on
//! a dedicated HTTP/1.1 connection; on `101 Switching Protocols` both sides are taken over by
//! hyper and joined with `copy_bidirectional`. Tunnels are tracked by the drain and cut when
//! the drain timeout passes, and closed after `idle` without a byte either way (the route's
//! `proxy-read-timeout`, as nginx closes a WebSocket the upstream leaves silent).
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
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

use super::{headers::remove_hop_by_hop, Shared};

/// One side of a tunnel that records, in milliseconds since `start`, when bytes last came in
/// from it. Every byte the tunnel moves is read from one side first, so reads alone tell.
struct Active<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
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
/// both after `idle` without traffic.
pub(crate) fn spawn_tunnel(
    shared: &Shared,
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
) {
    let force = shared.drain.force.clone();
    shared.drain.tracker.spawn(async move {
        let (c, u) = tokio::join!(client, upstream);
        let (c, u) = match (c, u) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade did not complete");
                return;
            }
        };
        let (start, last) = (Instant::now(), Arc::new(AtomicU64::new(0)));
        let side = |io| Active {
            io,
            start,
            last: last.clone(),
        };
        let (mut c, mut u) = (side(TokioIo::new(c)), side(TokioIo::new(u)));
        let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
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
    });
}

/// Headers of a `101` going back to the client: hop-by-hop removed, `Upgrade` kept.
pub fn switching_headers(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers, true);
}
