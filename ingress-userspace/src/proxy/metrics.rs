//! L7 metrics: lock-free atomics on the request path, rendered in the Prometheus text format.
//! Label sets are bounded by the configuration: one series set per (ingress, service) pair that
//! exists in the current snapshot, pruned when a pair leaves it.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use super::{
    filters::mirror::MirrorOutcome,
    nginx_metrics::{CertExpiries, CertExpiry, LocationLabels, LocationSeries, SeriesOptions},
};

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`. Their sum is the count, so an
    /// observation costs two atomic adds.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Appends the histogram's series, `labels` (`k="v",...`) on each.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        render_buckets(name, labels, &BUCKETS, &self.buckets, sum, out);
    }
}

/// Appends a histogram's series, `labels` (`k="v",...`) on each: a cumulative `_bucket` per
/// bound and `+Inf` from the non-cumulative `counts` (one more than `bounds`, the last for
/// `+Inf`), then `_sum` and `_count`.
pub(super) fn render_buckets(
    name: &str,
    labels: &str,
    bounds: &[impl std::fmt::Display],
    counts: &[AtomicU64],
    sum: impl std::fmt::Display,
    out: &mut String,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, n) in bounds.iter().zip(counts) {
        cumulative += n.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += counts.get(bounds.len()).map_or(0, |n| n.load(Relaxed));
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
    );
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {sum}");
    let _ = writeln!(out, "{name}_count{braced} {cumulative}");
}

/// Counters of one (ingress, service) pair.
#[derive(Debug)]
pub struct RouteMetrics {
    ingress: Box<str>,
    service: Box<str>,
    /// Responses by status class 1xx..5xx.
    classes: [AtomicU64; 5],
    latency: Histogram,
}

impl RouteMetrics {
    fn new(ingress: &str, service: &str) -> Self {
        RouteMetrics {
            ingress: ingress.into(),
            service: service.into(),
            classes: Default::default(),
            latency: Histogram::default(),
        }
    }

    /// Records a finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Relaxed);
        self.latency.observe(elapsed);
    }

    /// Requests answered.
    fn requests(&self) -> u64 {
        self.classes.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Requests counted in status class `class` (1..=5).
    pub fn class_count(&self, class: u16) -> u64 {
        usize::from(class)
            .checked_sub(1)
            .and_then(|i| self.classes.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }
}

/// Kinds of upstream failure, for the `upstream_errors_total` counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    ConnectRefused,
    ConnectTimeout,
    Connect,
    Tls,
    Timeout,
    Protocol,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 6] = [
        UpstreamErrorKind::ConnectRefused,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Protocol,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectRefused => "connect_refused",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Connect => "connect_error",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

/// (ingress, service).
type RouteKey = (Box<str>, Box<str>);

/// A location's labels and its canary's upstream.
type LocationKey = (String, Option<Box<str>>);

/// All L7 metrics of one proxy.
#[derive(Debug)]
pub struct ProxyMetrics {
    /// (ingress, service) -> counters; locked only at apply and scrape time.
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteMetrics>>>,
    /// Location (path rule on its host) -> its ingress-nginx request series, by label text;
    /// locked like `routes`.
    locations: Mutex<HashMap<LocationKey, Arc<LocationSeries>>>,
    /// ingress-nginx's flags for its request series.
    options: SeriesOptions,
    /// Requests that matched nothing (404 from the proxy).
    unrouted: Arc<RouteMetrics>,
    upstream_errors: [AtomicU64; 6],
    /// `mirror-target` copies: sent, failed, skipped.
    mirrors: [AtomicU64; 3],
    tls_handshakes: AtomicU64,
    tls_handshake_failures: AtomicU64,
    /// Connections closed for a missing or bad PROXY protocol header.
    proxy_protocol_refused: AtomicU64,
    /// Connections closed and requests refused because their client is in `--block-cidrs`.
    blocked: AtomicU64,
    config_applies: AtomicU64,
    config_generation: AtomicU64,
    apply_duration: Histogram,
    /// Unix time of the last configuration applied.
    last_apply: AtomicU64,
    /// Configurations applied that ingress-nginx would have reloaded for (not those that
    /// change endpoints only), and the Unix time of the last.
    reloads: AtomicU64,
    last_reload: AtomicU64,
    /// `Snapshot::config_hash` of the last of those.
    config_hash: AtomicU64,
    /// The applied configuration kept older settings over an invalid controller ConfigMap.
    config_rejected: AtomicBool,
    /// The applied configuration's certificates, for `ssl_expire_time_seconds`.
    certificates: Mutex<(CertExpiries, Vec<CertExpiry>)>,
    /// The configuration in use, whose Ingresses `orphan_ingress` reports: worked out at
    /// scrape time, since it costs milliseconds for 10,000 Ingresses that every endpoint
    /// change would otherwise pay.
    applied: Mutex<Option<Arc<crate::snapshot::Snapshot>>>,
    open_connections: AtomicI64,
    /// The open-connection cap (`--max-connections`).
    max_connections: AtomicU64,
    /// Times accepting paused at the cap.
    accept_pauses: AtomicU64,
    /// Accept calls that failed for the listener (EMFILE and the like).
    accept_errors: AtomicU64,
    /// Client connections that reached HTTP since start.
    connections_accepted: AtomicU64,
    /// Requests of the (ingress, service) pairs pruned so far, so the total never goes back.
    retired_requests: AtomicU64,
    /// The leader election's Lease name and whether this replica holds it.
    leader: Mutex<Option<(String, bool)>>,
}

fn mirror_slot(outcome: MirrorOutcome) -> usize {
    match outcome {
        MirrorOutcome::Sent => 0,
        MirrorOutcome::Failed => 1,
        MirrorOutcome::Skipped => 2,
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new(SeriesOptions::default())
    }
}

impl ProxyMetrics {
    /// Metrics whose location series ingress-nginx's flags in `options` shape.
    pub fn new(options: SeriesOptions) -> Self {
        ProxyMetrics {
            routes: Mutex::default(),
            locations: Mutex::default(),
            options,
            unrouted: Arc::new(RouteMetrics::new("", "")),
            upstream_errors: Default::default(),
            mirrors: Default::default(),
            tls_handshakes: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            proxy_protocol_refused: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            config_applies: AtomicU64::new(0),
            config_generation: AtomicU64::new(0),
            apply_duration: Histogram::default(),
            last_apply: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            last_reload: AtomicU64::new(0),
            config_hash: AtomicU64::new(0),
            config_rejected: AtomicBool::new(false),
            certificates: Mutex::default(),
            applied: Mutex::default(),
            open_connections: AtomicI64::new(0),
            max_connections: AtomicU64::new(0),
            accept_pauses: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            retired_requests: AtomicU64::new(0),
            leader: Mutex::new(None),
        }
    }

    /// The counters of an (ingress, service) pair, created on first use (apply time).
    pub fn route(&self, ingress: &str, service: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry((ingress.into(), service.into()))
            .or_insert_with(|| Arc::new(RouteMetrics::new(ingress, service)))
            .clone()
    }

    /// The ingress-nginx series of a location: found, or made on the location's first request.
    pub fn location(&self, labels: LocationLabels<'_>) -> Arc<LocationSeries> {
        let labels = LocationLabels {
            host: labels.host.filter(|_| self.options.per_host),
            ..labels
        };
        let key = (labels.render(), labels.canary.map(Into::into));
        let mut locations = self.locations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = locations.get(&key) {
            return series.clone();
        }
        let mut series = LocationSeries::new(key.0.clone(), labels.ingress, labels.canary);
        // The same location under another canary (or none) counts its main route's requests
        // on the same series: one set of series per label set.
        if let Some(other) = locations
            .iter()
            .find_map(|((l, _), m)| (*l == key.0).then_some(m))
        {
            series = series.sharing(other.main_half().clone());
        }
        if self.options.status_classes {
            series = series.by_class();
        }
        let series = Arc::new(series);
        locations.insert(key, series.clone());
        series
    }

    /// Counters for requests that matched no route.
    pub fn unrouted(&self) -> Arc<RouteMetrics> {
        self.unrouted.clone()
    }

    /// Drops the (ingress, service) counters no configuration or in-flight request refers
    /// to any more, and the location series of the Ingresses `table` no longer serves: as
    /// ingress-nginx, a location's series stay until their Ingress is deleted (its first
    /// request after an apply finds them again, so an edited Ingress keeps its counts), and
    /// go then even while a request of theirs is still being answered.
    pub fn prune(&self, table: &super::router::RouteTable) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.retain(|_, m| {
            let kept = Arc::strong_count(m) > 1;
            if !kept {
                self.retired_requests.fetch_add(m.requests(), Relaxed);
            }
            kept
        });
        drop(routes);
        let mut locations = self.locations.lock().unwrap_or_else(|e| e.into_inner());
        if locations.is_empty() {
            return;
        }
        let live = table.ingresses();
        locations.retain(|_, m| live.contains(m.ingress()));
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        if let Some(i) = UpstreamErrorKind::ALL.iter().position(|k| *k == kind) {
            self.upstream_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Upstream failures of `kind` so far.
    pub fn upstream_errors(&self, kind: UpstreamErrorKind) -> u64 {
        UpstreamErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.upstream_errors[i].load(Relaxed))
    }

    /// Counts a `mirror-target` copy by what became of it.
    pub fn mirror(&self, outcome: MirrorOutcome) {
        self.mirrors[mirror_slot(outcome)].fetch_add(1, Relaxed);
    }

    /// `mirror-target` copies with this outcome so far.
    pub fn mirrors(&self, outcome: MirrorOutcome) -> u64 {
        self.mirrors[mirror_slot(outcome)].load(Relaxed)
    }

    /// Counts a TLS handshake and whether it failed.
    pub fn tls_handshake(&self, ok: bool) {
        self.tls_handshakes.fetch_add(1, Relaxed);
        if !ok {
            self.tls_handshake_failures.fetch_add(1, Relaxed);
        }
    }

    /// Counts a connection closed for its PROXY protocol header.
    pub fn proxy_protocol_refused(&self) {
        self.proxy_protocol_refused.fetch_add(1, Relaxed);
    }

    /// Connections closed for their PROXY protocol header so far.
    pub fn proxy_protocol_refusals(&self) -> u64 {
        self.proxy_protocol_refused.load(Relaxed)
    }

    /// Counts a connection or request refused for a blocked client.
    pub fn blocked(&self) {
        self.blocked.fetch_add(1, Relaxed);
    }

    /// Connections and requests refused for a blocked client so far.
    pub fn blocked_count(&self) -> u64 {
        self.blocked.load(Relaxed)
    }

    /// Counts a configuration applied to the proxy, with its certificates (and the TLS hosts
    /// the default certificate serves, having none of their own); `reload` unless it
    /// changed endpoints only, which ingress-nginx applies without a reload.
    #[allow(clippy::too_many_arguments)]
    pub fn config_applied(
        &self,
        generation: u64,
        tls: &crate::snapshot::TlsConfig,
        default_served: &[String],
        rejected: bool,
        reload: bool,
        took: Duration,
    ) {
        {
            let mut certs = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
            let (parsed, expiries) = &mut *certs;
            *expiries = parsed.of(tls, default_served);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_apply.store(now.as_secs(), Relaxed);
        if reload {
            self.last_reload.store(now.as_secs(), Relaxed);
            self.reloads.fetch_add(1, Relaxed);
        }
        self.config_rejected.store(rejected, Relaxed);
        self.config_applies.fetch_add(1, Relaxed);
        self.config_generation.store(generation, Relaxed);
        self.apply_duration.observe(took);
    }

    /// Keeps the configuration in use, for the series worked out at scrape time.
    pub fn set_applied(&self, snapshot: Arc<crate::snapshot::Snapshot>) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }

    /// Sets `Snapshot::config_hash` of the configuration in use (`apply::config_hash`).
    pub fn set_config_hash(&self, hash: u64) {
        self.config_hash.store(hash, Relaxed);
    }

    /// The last hash set.
    pub fn config_hash(&self) -> u64 {
        self.config_hash.load(Relaxed)
    }

    /// Number of those that ingress-nginx would have reloaded for.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Relaxed)
    }

    /// Number of configurations applied.
    pub fn config_applies(&self) -> u64 {
        self.config_applies.load(Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Relaxed);
        self.connections_accepted.fetch_add(1, Relaxed);
    }

    /// Notes whether this replica holds the leader election's Lease `name`.
    pub fn set_leader(&self, name: &str, leading: bool) {
        let mut leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        *leader = Some((name.to_owned(), leading));
    }

    /// Notes the open-connection cap.
    pub fn set_max_connections(&self, max: usize) {
        self.max_connections
            .store(u64::try_from(max).unwrap_or(u64::MAX), Relaxed);
    }

    /// Counts a pause of accepting at the open-connection cap.
    pub fn accept_paused(&self) {
        self.accept_pauses.fetch_add(1, Relaxed);
    }

    /// Pauses of accepting at the open-connection cap so far.
    pub fn accept_pauses(&self) -> u64 {
        self.accept_pauses.load(Relaxed)
    }

    /// Counts an accept that failed for the listener.
    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Relaxed);
    }

    /// Appends every metric in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let routes: Vec<Arc<RouteMetrics>> = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::once(self.unrouted.clone())
                .chain(routes.values().cloned())
                .collect()
        };
        out.push_str("# HELP ingress_requests_total Requests answered, by ingress, service and status class.\n");
        out.push_str("# TYPE ingress_requests_total counter\n");
        for m in &routes {
            for (i, c) in m.classes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ingress_requests_total{{ingress=\"{}\",service=\"{}\",status_class=\"{}xx\"}} {}",
                    escape(&m.ingress),
                    escape(&m.service),
                    i + 1,
                    c.load(Relaxed)
                );
            }
        }
        out.push_str(
            "# HELP ingress_request_duration_seconds Time from request to response end.\n",
        );
        out.push_str("# TYPE ingress_request_duration_seconds histogram\n");
        for m in &routes {
            let labels = format!(
                "ingress=\"{}\",service=\"{}\"",
                escape(&m.ingress),
                escape(&m.service)
            );
            m.latency
                .render("ingress_request_duration_seconds", &labels, out);
        }
        out.push_str("# HELP ingress_mirror_requests_total mirror-target copies by outcome.\n");
        out.push_str("# TYPE ingress_mirror_requests_total counter\n");
        for (outcome, label) in [
            (MirrorOutcome::Sent, "sent"),
            (MirrorOutcome::Failed, "failed"),
            (MirrorOutcome::Skipped, "skipped"),
        ] {
            let _ = writeln!(
                out,
                "ingress_mirror_requests_total{{outcome=\"{label}\"}} {}",
                self.mirrors(outcome)
            );
        }
        out.push_str("# HELP ingress_upstream_errors_total Upstream failures by kind.\n");
        out.push_str("# TYPE ingress_upstream_errors_total counter\n");
        for (i, kind) in UpstreamErrorKind::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "ingress_upstream_errors_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.upstream_errors[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ingress_tls_handshakes_total TLS handshakes attempted.\n\
             # TYPE ingress_tls_handshakes_total counter\n\
             ingress_tls_handshakes_total {}\n\
             # HELP ingress_tls_handshake_failures_total TLS handshakes that failed or timed out.\n\
             # TYPE ingress_tls_handshake_failures_total counter\n\
             ingress_tls_handshake_failures_total {}\n\
             # HELP ingress_proxy_protocol_refused_total Connections closed for a missing or bad PROXY protocol header.\n\
             # TYPE ingress_proxy_protocol_refused_total counter\n\
             ingress_proxy_protocol_refused_total {}\n\
             # HELP ingress_blocked_total Connections closed and requests refused (403) because their client is in block-cidrs.\n\
             # TYPE ingress_blocked_total counter\n\
             ingress_blocked_total {}\n\
             # HELP ingress_config_applies_total Configurations applied to the proxy.\n\
             # TYPE ingress_config_applies_total counter\n\
             ingress_config_applies_total {}\n\
             # HELP ingress_config_generation Generation of the configuration in use.\n\
             # TYPE ingress_config_generation gauge\n\
             ingress_config_generation {}\n\
             # HELP ingress_open_connections Client connections open.\n\
             # TYPE ingress_open_connections gauge\n\
             ingress_open_connections {}\n\
             # HELP ingress_max_connections Client connections admitted at once (--max-connections).\n\
             # TYPE ingress_max_connections gauge\n\
             ingress_max_connections {}\n\
             # HELP ingress_accept_paused_total Times accepting paused with --max-connections open.\n\
             # TYPE ingress_accept_paused_total counter\n\
             ingress_accept_paused_total {}\n\
             # HELP ingress_accept_errors_total Accepts that failed for the listener (out of file descriptors, memory).\n\
             # TYPE ingress_accept_errors_total counter\n\
             ingress_accept_errors_total {}",
            self.tls_handshakes.load(Relaxed),
            self.tls_handshake_failures.load(Relaxed),
            self.proxy_protocol_refused.load(Relaxed),
            self.blocked.load(Relaxed),
            self.config_applies.load(Relaxed),
            self.config_generation.load(Relaxed),
            self.open_connections.load(Relaxed),
            self.max_connections.load(Relaxed),
            self.accept_pauses.load(Relaxed),
            self.accept_errors.load(Relaxed),
        );
        out.push_str(
            "# HELP ingress_config_apply_duration_seconds Time to apply a configuration.\n",
        );
        out.push_str("# TYPE ingress_config_apply_duration_seconds histogram\n");
        self.apply_duration
            .render("ingress_config_apply_duration_seconds", "", out);
        let locations: Vec<Arc<LocationSeries>> = {
            let locations = self.locations.lock().unwrap_or_else(|e| e.into_inner());
            let mut sorted: Vec<_> = locations.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            sorted.into_iter().map(|(_, l)| l.clone()).collect()
        };
        let requests_total =
            self.retired_requests.load(Relaxed) + routes.iter().map(|m| m.requests()).sum::<u64>();
        // Worked out before the locks below are taken: an apply waits on `certificates`.
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let orphans = applied
            .map(|s| super::orphans::orphans(&s))
            .unwrap_or_default();
        let certs = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
        let leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        super::nginx_metrics::render(
            &super::nginx_metrics::Sources {
                options: &self.options,
                locations: &locations,
                certificates: &certs.1,
                orphans: &orphans,
                last_apply: self.last_reload.load(Relaxed),
                config_rejected: self.config_rejected.load(Relaxed),
                applies: self.reloads.load(Relaxed),
                config_hash: self.config_hash.load(Relaxed),
                leader: leader.as_ref().map(|(n, l)| (n.as_str(), *l)),
                open_connections: self.open_connections.load(Relaxed),
                connections_accepted: self.connections_accepted.load(Relaxed),
                requests_total,
                process: super::process_stats::ProcessStats::of_self(),
            },
            out,
        );
    }
}

/// Escapes a label value (backslash, quote, newline).
pub(super) fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\\', '"', '\n']) {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_classes_histogram_and_prunes() {
        let m = ProxyMetrics::default();
        let r = m.route("ns/ing", "ns/svc:80");
        r.record(200, Duration::from_millis(3));
        r.record(503, Duration::from_millis(30));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "ingress_requests_total{ingress=\"ns/ing\",service=\"ns/svc:80\",status_class=\"2xx\"} 1"
        ));
        assert!(out.contains(
            "ingress_request_duration_seconds_bucket{ingress=\"ns/ing\",service=\"ns/svc:80\",le=\"0.005\"} 1"
        ));
        assert!(out.contains(
            "ingress_request_duration_seconds_count{ingress=\"ns/ing\",service=\"ns/svc:80\"} 2"
        ));
        drop(r);
        m.prune(&super::super::router::RouteTable::default());
        let mut out = String::new();
        m.render(&mut out);
        assert!(!out.contains("ns/ing"));
    }

    #[test]
    fn escapes_labels() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
