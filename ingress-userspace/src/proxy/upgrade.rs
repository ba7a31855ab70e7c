//! Protocol upgrades (WebSocket and any other `Upgrade`): the request goes to the upstream on
//! a dedicated HTTP/1.1 connection; on `101 Switching Protocols` both sides are taken over by
//! hyper and joined with `copy_bidirectional`. Tunnels are tracked by the drain and cut when
//! the drain timeout passes.
use http::HeaderMap;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::{headers::remove_hop_by_hop, Shared};

/// Joins the client's and the upstream's upgraded connections in a tracked task.
pub(crate) fn spawn_tunnel(shared: &Shared, client: OnUpgrade, upstream: OnUpgrade) {
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
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upgraded tunnel ended with an error");
                }
            }
            _ = force.cancelled() => {}
        }
    });
}

/// Headers of a `101` going back to the client: hop-by-hop removed, `Upgrade` kept.
pub fn switching_headers(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers, true);
}
