//! `mirror-target`: a copy of each request goes to another URL (shadow traffic), as nginx's
//! `mirror` does. The copy never delays or changes the client's exchange: it runs in a task
//! of its own, its answer is read and dropped, and a body is copied only as fast as the real
//! upstream takes it, through a small queue. A mirror that falls behind loses its body (its
//! request is cut off, never sent short as if complete). At most [`MAX_IN_FLIGHT`] copies run
//! at once; past that, copies are skipped and counted.
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri};
use hyper::body::{Body, Frame, SizeHint};
use rustls::ClientConfig;
use tokio::sync::mpsc;

use super::super::{
    headers,
    metrics::ProxyMetrics,
    outbound::{self, Original},
};
use crate::snapshot::Mirror;

/// Copies in progress at most, for the whole proxy.
pub const MAX_IN_FLIGHT: usize = 512;
/// Body frames queued towards a mirror before it counts as fallen behind.
const QUEUE: usize = 16;
/// The whole copy, connection to the end of its answer.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends the copies; shared by every connection.
#[derive(Debug, Clone)]
pub struct Mirrors {
    tls: Arc<ClientConfig>,
    in_flight: Arc<AtomicUsize>,
}

/// The client body's copy on its way to a mirror: fed frame by frame by the request body.
#[derive(Debug)]
pub struct Tee {
    tx: Option<mpsc::Sender<Bytes>>,
    cut: Arc<AtomicBool>,
}

impl Tee {
    /// Queues a copy of `data`; a full queue cuts the mirror's body off for good.
    pub fn frame(&mut self, data: &Bytes) {
        if let Some(tx) = &self.tx {
            if tx.try_send(data.clone()).is_err() {
                self.cut.store(true, Relaxed);
                self.tx = None;
            }
        }
    }

    /// The client's body ended whole: the mirror's ends whole too.
    pub fn finish(&mut self) {
        self.tx = None;
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped before the end (the upstream stopped reading, the client went away): the
        // mirror's body is incomplete and must not end as if it were whole.
        if self.tx.is_some() {
            self.cut.store(true, Relaxed);
        }
    }
}

/// The mirror's request body: the frames [`Tee`] queued.
struct TeeBody {
    rx: mpsc::Receiver<Bytes>,
    cut: Arc<AtomicBool>,
    size: SizeHint,
}

#[derive(Debug, thiserror::Error)]
#[error("mirrored body cut off")]
struct CutOff;

impl Body for TeeBody {
    type Data = Bytes;
    type Error = CutOff;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutOff>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) if this.cut.load(Relaxed) => Poll::Ready(Some(Err(CutOff))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

/// `X-Original-URI`, as ingress-nginx's mirror location sets it.
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

impl Mirrors {
    /// Copies go out over `tls` (offering `http/1.1`) to `https://` targets; it does not
    /// check their certificates, as for `auth-url` and nginx's `proxy_ssl_verify off`.
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        Mirrors {
            tls,
            in_flight: Arc::default(),
        }
    }

    /// Starts the copy of `req` (`headers` as they go upstream) to `cfg`'s target. Returns
    /// the tee the client's body must feed when the copy takes the body.
    pub fn start(
        &self,
        cfg: &Mirror,
        req: &Original<'_>,
        has_body: bool,
        metrics: &Arc<ProxyMetrics>,
    ) -> Option<Tee> {
        if self.in_flight.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Relaxed);
            metrics.mirror(MirrorOutcome::Skipped);
            return None;
        }
        let with_body = cfg.body && has_body;
        let (tee, body) = if with_body {
            let (tx, rx) = mpsc::channel(QUEUE);
            let cut = Arc::new(AtomicBool::new(false));
            let size =
                content_length(req.headers).map_or_else(SizeHint::default, SizeHint::with_exact);
            let body = TeeBody {
                rx,
                cut: cut.clone(),
                size,
            };
            (Some(Tee { tx: Some(tx), cut }), Some(body))
        } else {
            (None, None)
        };
        let built = build(cfg, req, with_body);
        let (tls, in_flight, metrics) = (self.tls.clone(), self.in_flight.clone(), metrics.clone());
        tokio::spawn(async move {
            let outcome = match built {
                Ok(head) => {
                    let sent = match body {
                        Some(b) => send(&tls, head.map(|()| b)).await,
                        None => {
                            send(&tls, head.map(|()| http_body_util::Empty::<Bytes>::new())).await
                        }
                    };
                    match sent {
                        Ok(()) => MirrorOutcome::Sent,
                        Err(e) => {
                            tracing::debug!(error = %e, "mirror request failed");
                            MirrorOutcome::Failed
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "mirror request not built");
                    MirrorOutcome::Failed
                }
            };
            metrics.mirror(outcome);
            in_flight.fetch_sub(1, Relaxed);
        });
        tee
    }
}

/// What became of one copy, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorOutcome {
    /// Answered (whatever the status).
    Sent,
    /// No answer: connect, TLS, the body cut off, or the timeout.
    Failed,
    /// Not sent: too many copies in progress.
    Skipped,
}

