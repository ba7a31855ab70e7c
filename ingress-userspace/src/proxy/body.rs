//! Body types of the proxy: what goes to the client (a fixed body or an upstream stream guarded
//! by the read timeout) and what goes to an upstream (the client stream guarded by the body-size
//! limit and the send timeout). Enums rather than boxed trait objects: no allocation per request.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed},
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

use super::{
    access_log::Completion, replay::Replay, unread::ClientBody, upstream::pool::PoolReturn,
};

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
    /// An HTTP/2 client granted no flow-control window for the response for longer than the
    /// send timeout.
    #[error("client took none of the response past the send timeout")]
    ClientStalled,
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
        // `limit-rate`: boxed, as only the routes that set it pay for it.
        pace: Option<Box<Pace>>,
    }
}

/// Sends a body no faster than a rate, as nginx's `limit_rate`: by `t` seconds after the
/// start, at most `after + rate * (t + 1)` bytes have gone (nginx also grants the first
/// second's worth at once). Data frames are cut into pieces that fit what is allowed, so a
/// large upstream chunk trickles out instead of leaving in bursts.
#[derive(Debug)]
struct Pace {
    rate: crate::snapshot::SendRate,
    start: Instant,
    sent: u64,
    /// Data taken from the body and not yet sent.
    held: Option<Bytes>,
    sleep: Pin<Box<Sleep>>,
}

impl Pace {
    /// Bytes that may still go now.
    fn budget(&self, now: Instant) -> u64 {
        let secs = now.saturating_duration_since(self.start).as_secs_f64() + 1.0;
        let allowed = self.rate.after as f64 + self.rate.bytes_per_sec as f64 * secs;
        (allowed as u64).saturating_sub(self.sent)
    }

    /// When `bytes` more may go.
    fn when(&self, bytes: u64) -> Instant {
        let target = (self.sent + bytes).saturating_sub(self.rate.after) as f64;
        let secs = (target / self.rate.bytes_per_sec.max(1) as f64 - 1.0).max(0.0);
        self.start + Duration::from_secs_f64(secs.min(1e9))
    }

