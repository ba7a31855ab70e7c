//! The per-request record: metrics always, and one JSON access-log line (tracing target
//! `access_log`) when enabled. Emitted when the response body is finished or dropped, so the
//! duration and byte count cover the whole response.
use std::{
    net::IpAddr,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{HeaderValue, Method, Response, Version};
use serde_json::json;

use super::{
    log_format::{AccessFormat, Captured, Outcome},
    metrics::RouteMetrics,
    nginx_metrics::{Finished, LocationSeries, MethodSlot},
};

/// Tracing target of access-log lines.
pub const TARGET: &str = "access_log";

/// What the access log says about one request, beyond status, bytes and duration.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    /// `None` for a request whose head could not be parsed.
    pub method: Option<Method>,
    pub host: String,
    pub path: String,
    pub version: Version,
    pub client: IpAddr,
    pub request_id: HeaderValue,
    pub upstream: Option<SocketAddr>,
    pub upstream_name: Option<Arc<str>>,
    /// The route's main upstream when its canary served the request (`upstream_name`).
    pub main_upstream: Option<Arc<str>>,
    pub ingress: Option<Arc<str>>,
    /// When the last upstream attempt started (kept for `format` only).
    pub upstream_start: Option<Instant>,
    /// The upstream's answer, when one came.
    pub upstream_status: Option<u16>,
    /// The tries before the last (`proxy-next-upstream`), oldest first.
    pub earlier: Vec<EarlierTry>,
    /// `log-format-upstream` and what it needs of the request; `None`: the JSON record.
    pub format: Option<(Arc<AccessFormat>, Box<Captured>)>,
}

/// An upstream try that another followed: where, what it came to, and how long it took
/// (timed only for `log-format-upstream`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EarlierTry {
    pub addr: SocketAddr,
    pub status: u16,
    pub elapsed: Option<Duration>,
}

/// Where a routed request counts under ingress-nginx's names, and what those series observe
/// beyond status, duration and body bytes.
#[derive(Debug)]
struct Located {
    series: Arc<LocationSeries>,
    method: MethodSlot,
    on_canary: bool,
    /// The response head as written (estimated: hyper adds `date` and framing).
    response_head: u64,
    /// When the last upstream attempt started.
    upstream_start: Option<Instant>,
    /// From then to the upstream's response head.
    upstream_header: Option<Duration>,
}

/// Finishes a request when dropped: records metrics, writes the access-log line.
#[derive(Debug)]
pub(crate) struct Completion {
    start: Instant,
    /// The request as read (nginx's `$request_length`).
    request_bytes: u64,
    status: u16,
    bytes: u64,
    aborted: bool,
    metrics: Arc<RouteMetrics>,
    /// ingress-nginx's series the request counts in, once routed to a location.
    location: Option<Located>,
    record: Option<Box<AccessRecord>>,
    /// Keeps the request counted as in progress on its connection until the body ends.
    active: Option<super::idle::ActiveStream>,
    /// Its place under `limit-connections`, given back when the response is done.
    conn_permit: Option<super::filters::connlimit::ConnPermit>,
}

impl Completion {
    /// Holds the connection's in-progress mark until the response is finished.
    pub fn hold(&mut self, active: super::idle::ActiveStream) {
        self.active = Some(active);
    }

    /// Holds the request's `limit-connections` place until the response is finished.
    pub fn hold_permit(&mut self, permit: super::filters::connlimit::ConnPermit) {
        self.conn_permit = Some(permit);
    }

    /// Counts body bytes sent.
    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// Notes that the body was cut off by an error.
    pub fn mark_aborted(&mut self) {
        self.aborted = true;
    }

    /// A completion for a request of `request_bytes` (nginx's `$request_length`) whose
    /// response is not made yet: dropped as it is (the client went away first, and hyper
    /// dropped the request's future), it is logged and counted as nginx's 499.
    pub fn pending(
        start: Instant,
        request_bytes: u64,
        metrics: Arc<RouteMetrics>,
        record: Option<Box<AccessRecord>>,
    ) -> Self {
        Completion {
            start,
            request_bytes,
            status: CLIENT_CLOSED,
            bytes: 0,
            aborted: true,
            metrics,
            location: None,
            record,
            active: None,
            conn_permit: None,
        }
    }

    /// The request is routed: its route's metrics, its Ingress and (once chosen) upstream.
    pub fn route(
        &mut self,
        metrics: Arc<RouteMetrics>,
        ingress: &Arc<str>,
        upstream_name: Option<&Arc<str>>,
    ) {
        self.metrics = metrics;
        if let Some(r) = self.record.as_mut() {
            r.ingress = Some(ingress.clone());
            r.upstream_name = upstream_name.cloned();
        }
    }

    /// The request is a `method` request at a location with ingress-nginx series (none for
    /// the default backend's).
    pub fn locate(&mut self, series: Option<&Arc<LocationSeries>>, method: &Method) {
        self.location = series.map(|series| Located {
            series: series.clone(),
            method: MethodSlot::of(method),
            on_canary: false,
            response_head: 0,
            upstream_start: None,
            upstream_header: None,
        });
    }

    /// The route keeps its requests out of the access log (`enable-access-log: false`).
    pub fn unlogged(&mut self) {
        self.record = None;
    }

    /// The request is being sent to `addr`; `before` is what the previous try came to, if
    /// there was one.
    pub fn attempt(&mut self, addr: SocketAddr, before: Option<u16>) {
        let wants_time =
            self.location.is_some() || self.record.as_ref().is_some_and(|r| r.format.is_some());
        let now = wants_time.then(Instant::now);
        if let Some(l) = self.location.as_mut() {
            l.upstream_start = now;
            l.upstream_header = None;
        }
        if let Some(r) = self.record.as_mut() {
            if let (Some(prev), Some(status)) = (r.upstream, before) {
                r.earlier.push(EarlierTry {
                    addr: prev,
                    status,
                    elapsed: r.upstream_start.map(|t| t.elapsed()),
                });
            }
            r.upstream = Some(addr);
            // Only a `log-format-upstream` line reports upstream timing.
            if r.format.is_some() {
                r.upstream_start = now;
            }
        }
    }