/// Sends one copy and reads its answer to the end, within [`MIRROR_TIMEOUT`].
async fn send<B>(tls: &Arc<ClientConfig>, req: Request<B>) -> Result<(), String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async {
        let answer = outbound::exchange(tls, req).await?;
        // Read to the end so the target sees a normal exchange; the bytes are dropped.
        http_body_util::BodyExt::collect(answer.into_body())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(MIRROR_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// The copy's head: the target URL with its variables replaced, the headers going upstream
/// (without Host and, unless the body goes too, without body framing), `X-Original-URI`, and
/// `mirror-host` as Host when set.
fn build(cfg: &Mirror, req: &Original<'_>, with_body: bool) -> Result<Request<()>, String> {
    let request_uri = req.request_uri();
    let parse = |url: String| -> Result<Uri, String> {
        url.parse()
            .map_err(|e| format!("bad mirror URL {url:?}: {e}"))
    };
    let expanded = parse(req.expand(&cfg.target))?;
    let uri = if expanded.path_and_query().is_none_or(|p| p.as_str() == "/")
        && !cfg.target.ends_with('/')
    {
        // `http://shadow:8080` alone: the request's own path, as a mirror is expected to get.
        let base = expanded.to_string();
        parse(format!("{}{request_uri}", base.trim_end_matches('/')))?
    } else {
        expanded
    };
    let mut h = req.headers.clone();
    headers::remove_hop_by_hop(&mut h, false);
    h.remove(header::HOST);
    h.remove(header::EXPECT);
    if !with_body {
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::TRANSFER_ENCODING);
    }
    if let Ok(v) = HeaderValue::from_str(request_uri) {
        h.insert(X_ORIGINAL_URI.clone(), v);
    }
    if let Some(v) = cfg
        .host
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::HOST, v);
    }
    let mut out = Request::new(());
    *out.method_mut() = req.method.clone();
    *out.uri_mut() = uri;
    *out.headers_mut() = h;
    Ok(out)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Original<'a> {
        Original {
            method: &http::Method::POST,
            uri,
            headers,
            host: "shop.example",
            tls: true,
            client: std::net::IpAddr::from([192, 0, 2, 1]),
        }
    }

    fn mirror(target: &str, host: Option<&str>) -> Mirror {
        Mirror {
            target: target.into(),
            host: host.map(str::to_owned),
            body: true,
        }
    }

    #[test]
    fn urls_and_headers() {
        let uri: Uri = "/cart/add?id=7".parse().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        let req = original(&uri, &h);

        let copy = build(&mirror("http://shadow:8080$request_uri", None), &req, true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy.uri(), "http://shadow:8080/cart/add?id=7");
        assert_eq!(copy.method(), http::Method::POST);
        assert_eq!(copy.headers()["x-original-uri"], "/cart/add?id=7");
        assert_eq!(copy.headers()["x-request-id"], "r1");
        assert_eq!(copy.headers()[header::CONTENT_LENGTH], "5");
        assert!(copy.headers().get(header::HOST).is_none());
        assert!(copy.headers().get(header::CONNECTION).is_none());

        // No path: the request's own is appended. `$host`, `$scheme`, `mirror-host`.
        let copy = build(&mirror("http://shadow", Some("copy.internal")), &req, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy.uri(), "http://shadow/cart/add?id=7");
        assert_eq!(copy.headers()[header::HOST], "copy.internal");
        assert!(copy.headers().get(header::CONTENT_LENGTH).is_none());
        let copy = build(&mirror("http://shadow/fixed/", None), &req, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy.uri(), "http://shadow/fixed/");
        let copy = build(&mirror("http://shadow/$scheme/$host", None), &req, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy.uri(), "http://shadow/https/shop.example");
    }

    #[test]
    fn tee_cuts_off_when_behind_or_dropped_early() {
        let (tx, mut rx) = mpsc::channel(2);
        let cut = Arc::new(AtomicBool::new(false));
        let mut tee = Tee {
            tx: Some(tx),
            cut: cut.clone(),
        };
        for _ in 0..2 {
            tee.frame(&Bytes::from_static(b"x"));
        }
        assert!(!cut.load(Relaxed));
        tee.frame(&Bytes::from_static(b"x"));
        assert!(cut.load(Relaxed), "a full queue cuts the copy off");
        assert!(rx.try_recv().is_ok());

        let (tx, _rx) = mpsc::channel(2);
        let cut = Arc::new(AtomicBool::new(false));
        drop(Tee {
            tx: Some(tx),
            cut: cut.clone(),
        });
        assert!(cut.load(Relaxed), "dropped before the end");

        let (tx, _rx) = mpsc::channel(2);
        let cut = Arc::new(AtomicBool::new(false));
        let mut tee = Tee {
            tx: Some(tx),
            cut: cut.clone(),
        };
        tee.finish();
        drop(tee);
        assert!(!cut.load(Relaxed), "a whole body is not cut");
    }
}