    fn poll(
        &mut self,
        mut kind: Pin<&mut RespKind>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let budget = self.budget(Instant::now());
            if let Some(data) = self.held.as_mut() {
                let len = data.len();
                if budget == 0 {
                    // Wait for a piece of a tenth of a second's worth (at least 1 KiB).
                    let piece = (self.rate.bytes_per_sec / 10).max(1024).min(len as u64);
                    let at = self.when(piece);
                    self.sleep.as_mut().reset(at);
                    std::task::ready!(self.sleep.as_mut().poll(cx));
                    continue;
                }
                let n = usize::try_from(budget).unwrap_or(usize::MAX).min(len);
                let piece = data.split_to(n);
                if n == len {
                    self.held = None;
                }
                self.sent += n as u64;
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            match std::task::ready!(poll_kind(kind.as_mut(), cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => self.held = Some(data),
                    // Trailers.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
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
            // The request body's progress, told of every frame relayed back.
            request: Option<Arc<BodyProgress>>,
        },
        // An upstream body shared with its stall watchdog (`guard_client_stalls`).
        Guarded { shared: Arc<StallShared> },
        // A body compressed on the way (`use-gzip`, `enable-brotli`).
        Compressed { inner: Pin<Box<RespKind>>, encoder: Box<super::compression::Encoder> },
    }
}

/// An upstream body sent to an HTTP/2 client, and when its last chunk was handed over.
///
/// hyper polls a response body for its next chunk only once the previous one has been sent,
/// and waits for the stream's flow-control window before sending it. A client that grants no
/// window stops the polling altogether, so the body cannot time the stall itself (the
/// connection's `SendDeadline` does not see it either: the socket is writable). A watchdog
/// task does, and drops the upstream body when the send timeout has passed: the upstream
/// connection or stream is released, and the client's stream is reset when it is next polled.
/// The watchdog starts with the first chunk that has more after it (a response sent in one
/// chunk needs none) and stops as soon as the body ends or is dropped.
pub struct StallShared {
    state: std::sync::Mutex<StallState>,
}

struct StallState {
    /// `None` once finished or cut off.
    body: Option<Pin<Box<RespKind>>>,
    /// What is left of an upstream chunk larger than [`PIECE`].
    rest: Option<Bytes>,
    /// Set when a chunk was handed to hyper, cleared when hyper asks for the next one.
    handed_at: Option<Instant>,
    /// The watchdog cut the body off.
    cut: bool,
    timeout: Duration,
    /// Held while a watchdog runs: dropping it (body ended, or dropped with this state)
    /// stops the watchdog at once instead of at its next check.
    watchdog: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Most bytes handed to hyper at once from a guarded body (one HTTP/2 frame at the default
/// size): hyper asks for the next piece once this one has window, so the time between asks
/// measures the client's progress, whatever the size of the upstream's chunks.
const PIECE: usize = 16 * 1024;

impl StallShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, StallState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poll_frame(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut st = self.lock();
        st.handed_at = None;
        let polled = if let Some(rest) = st.rest.take() {
            Poll::Ready(Some(Ok(Frame::data(rest))))
        } else if let Some(body) = st.body.as_mut() {
            poll_kind(body.as_mut(), cx)
        } else {
            return Poll::Ready(
                st.cut
                    .then(|| Err(Box::new(BodyError::ClientStalled) as BoxError)),
            );
        };
        let polled = match polled {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > PIECE {
                        st.rest = Some(data.split_off(PIECE));
                    }
                    Frame::data(data)
                }
                Err(frame) => frame,
            }))),
            other => other,
        };
        if polled.is_ready() {
            let ended = match &polled {
                Poll::Ready(Some(Ok(_))) => st.body.as_ref().is_none_or(|b| kind_is_end_stream(b)),
                _ => true,
            };
            if ended {
                // A last chunk gives its upstream connection back now, not once the client
                // has taken it.
                st.body = None;
            }
        }
        if matches!(polled, Poll::Ready(Some(Ok(_)))) && (st.rest.is_some() || st.body.is_some()) {
            st.handed_at = Some(Instant::now());
            if st.watchdog.is_none() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                st.watchdog = Some(tx);
                tokio::spawn(watch_stalls(Arc::downgrade(self), st.timeout, rx));
            }
        } else if polled.is_ready() {
            // Nothing left to watch.
            st.watchdog = None;
        }
        polled
    }
}