    /// The route's canary serves the request; `main` is the route's own upstream.
    pub fn canary_of(&mut self, main: &Arc<str>) {
        if let Some(l) = self.location.as_mut() {
            l.on_canary = true;
        }
        if let Some(r) = self.record.as_mut() {
            r.main_upstream = Some(main.clone());
        }
    }

    /// The upstream answered with `status`.
    pub fn upstream_answered(&mut self, status: u16) {
        if let Some(l) = self.location.as_mut() {
            l.upstream_header = l.upstream_start.map(|t| t.elapsed());
        }
        if let Some(r) = self.record.as_mut() {
            r.upstream_status = Some(status);
        }
    }

    /// The response is made: its status.
    pub fn respond(&mut self, status: u16) {
        self.status = status;
        self.aborted = false;
    }

    /// The response is made as `head` is: its status, and its head's size for the series
    /// that count bytes sent.
    pub fn respond_with<B>(&mut self, head: &Response<B>) {
        self.respond(head.status().as_u16());
        if let Some(l) = self.location.as_mut() {
            l.response_head = response_head_length(head);
        }
    }
}

/// Counts and logs a request that hyper refused while parsing its head (and answered with
/// `status` itself): nothing of it is known but the client.
pub(crate) fn refused(shared: &super::Shared, client: IpAddr, status: u16) {
    let global = &shared.config.load().global;
    let record = global.access_log.then(|| {
        Box::new(AccessRecord {
            method: None,
            host: String::new(),
            path: String::new(),
            version: Version::HTTP_11,
            client,
            request_id: super::headers::request_id(&http::HeaderMap::new(), true),
            upstream: None,
            upstream_name: None,
            main_upstream: None,
            ingress: None,
            upstream_start: None,
            upstream_status: None,
            earlier: Vec::new(),
            format: global
                .log_format
                .as_ref()
                .map(|f| (f.clone(), Box::default())),
        })
    });
    Completion::pending(Instant::now(), 0, shared.metrics.unrouted(), record).respond(status);
}

/// nginx's status for a request whose client closed the connection before the response.
pub const CLIENT_CLOSED: u16 = 499;

impl Drop for Completion {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        self.metrics.record(self.status, elapsed);
        if let Some(l) = &self.location {
            let finished = Finished {
                status: self.status,
                elapsed,
                request_bytes: self.request_bytes,
                response_bytes: l.response_head + self.bytes,
                upstream_header: l.upstream_header,
                upstream_response: l.upstream_start.map(|t| now.saturating_duration_since(t)),
            };
            l.series.record(l.method, l.on_canary, &finished);
        }
        if let Some(r) = self.record.take() {
            if let Some((format, captured)) = &r.format {
                // As nginx: an attempt that got no answer logs the 502 or 504 it became, and
                // no bytes from the upstream.
                let attempted = r.upstream_start.is_some();
                let outcome = Outcome {
                    status: self.status,
                    bytes: self.bytes,
                    elapsed,
                    upstream_elapsed: r.upstream_start.map(|t| now.saturating_duration_since(t)),
                    upstream_status: r.upstream_status.or_else(|| {
                        (attempted && matches!(self.status, 502 | 504)).then_some(self.status)
                    }),
                    upstream_bytes: match r.upstream_status {
                        Some(_) => Some(self.bytes),
                        None => attempted.then_some(0),
                    },
                };
                let line = format.render(&r, captured, &outcome, std::time::SystemTime::now());
                tracing::info!(target: TARGET, "{line}");
                return;
            }
            let mut line = json!({
                "time": httpdate_now(),
                "request_id": r.request_id.to_str().unwrap_or(""),
                "client": r.client.to_string(),
                "method": r.method.as_ref().map_or("", Method::as_str),
                "host": r.host,
                "path": r.path,
                "protocol": format!("{:?}", r.version),
                "status": self.status,
                "bytes": self.bytes,
                "duration_ms": elapsed.as_secs_f64() * 1000.0,
                "upstream": r.upstream.map(|a| a.to_string()),
                "upstream_name": r.upstream_name.as_deref(),
                "ingress": r.ingress.as_deref(),
                "aborted": self.aborted,
            });
            if !r.earlier.is_empty() {
                // Only when `proxy-next-upstream` went on: the tries before `upstream`.
                line["upstream_tries_before"] = r
                    .earlier
                    .iter()
                    .map(|t| json!({"upstream": t.addr.to_string(), "status": t.status}))
                    .collect();
            }
            tracing::info!(target: TARGET, "{line}");
        }
    }
}

/// The size of `head` as an HTTP/1.1 status line and header block, with the `date` field
/// hyper adds (nginx's `$bytes_sent` counts them; the framing fields hyper adds are left out).
fn response_head_length<B>(head: &Response<B>) -> u64 {
    const DATE_FIELD: usize = "date: Sat, 28 Nov 2026 15:00:00 GMT\r\n".len();
    let status = head.status();
    let reason = status.canonical_reason().unwrap_or("");
    let line = "HTTP/1.1 200 ".len() + reason.len() + 2;
    let fields: usize = head
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    // hyper adds `date` only where the upstream sent none.
    let date = if head.headers().contains_key(http::header::DATE) {
        0
    } else {
        DATE_FIELD
    };
    (line + fields + date + 2) as u64
}

/// Seconds since the Unix epoch, with milliseconds.
fn httpdate_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}
