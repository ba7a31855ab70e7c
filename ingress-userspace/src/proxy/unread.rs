//! Request bodies the proxy answers before reading (413, 401, redirects, 404, ...).
//!
//! Over HTTP/1.1 hyper closes the connection after such a response, and clients read the
//! response first. Over HTTP/2 dropping the body resets the stream while the client may still
//! be uploading, and some clients (curl 7.88) then report a stream error instead of the
//! response. So an HTTP/2 body the pipeline did not take is drained in the background, bounded
//! in bytes and time, and the stream ends normally; past the bounds it is reset as before.
use std::{
    ops::{Deref, DerefMut},
    time::Duration,
};

use http::{Request, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Most bytes read and thrown away from one unread HTTP/2 request body.
const DRAIN_BYTES: u64 = 4 << 20;
/// Longest time spent draining one unread HTTP/2 request body.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A client request that drains its unread HTTP/2 body when dropped.
pub(crate) struct Unread(Option<Request<Incoming>>);

impl Unread {
    /// Wraps a request fresh from hyper.
    pub(crate) fn new(req: Request<Incoming>) -> Self {
        Unread(Some(req))
    }

    /// Takes the request out: its body is now the caller's to read.
    pub(crate) fn into_inner(mut self) -> Request<Incoming> {
        self.0.take().expect("Unread holds its request until taken")
    }
}

impl Deref for Unread {
    type Target = Request<Incoming>;

    fn deref(&self) -> &Request<Incoming> {
        self.0
            .as_ref()
            .expect("Unread holds its request until taken")
    }
}

impl DerefMut for Unread {
    fn deref_mut(&mut self) -> &mut Request<Incoming> {
        self.0
            .as_mut()
            .expect("Unread holds its request until taken")
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let Some(req) = self.0.take() else { return };
        if req.version() != Version::HTTP_2 || hyper::body::Body::is_end_stream(req.body()) {
            return;
        }
        // Outside a runtime (never in the proxy) the body is simply dropped: a reset stream.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(req.into_body()));
        }
    }
}

/// Reads and discards `body` until it ends, errs, or passes the bounds.
async fn drain(mut body: Incoming) {
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Some(d) = frame.data_ref() {
                seen += d.len() as u64;
                if seen > DRAIN_BYTES {
                    tracing::debug!(seen, "unread request body too large to drain");
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIME, read).await.is_err() {
        tracing::debug!("unread request body still coming after the drain time");
    }
}