/// Watches a guarded body: drops it once a chunk has waited `timeout` for the client.
async fn watch_stalls(
    shared: std::sync::Weak<StallShared>,
    timeout: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut next = Instant::now() + timeout;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = &mut stop => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let cut = {
            let mut st = shared.lock();
            if st.body.is_none() && st.rest.is_none() {
                return;
            }
            match st.handed_at {
                Some(at) if at.elapsed() >= timeout => {
                    st.cut = true;
                    st.watchdog = None;
                    st.rest = None;
                    Some(st.body.take())
                }
                Some(at) => {
                    next = at + timeout;
                    None
                }
                None => {
                    next = Instant::now() + timeout;
                    None
                }
            }
        };
        if let Some(body) = cut {
            tracing::info!(
                ?timeout,
                "HTTP/2 client took none of the response past the send timeout; upstream body dropped"
            );
            drop(body);
            return;
        }
    }
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody {
            kind: RespKind::Full { data: None },
            completion: None,
            pace: None,
        }
    }

    /// A fixed body.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        ResponseBody {
            kind: RespKind::Full { data },
            completion: None,
            pace: None,
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
                request: None,
            },
            completion: None,
            pace: None,
        }
    }

    /// Tells the request body's `progress` of every frame of this upstream body, so a client
    /// quiet on its side of a stream that flows the other way (a gRPC subscription) is not
    /// cut off by the send timeout.
    pub(crate) fn answering(mut self, progress: Option<Arc<BodyProgress>>) -> Self {
        if let RespKind::Upstream { request, .. } = &mut self.kind {
            *request = progress;
        }
        self
    }

    /// For a response to an HTTP/2 client: an upstream body is cut off (and its upstream
    /// connection or stream released) when the client grants it no flow-control window for
    /// `timeout`, as nginx's `send_timeout` does. Fixed bodies are left as they are.
    pub(crate) fn guard_client_stalls(self, timeout: Duration) -> Self {
        let ResponseBody {
            kind,
            completion,
            pace,
        } = self;
        if !matches!(
            kind,
            RespKind::Upstream { .. } | RespKind::Compressed { .. }
        ) {
            return ResponseBody {
                kind,
                completion,
                pace,
            };
        }
        let shared = Arc::new(StallShared {
            state: std::sync::Mutex::new(StallState {
                body: Some(Box::pin(kind)),
                rest: None,
                handed_at: None,
                cut: false,
                timeout,
                watchdog: None,
            }),
        });
        ResponseBody {
            kind: RespKind::Guarded { shared },
            completion,
            pace,
        }
    }

    /// Sends this body no faster than `rate` (`limit-rate`), from now on.
    pub(crate) fn limit_rate(&mut self, rate: crate::snapshot::SendRate) {
        self.pace = Some(Box::new(Pace {
            rate,
            start: Instant::now(),
            sent: 0,
            held: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }));
    }

    /// Compresses this body with `encoder`: an upstream's or the proxy's own, whichever the
    /// headers already say is compressed.
    pub(crate) fn compress(&mut self, encoder: super::compression::Encoder) {
        let inner = std::mem::replace(&mut self.kind, RespKind::Full { data: None });
        self.kind = RespKind::Compressed {
            inner: Box::pin(inner),
            encoder: Box::new(encoder),
        };
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
        let polled = match this.pace.as_deref_mut() {
            Some(pace) => pace.poll(this.kind, cx),
            None => poll_kind(this.kind, cx),
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
        self.pace.as_ref().is_none_or(|p| p.held.is_none()) && kind_is_end_stream(&self.kind)
    }

    fn size_hint(&self) -> SizeHint {
        kind_size_hint(&self.kind)
    }
}

fn kind_size_hint(kind: &RespKind) -> SizeHint {
    match kind {
        RespKind::Full { data } => {
            SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
        }
        RespKind::Upstream { body, .. } => body.size_hint(),
        RespKind::Compressed { .. } => SizeHint::default(),
        RespKind::Guarded { shared } => shared
            .lock()
            .body
            .as_ref()
            .map_or_else(SizeHint::default, |b| kind_size_hint(b)),
    }
}

fn kind_is_end_stream(kind: &RespKind) -> bool {
    match kind {
        RespKind::Full { data } => data.is_none(),
        RespKind::Upstream { body, .. } => body.is_end_stream(),
        // The trailer is still to come until the encoder says it is done.
        RespKind::Compressed { .. } => false,
        RespKind::Guarded { shared } => {
            let st = shared.lock();
            !st.cut && st.rest.is_none() && st.body.as_ref().is_none_or(|b| kind_is_end_stream(b))
        }
    }
}

