//! Body types of the proxy: what goes to the client (a fixed body or an upstream stream guarded
//! by the read timeout) and what goes to an upstream (the client stream guarded by the body-size
//! limit and the send timeout). Enums rather than boxed trait objects: no allocation per request.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{access_log::Completion, unread::ClientBody, upstream::pool::PoolReturn};

/// Error type of the proxy's bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body stream was cut off by the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The request body grew past `proxy-body-size`.
    #[error("request body larger than the limit")]
    TooLarge,
    /// The client sent nothing of its body for longer than the send timeout.
    #[error("request body stalled past the send timeout")]
    ClientTimeout,
    /// The upstream sent nothing of its body for longer than the read timeout.
    #[error("upstream response stalled past the read timeout")]
    UpstreamTimeout,
    /// The client's body broke: bad chunked framing, or the client left mid-body.
    #[error("client request body broken or cut short")]
    ClientBody,
}

impl BodyError {
    /// Finds a `BodyError` in the source chain of `err`.
    pub fn find(err: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(b) = e.downcast_ref::<BodyError>() {
                return Some(*b);
            }
            cur = e.source();
        }
        None
    }
}

pin_project! {
    /// The body of a response sent to a client.
    pub struct ResponseBody {
        #[pin]
        kind: RespKind,
        completion: Option<Completion>,
    }
}

pin_project! {
    #[project = RespProj]
    enum RespKind {
        Full { data: Option<Bytes> },
        Upstream {
            #[pin]
            body: Incoming,
            #[pin]
            timer: Sleep,
            read_timeout: Duration,
            rearm: bool,
            ret: Option<PoolReturn>,
        },
    }
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody {
            kind: RespKind::Full { data: None },
            completion: None,
        }
    }

    /// A fixed body.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        ResponseBody {
            kind: RespKind::Full { data },
            completion: None,
        }
    }

    /// An upstream body: each wait for data is bounded by `read_timeout`; `ret` gives the
    /// connection back to its pool once the body has been read to its end.
    pub(crate) fn upstream(
        body: Incoming,
        read_timeout: Duration,
        ret: Option<PoolReturn>,
    ) -> Self {
        let mut ret = ret;
        if body.is_end_stream() {
            if let Some(r) = ret.as_mut() {
                r.mark_ended();
            }
        }
        ResponseBody {
            kind: RespKind::Upstream {
                body,
                timer: tokio::time::sleep(read_timeout),
                read_timeout,
                rearm: false,
                ret,
            },
            completion: None,
        }
    }

    /// Attaches the access-log and metrics record emitted when the body is done.
    pub(crate) fn set_completion(&mut self, completion: Completion) {
        self.completion = Some(completion);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = match this.kind.project() {
            RespProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RespProj::Upstream {
                mut body,
                mut timer,
                read_timeout,
                rearm,
                ret,
            } => {
                if *rearm {
                    // Time spent while the client was not asking for data is not the upstream's.
                    timer.as_mut().reset(Instant::now() + *read_timeout);
                    *rearm = false;
                }
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        *rearm = true;
                        if body.is_end_stream() {
                            if let Some(r) = ret.as_mut() {
                                r.mark_ended();
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(None) => {
                        if let Some(r) = ret.as_mut() {
                            r.mark_ended();
                        }
                        Poll::Ready(None)
                    }
                    Poll::Pending => match timer.poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Some(Err(Box::new(BodyError::UpstreamTimeout) as BoxError)))
                        }
                        Poll::Pending => Poll::Pending,
                    },
                }
            }
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&polled, this.completion.as_mut()) {
            if let Some(d) = frame.data_ref() {
                c.add_bytes(d.len());
            }
        }
        if let (Poll::Ready(Some(Err(_))), Some(c)) = (&polled, this.completion.as_mut()) {
            c.mark_aborted();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RespKind::Full { data } => data.is_none(),
            RespKind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RespKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RespKind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// The body of a request sent to an upstream. `Unpin` (the timer is boxed, only for
/// requests that have a body), as hyper's HTTP/2 client requires.
#[derive(Debug)]
pub enum RequestBody {
    Full {
        data: Option<Bytes>,
    },
    Client {
        body: ClientBody,
        limit: u64,
        seen: u64,
        timer: Pin<Box<Sleep>>,
        send_timeout: Duration,
        rearm: bool,
        progress: Arc<BodyProgress>,
    },
}

/// How far the client's body has got, for the upstream response wait.
#[derive(Debug, Default)]
pub struct BodyProgress {
    finished: AtomicBool,
    frames: AtomicU64,
}

impl BodyProgress {
    /// Frames handed to the upstream connection so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Relaxed)
    }

    /// Whether the whole body has been handed to the upstream connection.
    pub fn finished(&self) -> bool {
        self.finished.load(Relaxed)
    }
}

impl RequestBody {
    /// An empty body.
    pub fn empty() -> Self {
        RequestBody::Full { data: None }
    }

    /// A fixed body.
    pub fn full(data: Bytes) -> Self {
        RequestBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// The client's body, cut off past `limit` bytes or after `send_timeout` without data.
    /// Also returns the progress handle (`None` for an empty body).
    pub fn client(
        body: ClientBody,
        limit: Option<u64>,
        send_timeout: Duration,
    ) -> (Self, Option<Arc<BodyProgress>>) {
        if body.is_end_stream() {
            return (RequestBody::empty(), None);
        }
        let progress = Arc::new(BodyProgress::default());
        let body = RequestBody::Client {
            body,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            timer: Box::pin(tokio::time::sleep(send_timeout)),
            send_timeout,
            rearm: false,
            progress: progress.clone(),
        };
        (body, Some(progress))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Client {
                body,
                limit,
                seen,
                timer,
                send_timeout,
                rearm,
                progress,
            } => {
                if *rearm {
                    timer.as_mut().reset(Instant::now() + *send_timeout);
                    *rearm = false;
                }
                match Pin::new(body.get_mut()).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                            if *seen > *limit {
                                return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge))));
                            }
                        }
                        *rearm = true;
                        progress.frames.fetch_add(1, Relaxed);
                        if body.is_end_stream() {
                            progress.finished.store(true, Relaxed);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The client's fault, not the upstream's: a 400, and no mark on the
                        // endpoint (the cause is kept in the debug log only).
                        tracing::debug!(error = %e, "client request body failed");
                        Poll::Ready(Some(Err(Box::new(BodyError::ClientBody))))
                    }
                    Poll::Ready(None) => {
                        progress.finished.store(true, Relaxed);
                        Poll::Ready(None)
                    }
                    Poll::Pending => match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Some(Err(Box::new(BodyError::ClientTimeout))))
                        }
                        Poll::Pending => Poll::Pending,
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full { data } => data.is_none(),
            RequestBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Client { body, .. } => body.size_hint(),
        }
    }
}
