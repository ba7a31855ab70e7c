//! Client request bodies the proxy stops reading: answered early by the proxy (413, 401,
//! redirects, 404, ...) or by the upstream (which may answer before it read the body).
//!
//! Over HTTP/1.1 hyper closes the connection after such a response, and clients read the
//! response first. Over HTTP/2 dropping the body resets the stream while the client may still
//! be uploading, and some clients (curl 7.88) then report a stream error instead of the
//! response. So an HTTP/2 body dropped before its end is drained in the background, bounded in
//! bytes and time, and the stream ends normally; past the bounds it is reset as before.
use std::time::Duration;

use http::Version;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming, SizeHint};

/// Most bytes read and thrown away from one unread HTTP/2 request body.
const DRAIN_BYTES: u64 = 4 << 20;
/// Longest time spent draining one unread HTTP/2 request body.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A client's request body that drains itself when dropped before its end (HTTP/2 only).
#[derive(Debug)]
pub struct ClientBody {
    body: Option<Incoming>,
    h2: bool,
}

impl ClientBody {
    /// Wraps the body of a request of HTTP `version`.
    pub fn new(body: Incoming, version: Version) -> Self {
        ClientBody {
            body: Some(body),
            h2: version == Version::HTTP_2,
        }
    }

    /// The body, to read from.
    pub fn get_mut(&mut self) -> &mut Incoming {
        self.body
            .as_mut()
            .expect("ClientBody holds its body until dropped")
    }

    /// What the client declared of its length.
    pub fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }

    /// Whether the client has sent all of it.
    pub fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else { return };
        if !self.h2 || body.is_end_stream() {
            return;
        }
        // Outside a runtime (never in the proxy) the body is simply dropped: a reset stream.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(body));
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