/// The next frame of a response body of any kind.
fn poll_kind(
    kind: Pin<&mut RespKind>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match kind.project() {
        RespProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        RespProj::Guarded { shared } => shared.poll_frame(cx),
        RespProj::Compressed { inner, encoder } => poll_compressed(inner.as_mut(), encoder, cx),
        RespProj::Upstream {
            mut body,
            mut timer,
            read_timeout,
            rearm,
            ret,
            request,
        } => {
            if *rearm {
                // Time spent while the client was not asking for data is not the upstream's.
                timer.as_mut().reset(Instant::now() + *read_timeout);
                *rearm = false;
            }
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *rearm = true;
                    if let Some(p) = request {
                        p.answered.fetch_add(1, Relaxed);
                    }
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
    }
}

/// The next compressed frame: input is fed until the encoder has output, and the end of the
/// input (or its trailers, which follow on the next poll) finishes the stream.
fn poll_compressed(
    mut inner: Pin<&mut RespKind>,
    encoder: &mut super::compression::Encoder,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        // Held until the compressed stream has ended.
        if let Some(trailers) = encoder.take_trailers() {
            inner.set(RespKind::Full { data: None });
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = match poll_kind(inner.as_mut(), cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                return Poll::Ready(match encoder.finish() {
                    Ok(rest) => rest.map(|b| Ok(Frame::data(b))),
                    Err(e) => Some(Err(e.into())),
                });
            }
            Poll::Pending => return Poll::Pending,
        };
        let out = match frame.into_data() {
            Ok(data) => encoder.feed(&data),
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    encoder.hold_trailers(trailers);
                    encoder.finish()
                }
                Err(_) => continue,
            },
        };
        match out {
            Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
            Ok(None) => {}
            Err(e) => return Poll::Ready(Some(Err(e.into()))),
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
        /// `progress.answered` when the timer was last armed.
        answered: u64,
        progress: Arc<BodyProgress>,
        /// `mirror-target` with the body: each frame is copied to the mirror too.
        tee: Option<super::filters::mirror::Tee>,
        /// Kept as it passes, so the request can go again after it left.
        replay: Option<Arc<Replay>>,
    },
}

/// How far the client's body has got, for the upstream response wait.
#[derive(Debug, Default)]
pub struct BodyProgress {
    finished: AtomicBool,
    frames: AtomicU64,
    /// How the body was cut off (`BodyError as u8 + 1`; 0: it was not). The HTTP/2 client
    /// turns a body error into a stream reset whose error no longer carries the cause.
    failure: AtomicU8,
    /// Frames of the response relayed to the client so far.
    answered: AtomicU64,
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

    /// Why the proxy cut the body off, if it did.
    pub fn failure(&self) -> Option<BodyError> {
        const CUTS: [BodyError; 3] = [
            BodyError::TooLarge,
            BodyError::ClientTimeout,
            BodyError::ClientBody,
        ];
        CUTS.into_iter()
            .find(|c| *c as u8 + 1 == self.failure.load(Relaxed))
    }

