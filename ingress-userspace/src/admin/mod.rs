//! Admin HTTP endpoint: `/healthz` (process alive), `/readyz` (a configuration is applied and
//! no drain is under way), `/metrics` (Prometheus text format from every registered source).
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
};

pub mod inspect;
pub mod kernel;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::metrics::ProxyMetrics;

/// Readiness as reported by `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// A configuration is live.
    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    /// A drain started: stop attracting traffic.
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    /// Whether `/readyz` says ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed) && !self.draining.load(Relaxed)
    }
}

/// Something that contributes lines to `/metrics`.
pub trait MetricsSource: Send + Sync + std::fmt::Debug {
    /// Appends metrics in the Prometheus text exposition format.
    fn render(&self, out: &mut String);
}

impl MetricsSource for crate::passthrough::metrics::PassthroughMetrics {
    fn render(&self, out: &mut String) {
        crate::passthrough::metrics::PassthroughMetrics::render(self, out);
    }
}

impl MetricsSource for crate::passthrough::Passthrough {
    /// The kernel splice's drops by reason (the userspace copy drops nothing).
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let Some((unpaired, peer_gone)) = self.splice_drops() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP ingress_passthrough_splice_dropped_bytes_total Bytes the in-kernel splice dropped, by reason."
        );
        let _ = writeln!(
            out,
            "# TYPE ingress_passthrough_splice_dropped_bytes_total counter"
        );
        for (reason, c) in [("unpaired", unpaired), ("peer_gone", peer_gone)] {
            let _ = writeln!(
                out,
                "ingress_passthrough_splice_dropped_bytes_total{{reason=\"{reason}\"}} {}",
                c.bytes
            );
        }
        if let Some(held) = self.splice_held() {
            let _ = writeln!(
                out,
                "# HELP ingress_passthrough_splice_held_bytes_total Bytes the in-kernel splice held for userspace to relay: their reader was a credit behind."
            );
            let _ = writeln!(
                out,
                "# TYPE ingress_passthrough_splice_held_bytes_total counter"
            );
            let _ = writeln!(
                out,
                "ingress_passthrough_splice_held_bytes_total {}",
                held.bytes
            );
        }
    }
}

impl MetricsSource for ProxyMetrics {
    fn render(&self, out: &mut String) {
        ProxyMetrics::render(self, out);
    }
}

/// The admin server.
#[derive(Clone, Debug)]
pub struct AdminServer {
    readiness: Arc<Readiness>,
    sources: Vec<Arc<dyn MetricsSource>>,
}

impl AdminServer {
    /// An admin server reporting `readiness`.
    pub fn new(readiness: Arc<Readiness>) -> Self {
        AdminServer {
            readiness,
            sources: Vec::new(),
        }
    }

    /// Adds a metrics source to `/metrics`.
    pub fn with_source(mut self, source: Arc<dyn MetricsSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Serves on `listener` until `shutdown` is cancelled.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let admission = crate::proxy::accept::Admission::unbounded();
        loop {
            let (stream, _, _) = tokio::select! {
                a = admission.accept(&listener) => a,
                _ = shutdown.cancelled() => break,
            };
            let this = this.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.respond(&req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.readiness.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => {
                let mut out = String::with_capacity(16 * 1024);
                for s in &self.sources {
                    s.render(&mut out);
                }
                let mut resp = Response::new(Full::new(Bytes::from(out)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