    /// Records `e` as the reason the body ended; returns it as the body's error.
    fn cut(&self, e: BodyError) -> Option<Result<Frame<Bytes>, BoxError>> {
        self.failure.store(e as u8 + 1, Relaxed);
        Some(Err(Box::new(e)))
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

    /// Copies every frame of the client's body to a mirror (no-op for other bodies).
    pub fn with_tee(mut self, tee: Option<super::filters::mirror::Tee>) -> Self {
        if let RequestBody::Client { tee: slot, .. } = &mut self {
            *slot = tee;
        }
        self
    }

    /// Keeps the client's body as it passes (up to a limit), so the request can be sent
    /// again; other bodies need no copy.
    pub fn keep_for_replay(&mut self) {
        if let RequestBody::Client { replay, .. } = self {
            replay.get_or_insert_with(Default::default);
        }
    }

    /// The copy [`RequestBody::keep_for_replay`] keeps, if it was asked for.
    pub fn replay(&self) -> Option<Arc<Replay>> {
        match self {
            RequestBody::Client { replay, .. } => replay.clone(),
            RequestBody::Full { .. } => None,
        }
    }

    /// A body that can be sent again as it is (a fixed one), or `None` for the client's.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            RequestBody::Full { data } => Some(RequestBody::Full { data: data.clone() }),
            RequestBody::Client { .. } => None,
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
            answered: 0,
            progress: progress.clone(),
            tee: None,
            replay: None,
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
                answered,
                progress,
                tee,
                replay,
            } => {
                if *rearm {
                    timer.as_mut().reset(Instant::now() + *send_timeout);
                    *answered = progress.answered.load(Relaxed);
                    *rearm = false;
                }
                match Pin::new(body.get_mut()).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                            if *seen > *limit {
                                return Poll::Ready(progress.cut(BodyError::TooLarge));
                            }
                        }
                        *rearm = true;
                        progress.frames.fetch_add(1, Relaxed);
                        if let Some(t) = tee {
                            if let Some(d) = frame.data_ref() {
                                t.frame(d);
                            }
                        }
                        if let Some(r) = replay {
                            match frame.data_ref() {
                                Some(d) => r.data(d),
                                None => r.other(),
                            }
                        }
                        if body.is_end_stream() {
                            progress.finished.store(true, Relaxed);
                            if let Some(t) = tee {
                                t.finish();
                            }
                            if let Some(r) = replay {
                                r.finish();
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The client's fault, not the upstream's: a 400, and no mark on the
                        // endpoint (the cause is kept in the debug log only).
                        tracing::debug!(error = %e, "client request body failed");
                        Poll::Ready(progress.cut(BodyError::ClientBody))
                    }
                    Poll::Ready(None) => {
                        progress.finished.store(true, Relaxed);
                        if let Some(t) = tee {
                            t.finish();
                        }
                        if let Some(r) = replay {
                            r.finish();
                        }
                        Poll::Ready(None)
                    }
                    Poll::Pending => loop {
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        // A stream that flows the other way is not stalled (nginx's timer
                        // waits for silence both ways too): wait on.
                        let now = progress.answered.load(Relaxed);
                        if now == *answered {
                            return Poll::Ready(progress.cut(BodyError::ClientTimeout));
                        }
                        *answered = now;
                        timer.as_mut().reset(Instant::now() + *send_timeout);
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::snapshot::SendRate;

    /// Reads `body` to its end on paused time; (bytes, seconds it took, frames).
    async fn drain(body: ResponseBody) -> (usize, f64, usize) {
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        let (mut bytes, mut frames) = (0, 0);
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap_or_else(|e| panic!("{e}"));
            bytes += frame.data_ref().map_or(0, Bytes::len);
            frames += 1;
        }
        (bytes, start.elapsed().as_secs_f64(), frames)
    }

    #[tokio::test(start_paused = true)]
    async fn limit_rate_paces_the_body_after_its_free_share() {
        const KB: u64 = 1024;
        let data = Bytes::from(vec![7u8; 200 * 1024]);
        // 100 KB/s, nothing free beyond nginx's first second: 100 KB at once, then 1 s.
        let mut body = ResponseBody::full(data.clone());
        body.limit_rate(SendRate {
            bytes_per_sec: 100 * KB,
            after: 0,
        });
        let (bytes, secs, frames) = drain(body).await;
        assert_eq!(bytes, data.len());
        assert!((0.95..1.1).contains(&secs), "{secs}");
        // Trickled in pieces (a tenth of a second's worth), not one burst at the end.
        assert!(frames >= 10, "{frames}");
        // 50 KB free first: half a second.
        let mut body = ResponseBody::full(data.clone());
        body.limit_rate(SendRate {
            bytes_per_sec: 100 * KB,
            after: 50 * KB,
        });
        let (_, secs, _) = drain(body).await;
        assert!((0.45..0.6).contains(&secs), "{secs}");
        // Within the first second's share: no wait at all, one frame.
        let mut body = ResponseBody::full(Bytes::from_static(b"small"));
        body.limit_rate(SendRate {
            bytes_per_sec: KB,
            after: 0,
        });
        let (bytes, secs, frames) = drain(body).await;
        assert_eq!((bytes, frames), (5, 1));
        assert!(secs < 0.01, "{secs}");
    }
}
