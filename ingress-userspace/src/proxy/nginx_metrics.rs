//! The proxy's metrics again under ingress-nginx's names (`nginx_ingress_controller_*`), so
//! dashboards and alerts written for it keep working after a migration. Request series are
//! kept per location (a path rule on its host, as ingress-nginx's) and labelled as its are:
//! `namespace`, `ingress`, `service`, `host`, `path`, `method`, `status`, and `canary` on the
//! requests a canary served: requests, their duration, the upstream's header and response
//! times, request and response sizes. Beside them: certificate expiry, configuration applies,
//! leadership, client connections and the process's CPU, memory and I/O. As ingress-nginx's,
//! every series but the certificates' carries the `controller_class`, `controller_namespace`
//! and `controller_pod` labels its dashboards choose a controller by (the certificates'
//! carry `class`).
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use http::Method;
use rustls::sign::CertifiedKey;

use super::{
    metrics::{escape, render_buckets, Histogram},
    process_stats::ProcessStats,
};
use crate::snapshot::{HostMatch, TlsConfig};

/// ingress-nginx's flags that shape its request series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesOptions {
    /// Label series with the rule's host (`--metrics-per-host`).
    pub per_host: bool,
    /// Label series with the status class (`2xx`) instead of the code
    /// (`--report-status-classes`).
    pub status_classes: bool,
    /// Request series families left out of `/metrics` (`--exclude-socket-metrics`), by name
    /// without the `nginx_ingress_controller_` prefix.
    pub excluded: Vec<String>,
    /// The `controller_*` labels; `None` leaves them out.
    pub controller: Option<ControllerLabels>,
}

/// Who this controller is, as ingress-nginx labels its series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerLabels {
    /// The controller class (`--controller-name`).
    pub class: String,
    /// The controller's namespace (`--election-namespace`).
    pub namespace: String,
    /// This replica's name (`--identity`, the pod's name).
    pub pod: String,
}

impl ControllerLabels {
    fn render(&self) -> String {
        format!(
            "controller_class=\"{}\",controller_namespace=\"{}\",controller_pod=\"{}\"",
            escape(&self.class),
            escape(&self.namespace),
            escape(&self.pod)
        )
    }
}

/// Two label lists as one (either may be empty).
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a.to_owned(),
        (true, false) => b.to_owned(),
        (false, false) => format!("{a},{b}"),
    }
}

/// A label list as written after a series name: in braces, or nothing when empty.
fn braced(labels: &str) -> String {
    match labels.is_empty() {
        true => String::new(),
        false => format!("{{{labels}}}"),
    }
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            per_host: true,
            status_classes: false,
            excluded: Vec::new(),
            controller: None,
        }
    }
}

impl SeriesOptions {
    fn shows(&self, family: &str) -> bool {
        !self.excluded.iter().any(|e| e == family)
    }
}

/// How one finished request went, as ingress-nginx's series observe it.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub status: u16,
    /// From the request's arrival to its response's end.
    pub elapsed: Duration,
    /// The request as read: head and declared body (nginx's `$request_length`).
    pub request_bytes: u64,
    /// The response as sent: head and body (nginx's `$bytes_sent`).
    pub response_bytes: u64,
    /// From the last upstream attempt's start to its response head, when one came
    /// (`$upstream_header_time`).
    pub upstream_header: Option<Duration>,
    /// From the last upstream attempt's start to the response's end, when one was made
    /// (`$upstream_response_time`).
    pub upstream_response: Option<Duration>,
}

/// ingress-nginx's default `--length-buckets` (bytes), for request and response sizes.
const LENGTH_BUCKETS: [u64; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];

/// A histogram of byte counts over [`LENGTH_BUCKETS`].
#[derive(Debug, Default)]
struct SizeHistogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LENGTH_BUCKETS.len() + 1],
    sum: AtomicU64,
}

impl SizeHistogram {
    fn observe(&self, n: u64) {
        // The bounds are 10, 20, ... 100: the bucket is found by division.
        let idx = (n.saturating_sub(1) / 10).min(LENGTH_BUCKETS.len() as u64) as usize;
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum.fetch_add(n, Relaxed);
    }
}

/// The histograms of the request series, as one rendering loop sees them.
trait RequestHistogram {
    fn count(&self) -> u64;
    fn render(&self, name: &str, labels: &str, out: &mut String);
}

impl RequestHistogram for Histogram {
    fn count(&self) -> u64 {
        Histogram::count(self)
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        Histogram::render(self, name, labels, out);
    }
}

impl RequestHistogram for SizeHistogram {
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sum = self.sum.load(Relaxed);
        render_buckets(name, labels, &LENGTH_BUCKETS, &self.buckets, sum, out);
    }
}

/// The requests of one method and status at a location.
#[derive(Debug, Default)]
struct Observed {
    duration: Histogram,
    upstream_header: Histogram,
    upstream_response: Histogram,
    request_size: SizeHistogram,
    response_size: SizeHistogram,
}

impl Observed {
    fn observe(&self, f: &Finished) {
        self.duration.observe(f.elapsed);
        self.request_size.observe(f.request_bytes);
        self.response_size.observe(f.response_bytes);
        if let Some(d) = f.upstream_header {
            self.upstream_header.observe(d);
        }
        if let Some(d) = f.upstream_response {
            self.upstream_response.observe(d);
        }
    }
}

/// Status codes whose series are found without a lock; any other's go to a locked map.
/// (100 and 300 stand for their classes under `--report-status-classes`.)
const COMMON: [u16; 26] = [
    100, 200, 201, 202, 204, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408,
    413, 429, 499, 500, 502, 503, 504,
];

/// One method's requests at a location, by exact status code; each status's series is made
/// on its first request.
#[derive(Debug, Default)]
struct MethodSeries {
    common: [OnceLock<Arc<Observed>>; COMMON.len()],
    other: Mutex<BTreeMap<u16, Arc<Observed>>>,
}

impl MethodSeries {
    fn observe(&self, f: &Finished) {
        match COMMON.binary_search(&f.status) {
            Ok(i) => self.common[i].get_or_init(Arc::default).observe(f),
            Err(_) => {
                let mut other = self.other.lock().unwrap_or_else(|e| e.into_inner());
                other.entry(f.status).or_default().observe(f);
            }
        }
    }

    /// Every status seen, with its series, in code order.
    fn statuses(&self) -> Vec<(u16, Arc<Observed>)> {
        let mut all: Vec<(u16, Arc<Observed>)> = COMMON
            .iter()
            .zip(&self.common)
            .filter_map(|(s, o)| Some((*s, o.get()?.clone())))
            .collect();
        let other = self.other.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(other.iter().map(|(s, o)| (*s, o.clone())));
        all.sort_unstable_by_key(|(s, _)| *s);
        all
    }
}

/// Methods counted under their own name; any other is counted as `OTHER`, so clients cannot
/// make a series per invented method.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

/// A request method's slot in a [`LocationSeries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSlot(u8);

impl MethodSlot {
    /// The slot of `m` (`OTHER` for a method not in [`METHODS`]).
    pub fn of(m: &Method) -> Self {
        let i = METHODS.iter().position(|k| k == m).unwrap_or(METHODS.len());
        MethodSlot(i as u8)
    }

    fn label(self) -> &'static str {
        METHODS
            .get(usize::from(self.0))
            .map_or("OTHER", Method::as_str)
    }
}

/// What identifies a location's series.
#[derive(Clone, Copy, Debug)]
pub struct LocationLabels<'a> {
    /// `namespace/name` of the Ingress.
    pub ingress: &'a str,
    /// The upstream, `namespace/service:port`.
    pub service: &'a str,
    /// The rule's host (`*.` for wildcards, empty for rules without one); `None` leaves the
    /// label out (`--metrics-per-host=false`).
    pub host: Option<&'a HostMatch>,
    /// The path as matched.
    pub path: &'a str,
    /// The canary's upstream, `namespace/service:port`, when the route has one.
    pub canary: Option<&'a str>,
}

impl LocationLabels<'_> {
    /// The series' key and label text (without `method`, `status` and `canary`).
    pub(super) fn render(&self) -> String {
        let mut out = route_labels(self.ingress, self.service);
        if let Some(host) = self.host {
            let host = host.name().unwrap_or_default();
            let _ = write!(out, ",host=\"{}\"", escape(&host));
        }
        let _ = write!(out, ",path=\"{}\"", escape(self.path));
        out
    }
}

/// The requests of one location (a path rule on its host, ingress-nginx's `location`) by
/// method, and apart those its canary served.
#[derive(Debug)]
pub struct LocationSeries {
    /// `namespace`, `ingress`, `service`, `host` and `path`, rendered once.
    labels: Box<str>,
    /// The Ingress, `namespace/name`: the series go with it.
    ingress: Box<str>,
    /// The `canary` label of the requests the canary served: its upstream as ingress-nginx
    /// names upstreams (`namespace-service-port`).
    canary: Box<str>,
    /// The requests the main route served, by method slot: shared by every series of the
    /// same labels, so attaching a canary (a new series, for its own label) keeps counting
    /// on the same main series instead of starting a second one with the same labels.
    /// Made on the first request, as each method's series on its own first one.
    main: MainHalf,
    /// The requests the canary served, by method slot.
    canaried: OnceLock<Box<Half>>,
    /// Statuses are counted by class, each class under its `x00` code.
    status_classes: bool,
}

/// A location's series by method slot.
type Half = [OnceLock<Box<MethodSeries>>; METHODS.len() + 1];

/// The main half of a location's series, shared by its series of every canary.
#[derive(Clone, Debug, Default)]
pub struct MainHalf(Arc<OnceLock<Box<Half>>>);

impl LocationSeries {
    /// The series of a location of `ingress` (`namespace/name`), from its rendered labels
    /// and its canary's `canary` label (`Canary::label`).
    pub fn new(labels: String, ingress: &str, canary: Option<&str>) -> Self {
        LocationSeries {
            labels: labels.into(),
            ingress: ingress.into(),
            canary: canary.unwrap_or_default().into(),
            main: MainHalf::default(),
            canaried: OnceLock::new(),
            status_classes: false,
        }
    }

    /// The same, counting statuses by class (`--report-status-classes`).
    pub(super) fn by_class(self) -> Self {
        LocationSeries {
            status_classes: true,
            ..self
        }
    }

    /// Counts the main route's requests on `main`: another series' of the same labels.
    pub(super) fn sharing(self, main: MainHalf) -> Self {
        LocationSeries { main, ..self }
    }

    /// Its main half, to share with the series of the same labels and another canary.
    pub(super) fn main_half(&self) -> &MainHalf {
        &self.main
    }

    /// The Ingress of the location, `namespace/name`.
    pub fn ingress(&self) -> &str {
        &self.ingress
    }

    /// Records a finished `method` request, `on_canary` when the canary served it.
    pub fn record(&self, method: MethodSlot, on_canary: bool, finished: &Finished) {
        let half = match on_canary {
            false => &*self.main.0,
            true => &self.canaried,
        }
        .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        let Some(slot) = half.get(usize::from(method.0)) else {
            return;
        };
        let series = slot.get_or_init(Box::default);
        if self.status_classes {
            let status = finished.status / 100 * 100;
            series.observe(&Finished {
                status,
                ..*finished
            });
        } else {
            series.observe(finished);
        }
    }

    /// Every method series with its full label text (status aside); the main half only
    /// with `main` (a location's series of other canaries share it).
    fn each(&self, main: bool) -> impl Iterator<Item = (String, &MethodSeries)> + '_ {
        let halves = [self.main.0.get().filter(|_| main), self.canaried.get()];
        halves
            .into_iter()
            .enumerate()
            .flat_map(move |(half, slots)| {
                slots
                    .into_iter()
                    .flat_map(|s| s.iter())
                    .enumerate()
                    .filter_map(move |(i, slot)| {
                        let m = slot.get()?;
                        let method = MethodSlot(i as u8).label();
                        let labels = match half {
                            0 => format!("{},method=\"{method}\"", self.labels),
                            _ => format!(
                                "{},method=\"{method}\",canary=\"{}\"",
                                self.labels,
                                escape(&self.canary)
                            ),
                        };
                        Some((labels, &**m))
                    })
            })
    }
}

/// When one served name's certificate expires, and what identifies the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertExpiry {
    pub namespace: String,
    pub host: String,
    pub secret: String,
    pub leaf: Arc<LeafFacts>,
}

/// What ingress-nginx's `ssl_certificate_info` says of a leaf certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeafFacts {
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// The serial number, in decimal.
    pub serial: String,
    pub issuer_common_name: String,
    pub issuer_organization: String,
    /// As Go names it: `RSA`, `ECDSA`, `Ed25519`, `DSA`, else `Unknown`.
    pub public_key_algorithm: &'static str,
}

/// Expiry times of the certificates of each applied configuration, each chain parsed once
/// while it stays in use.
#[derive(Debug, Default)]
pub struct CertExpiries {
    /// By the address of the chain's `CertifiedKey`, which the value keeps alive.
    parsed: HashMap<usize, (Arc<CertifiedKey>, Option<Arc<LeafFacts>>)>,
}

impl CertExpiries {
    /// One entry per name each certificate of `tls` serves (`*.` for wildcards), and for
    /// the `--default-ssl-certificate` one for `_` (the catch-all server, as ingress-nginx
    /// names it) and one per name in `default_served` (TLS hosts without a certificate of
    /// their own, which it serves); a chain whose leaf cannot be read is left out.
    pub fn of(&mut self, tls: &TlsConfig, default_served: &[String]) -> Vec<CertExpiry> {
        let mut kept = HashMap::with_capacity(tls.certs.len() + 1);
        let mut out = Vec::new();
        let named = tls.certs.iter().map(|cert| {
            let names: Vec<String> = cert.hosts.iter().filter_map(HostMatch::name).collect();
            (cert, names)
        });
        let default = tls.default.as_ref().map(|cert| {
            let names = std::iter::once("_".to_string())
                .chain(default_served.iter().cloned())
                .collect();
            (cert, names)
        });
        for (cert, names) in named.chain(default) {
            let addr = Arc::as_ptr(&cert.key) as usize;
            let (_, leaf) = kept.entry(addr).or_insert_with(|| {
                self.parsed.remove(&addr).unwrap_or_else(|| {
                    (
                        cert.key.clone(),
                        cert.key
                            .cert
                            .first()
                            .and_then(|der| leaf_facts(der))
                            .map(Arc::new),
                    )
                })
            });
            let Some(leaf) = leaf.clone() else {
                continue;
            };
            for host in names {
                out.push(CertExpiry {
                    namespace: cert.secret.namespace.clone(),
                    host,
                    secret: cert.secret.name.clone(),
                    leaf: leaf.clone(),
                });
            }
        }
        self.parsed = kept;
        out
    }
}

/// The facts of a DER leaf certificate; `None` when it cannot be parsed.
fn leaf_facts(leaf: &[u8]) -> Option<LeafFacts> {
    use x509_parser::public_key::PublicKey;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let spki = cert.public_key();
    let public_key_algorithm = match spki.parsed() {
        Ok(PublicKey::RSA(_)) => "RSA",
        Ok(PublicKey::EC(_)) => "ECDSA",
        Ok(PublicKey::DSA(_)) => "DSA",
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519",
        _ => "Unknown",
    };
    Some(LeafFacts {
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.serial.to_string(),
        issuer_common_name: first_value(cert.issuer().iter_common_name()),
        issuer_organization: first_value(cert.issuer().iter_organization()),
        public_key_algorithm,
    })
}

/// The text of the first of `values` (empty when there is none, or it is not text).
fn first_value<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> String {
    values
        .next()
        .and_then(|v| v.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// What the compatible series are rendered from.
pub struct Sources<'a> {
    pub options: &'a SeriesOptions,
    pub locations: &'a [Arc<LocationSeries>],
    pub certificates: &'a [CertExpiry],
    /// The Ingresses in use, for `orphan_ingress`.
    pub orphans: &'a [super::orphans::Orphan],
    /// Unix time of the last configuration applied that ingress-nginx would have reloaded
    /// for (endpoint-only changes aside); 0 before the first.
    pub last_apply: u64,
    /// The controller ConfigMap's last change was refused (`Global::config_rejected`).
    pub config_rejected: bool,
    /// Configurations applied so far, endpoint-only changes aside (ingress-nginx's reloads).
    pub applies: u64,
    /// `Snapshot::config_hash` of the configuration in use (0 until it is known).
    pub config_hash: u64,
    /// The Lease's name, and whether this replica holds it; `None` without an election.
    pub leader: Option<(&'a str, bool)>,
    pub open_connections: i64,
    /// Client connections that reached HTTP (after TLS), since start.
    pub connections_accepted: u64,
    /// Requests answered, since start.
    pub requests_total: u64,
    /// The process's CPU, memory and I/O; `None` where `/proc` cannot be read.
    pub process: Option<ProcessStats>,
}

/// A histogram family of the request series: its name, help, and where each series keeps it.
type Family = (
    &'static str,
    &'static str,
    fn(&Observed) -> &dyn RequestHistogram,
);

/// Appends the `nginx_ingress_controller_*` series.
pub fn render(s: &Sources<'_>, out: &mut String) {
    let ctl = s.options.controller.as_ref().map(ControllerLabels::render);
    let ctl = ctl.as_deref().unwrap_or_default();
    let mut series: Vec<(String, Arc<Observed>)> = Vec::new();
    let mut mains = std::collections::HashSet::new();
    for location in s.locations {
        let main = mains.insert(Arc::as_ptr(&location.main_half().0));
        for (labels, m) in location.each(main) {
            for (status, o) in m.statuses() {
                let status = match location.status_classes {
                    true => format!("{}xx", status / 100),
                    false => status.to_string(),
                };
                series.push((join(&format!("{labels},status=\"{status}\""), ctl), o));
            }
        }
    }
    if s.options.shows("requests") {
        family(
            out,
            "requests",
            "counter",
            "The total number of client requests.",
        );
        for (labels, o) in &series {
            let n = o.duration.count();
            let _ = writeln!(out, "nginx_ingress_controller_requests{{{labels}}} {n}");
        }
    }
    let histograms: [Family; 5] = [
        (
            "request_duration_seconds",
            "The request processing time in seconds.",
            |o| &o.duration,
        ),
        (
            "header_duration_seconds",
            "The time spent on receiving the first header from the upstream server.",
            |o| &o.upstream_header,
        ),
        (
            "response_duration_seconds",
            "The time spent on receiving the response from the upstream server.",
            |o| &o.upstream_response,
        ),
        (
            "request_size",
            "The request length (including request line, header, and request body).",
            |o| &o.request_size,
        ),
        (
            "response_size",
            "The response length (including status line, header, and body).",
            |o| &o.response_size,
        ),
    ];
    for (name, help, of) in histograms.into_iter().filter(|f| s.options.shows(f.0)) {
        family(out, name, "histogram", help);
        let name = format!("nginx_ingress_controller_{name}");
        // As ingress-nginx: no upstream series for requests never sent upstream (every
        // request has a duration and sizes).
        for (labels, o) in series.iter().filter(|(_, o)| of(o).count() > 0) {
            of(o).render(&name, labels, out);
        }
    }
    family(
        out,
        "ssl_expire_time_seconds",
        "gauge",
        "Number of seconds since 1970 to the SSL Certificate expire.",
    );
    // ingress-nginx's `class` label: the controller class.
    let class = match &s.options.controller {
        Some(c) => format!(",class=\"{}\"", escape(&c.class)),
        None => String::new(),
    };
    for c in s.certificates {
        let _ = writeln!(
            out,
            "nginx_ingress_controller_ssl_expire_time_seconds{{host=\"{}\",namespace=\"{}\",\
             secret_name=\"{}\",identifier=\"-{}\"{class}}} {}",
            escape(&c.host),
            escape(&c.namespace),
            escape(&c.secret),
            c.leaf.serial,
            c.leaf.not_after
        );
    }
    family(
        out,
        "ssl_certificate_info",
        "gauge",
        "Hold all labels associated to a certificate.",
    );
    for c in s.certificates {
        let l = &c.leaf;
        // ingress-nginx's identifier: the issuer's serialNumber attribute (hardly ever set:
        // empty here) and the certificate's serial.
        let _ = writeln!(
            out,
            "nginx_ingress_controller_ssl_certificate_info{{host=\"{}\",namespace=\"{}\",\
             secret_name=\"{}\",identifier=\"-{}\",issuer_organization=\"{}\",\
             issuer_common_name=\"{}\",serial_number=\"{}\",public_key_algorithm=\"{}\"{class}}} 1",
            escape(&c.host),
            escape(&c.namespace),
            escape(&c.secret),
            l.serial,
            escape(&l.issuer_organization),
            escape(&l.issuer_common_name),
            l.serial,
            l.public_key_algorithm,
        );
    }
    render_controller(s, ctl, out);
    if let Some(p) = &s.process {
        render_process(p, ctl, out);
    }
}

/// The `# HELP` and `# TYPE` lines of `nginx_ingress_controller_{name}`.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP nginx_ingress_controller_{name} {help}\n\
         # TYPE nginx_ingress_controller_{name} {kind}"
    );
}

/// The build, configuration applies, leadership and client connections, each series
/// labelled with `ctl` (the `controller_*` labels).
fn render_controller(s: &Sources<'_>, ctl: &str, out: &mut String) {
    let only = braced(ctl);
    family(
        out,
        "build_info",
        "gauge",
        "A metric with a constant '1' labeled with information about the build.",
    );
    let build = format!(
        "release=\"{}\",build=\"UNKNOWN\",repository=\"{}\"",
        env!("CARGO_PKG_VERSION"),
        match env!("CARGO_PKG_REPOSITORY") {
            "" => "UNKNOWN",
            repository => repository,
        }
    );
    let _ = writeln!(
        out,
        "nginx_ingress_controller_build_info{} 1",
        braced(&join(ctl, &build))
    );
    family(
        out,
        "config_hash",
        "gauge",
        "Running configuration hash actually running.",
    );
    let _ = writeln!(
        out,
        "nginx_ingress_controller_config_hash{only} {}",
        s.config_hash as f64
    );
    // A snapshot is applied whole or not at all (bad objects are reported and left out); what
    // fails as a reload would in nginx is a controller ConfigMap with an invalid value, whose
    // change is not applied.
    family(
        out,
        "config_last_reload_successful",
        "gauge",
        "Whether the last configuration reload attempt was successful.",
    );
    let _ = writeln!(
        out,
        "nginx_ingress_controller_config_last_reload_successful{only} {}",
        u8::from(s.last_apply > 0 && !s.config_rejected)
    );
    family(
        out,
        "config_last_reload_successful_timestamp_seconds",
        "gauge",
        "Timestamp of the last successful configuration reload.",
    );
    let _ = writeln!(
        out,
        "nginx_ingress_controller_config_last_reload_successful_timestamp_seconds{only} {}",
        s.last_apply
    );
    family(
        out,
        "success",
        "counter",
        "Cumulative number of Ingress controller reload operations.",
    );
    let _ = writeln!(out, "nginx_ingress_controller_success{only} {}", s.applies);
    family(
        out,
        "orphan_ingress",
        "gauge",
        "Gauge reporting status of ingress orphanity, 1 indicates orphaned ingress. 'namespace' \
         is the string used to identify namespace of ingress, 'ingress' for ingress name and \
         'type' for 'no-service' or 'no-endpoint' of orphanity",
    );
    for o in s.orphans {
        for (kind, on) in [("no-endpoint", o.no_endpoint), ("no-service", o.no_service)] {
            let labels = format!(
                "namespace=\"{}\",ingress=\"{}\",type=\"{kind}\"",
                escape(&o.namespace),
                escape(&o.ingress)
            );
            let _ = writeln!(
                out,
                "nginx_ingress_controller_orphan_ingress{} {}",
                braced(&join(&labels, ctl)),
                u8::from(on)
            );
        }
    }
    if let Some((name, leading)) = s.leader {
        family(
            out,
            "leader_election_status",
            "gauge",
            "Gauge reporting status of the leader election, 0 indicates follower, 1 indicates \
             leader.",
        );
        let labels = join(&format!("name=\"{}\"", escape(name)), ctl);
        let _ = writeln!(
            out,
            "nginx_ingress_controller_leader_election_status{{{labels}}} {}",
            u8::from(leading)
        );
    }
    family(
        out,
        "nginx_process_connections",
        "gauge",
        "Current number of client connections with state {active}.",
    );
    let _ = writeln!(
        out,
        "nginx_ingress_controller_nginx_process_connections{{{}}} {}",
        join("state=\"active\"", ctl),
        s.open_connections
    );
    family(
        out,
        "nginx_process_connections_total",
        "counter",
        "Total number of connections with state {accepted, handled}.",
    );
    // Every connection accepted is handled: none is dropped for a worker limit.
    for state in ["accepted", "handled"] {
        let _ = writeln!(
            out,
            "nginx_ingress_controller_nginx_process_connections_total{{{}}} {}",
            join(&format!("state=\"{state}\""), ctl),
            s.connections_accepted
        );
    }
    family(
        out,
        "nginx_process_requests_total",
        "counter",
        "Total number of client requests.",
    );
    let _ = writeln!(
        out,
        "nginx_ingress_controller_nginx_process_requests_total{only} {}",
        s.requests_total
    );
}

/// The proxy process's own figures, under the names ingress-nginx gives nginx's, labelled
/// with `ctl`.
fn render_process(p: &ProcessStats, ctl: &str, out: &mut String) {
    let only = braced(ctl);
    let rows: [(&str, &str, &str, f64); 7] = [
        ("num_procs", "gauge", "Number of processes.", 1.0),
        (
            "cpu_seconds_total",
            "counter",
            "CPU usage in seconds (user and system).",
            p.cpu_seconds,
        ),
        (
            "resident_memory_bytes",
            "gauge",
            "Number of bytes of memory in use.",
            p.resident_bytes as f64,
        ),
        (
            "virtual_memory_bytes",
            "gauge",
            "Number of bytes of virtual memory.",
            p.virtual_bytes as f64,
        ),
        (
            "oldest_start_time_seconds",
            "gauge",
            "Start time in seconds since 1970/01/01.",
            p.start_time as f64,
        ),
        (
            "read_bytes_total",
            "counter",
            "Number of bytes read from storage.",
            p.read_bytes as f64,
        ),
        (
            "write_bytes_total",
            "counter",
            "Number of bytes written to storage.",
            p.write_bytes as f64,
        ),
    ];
    for (name, kind, help, value) in rows {
        let name = format!("nginx_process_{name}");
        family(out, &name, kind, help);
        let _ = writeln!(out, "nginx_ingress_controller_{name}{only} {value}");
    }
}

/// `namespace`, `ingress` (its name alone) and `service` (`name`, without namespace or
/// port, as ingress-nginx's label) of a route's series.
fn route_labels(ingress: &str, service: &str) -> String {
    let (namespace, ingress) = ingress.split_once('/').unwrap_or(("", ingress));
    let service = service.split_once('/').map_or(service, |(_, s)| s);
    let service = service.rsplit_once(':').map_or(service, |(s, _)| s);
    format!(
        "namespace=\"{}\",ingress=\"{}\",service=\"{}\"",
        escape(namespace),
        escape(ingress),
        escape(service)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that took `ms` and sent `bytes` in all, never sent upstream.
    fn done(status: u16, ms: u64, bytes: u64) -> Finished {
        Finished {
            status,
            elapsed: Duration::from_millis(ms),
            request_bytes: 40,
            response_bytes: bytes,
            upstream_header: None,
            upstream_response: None,
        }
    }

    #[test]
    fn statuses_count_exactly_common_or_not() {
        let m = MethodSeries::default();
        for status in [200, 200, 503, 418, 418, 599, 200] {
            m.observe(&done(status, 1, 0));
        }
        let counts: Vec<(u16, u64)> = m
            .statuses()
            .iter()
            .map(|(s, o)| (*s, o.duration.count()))
            .collect();
        assert_eq!(counts, [(200, 3), (418, 2), (503, 1), (599, 1)]);
        assert!(
            COMMON.windows(2).all(|w| w[0] < w[1]),
            "sorted for the search"
        );
    }

    #[test]
    fn leaf_facts_name_issuer_serial_and_key_as_ingress_nginx_does() {
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Example Issuing CA");
        ca.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Org");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
        for (alg, name) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, "ECDSA"),
            (&rcgen::PKCS_ED25519, "Ed25519"),
        ] {
            let mut leaf = rcgen::CertificateParams::new(vec!["a.test".into()]).expect("params");
            leaf.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, 0x00]));
            let key = rcgen::KeyPair::generate_for(alg).expect("key");
            let cert = leaf.signed_by(&key, &ca).expect("leaf");
            let facts = leaf_facts(cert.der()).expect("parses");
            assert_eq!(facts.public_key_algorithm, name);
            assert_eq!(facts.serial, "256");
            assert_eq!(facts.issuer_common_name, "Example Issuing CA");
            assert_eq!(facts.issuer_organization, "Example Org");
        }
        assert_eq!(leaf_facts(b"not a certificate"), None);
    }

    #[test]
    fn sizes_fall_in_ingress_nginx_length_buckets() {
        let h = SizeHistogram::default();
        for n in [0, 10, 11, 100, 101, 5000] {
            h.observe(n);
        }
        let mut out = String::new();
        h.render("x", "a=\"b\"", &mut out);
        for want in [
            "x_bucket{a=\"b\",le=\"10\"} 2\n",
            "x_bucket{a=\"b\",le=\"20\"} 3\n",
            "x_bucket{a=\"b\",le=\"90\"} 3\n",
            "x_bucket{a=\"b\",le=\"100\"} 4\n",
            "x_bucket{a=\"b\",le=\"+Inf\"} 6\n",
            "x_sum{a=\"b\"} 5222\n",
            "x_count{a=\"b\"} 6\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    fn labels<'a>(host: &'a HostMatch, canary: Option<&'a str>) -> LocationLabels<'a> {
        LocationLabels {
            ingress: "shop/web",
            service: "shop/api:8080",
            host: Some(host),
            path: "/api",
            canary,
        }
    }

    fn rendered(m: &super::super::metrics::ProxyMetrics) -> String {
        let mut out = String::new();
        m.render(&mut out);
        out
    }

    /// A canary attached to a location (a new series, for its own label) counts the main
    /// route's requests on the location's one series: no second series with the same
    /// labels, and none frozen at the count before the canary came.
    #[test]
    fn a_canary_attached_later_keeps_one_main_series() {
        let m = super::super::metrics::ProxyMetrics::default();
        let host = HostMatch::Exact("shop.example".into());
        let get = MethodSlot::of(&Method::GET);
        let before = m.location(labels(&host, None));
        before.record(get, false, &done(200, 1, 1));
        before.record(get, false, &done(200, 1, 1));
        let with_canary = m.location(labels(&host, Some("shop-api-next-8080")));
        with_canary.record(get, false, &done(200, 1, 1));
        with_canary.record(get, true, &done(200, 1, 1));
        let out = rendered(&m);
        let base = "namespace=\"shop\",ingress=\"web\",service=\"api\",host=\"shop.example\",path=\"/api\"";
        let main =
            format!("nginx_ingress_controller_requests{{{base},method=\"GET\",status=\"200\"}} ");
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(&main)).collect();
        assert_eq!(lines, [format!("{main}3")], "{out}");
        let canary = format!(
            "nginx_ingress_controller_requests{{{base},method=\"GET\",canary=\"shop-api-next-8080\",status=\"200\"}} 1"
        );
        assert_eq!(out.lines().filter(|l| *l == canary).count(), 1, "{out}");
    }

    #[test]
    fn location_series_are_labelled_as_ingress_nginx_labels_them() {
        let m = super::super::metrics::ProxyMetrics::default();
        let host = HostMatch::Exact("shop.example".into());
        let l = m.location(labels(&host, Some("shop-api-next-8080")));
        let ms = Duration::from_millis;
        let get = MethodSlot::of(&Method::GET);
        let upstream = |f: Finished, header: u64, all: u64| Finished {
            upstream_header: Some(ms(header)),
            upstream_response: Some(ms(all)),
            ..f
        };
        l.record(get, false, &upstream(done(200, 2, 100), 1, 2));
        l.record(get, false, &upstream(done(200, 2, 50), 1, 2));
        // An answer of the proxy's own: no upstream series.
        l.record(get, false, &done(308, 1, 120));
        l.record(
            MethodSlot::of(&Method::POST),
            false,
            &upstream(done(503, 30, 0), 20, 30),
        );
        l.record(get, true, &done(200, 2, 7));
        // Methods outside the standard set share one series: a client cannot add series.
        for token in [&b"PROPFIND"[..], b"BREW"] {
            let odd = Method::from_bytes(token).expect("a method token");
            l.record(MethodSlot::of(&odd), false, &done(405, 1, 0));
        }
        let out = rendered(&m);
        let base = "namespace=\"shop\",ingress=\"web\",service=\"api\",host=\"shop.example\",path=\"/api\"";
        for want in [
            format!("nginx_ingress_controller_requests{{{base},method=\"GET\",status=\"200\"}} 2"),
            format!("nginx_ingress_controller_requests{{{base},method=\"POST\",status=\"503\"}} 1"),
            format!("nginx_ingress_controller_requests{{{base},method=\"OTHER\",status=\"405\"}} 2"),
            format!(
                "nginx_ingress_controller_requests{{{base},method=\"GET\",canary=\"shop-api-next-8080\",status=\"200\"}} 1"
            ),
            format!("nginx_ingress_controller_requests{{{base},method=\"GET\",status=\"308\"}} 1"),
            format!(
                "nginx_ingress_controller_response_size_sum{{{base},method=\"GET\",status=\"200\"}} 150"
            ),
            format!(
                "nginx_ingress_controller_response_size_count{{{base},method=\"GET\",status=\"200\"}} 2"
            ),
            format!(
                "nginx_ingress_controller_request_size_sum{{{base},method=\"GET\",status=\"200\"}} 80"
            ),
            format!(
                "nginx_ingress_controller_request_duration_seconds_bucket{{{base},method=\"POST\",status=\"503\",le=\"0.05\"}} 1"
            ),
            format!(
                "nginx_ingress_controller_header_duration_seconds_bucket{{{base},method=\"POST\",status=\"503\",le=\"0.01\"}} 0"
            ),
            format!(
                "nginx_ingress_controller_header_duration_seconds_bucket{{{base},method=\"POST\",status=\"503\",le=\"0.025\"}} 1"
            ),
            format!(
                "nginx_ingress_controller_response_duration_seconds_sum{{{base},method=\"GET\",status=\"200\"}} 0.004"
            ),
        ] {
            assert!(out.contains(&want), "missing {want:?} in\n{out}");
        }
        // No series for a method that saw no request, nor upstream series for answers that
        // never went upstream.
        assert!(!out.contains("method=\"PUT\""));
        for family in ["header", "response"] {
            let upstream = format!("nginx_ingress_controller_{family}_duration_seconds_count");
            assert!(!out.contains(&format!(
                "{upstream}{{{base},method=\"GET\",status=\"308\"}}"
            )));
            assert!(!out.contains(&format!("{upstream}{{{base},method=\"GET\",canary")));
        }
        // The same location again is the same series; gone once no table serves its
        // Ingress, even while a request still holds it.
        assert!(Arc::ptr_eq(
            &l,
            &m.location(labels(&host, Some("shop-api-next-8080")))
        ));
        m.prune(&super::super::router::RouteTable::default());
        assert!(!rendered(&m).contains("shop.example"));
        drop(l);
    }

    #[test]
    fn controller_and_process_series_as_ingress_nginx_names_them() {
        let m = super::super::metrics::ProxyMetrics::default();
        let value = |out: &str, series: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')))
                .unwrap_or_else(|| panic!("no {series} in\n{out}"));
            line[series.len()..].trim().parse().expect("a number")
        };
        let out = rendered(&m);
        assert_eq!(value(&out, "nginx_ingress_controller_success"), 0.0);
        assert!(
            !out.contains("leader_election_status"),
            "no election, no series"
        );
        // (generation, refused ConfigMap, a reload of ingress-nginx's)
        let apply = |generation, rejected, reload| {
            m.config_applied(
                generation,
                &TlsConfig::default(),
                &[],
                rejected,
                reload,
                Duration::from_millis(1),
            )
        };
        apply(1, true, true);
        assert_eq!(
            value(
                &rendered(&m),
                "nginx_ingress_controller_config_last_reload_successful"
            ),
            0.0,
            "a refused controller ConfigMap fails the reload"
        );
        apply(2, false, true);
        m.set_config_hash(42);
        // Endpoints only: applied, but no reload of ingress-nginx's.
        apply(3, false, false);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.set_leader("ingressd-leader", true);
        // Requests of a route that goes away still count in the process's total.
        let route = m.route("shop/web", "shop/api:80");
        route.record(200, Duration::from_millis(1));
        route.record(404, Duration::from_millis(1));
        m.unrouted().record(404, Duration::from_millis(1));
        drop(route);
        m.prune(&super::super::router::RouteTable::default());
        let out = rendered(&m);
        for (series, want) in [
            ("nginx_ingress_controller_success", 2.0),
            ("ingress_config_applies_total", 3.0),
            ("nginx_ingress_controller_config_hash", 42.0),
            (
                "nginx_ingress_controller_config_last_reload_successful",
                1.0,
            ),
            (
                "nginx_ingress_controller_nginx_process_connections{state=\"active\"}",
                1.0,
            ),
            (
                "nginx_ingress_controller_nginx_process_connections_total{state=\"accepted\"}",
                2.0,
            ),
            ("nginx_ingress_controller_nginx_process_requests_total", 3.0),
            (
                "nginx_ingress_controller_leader_election_status{name=\"ingressd-leader\"}",
                1.0,
            ),
            ("nginx_ingress_controller_nginx_process_num_procs", 1.0),
        ] {
            assert_eq!(value(&out, series), want, "{series}");
        }
        assert!(
            value(
                &out,
                "nginx_ingress_controller_nginx_process_resident_memory_bytes"
            ) > 1e6
        );
        // Present (a fresh test process may not have used a clock tick of CPU yet).
        assert!(
            value(
                &out,
                "nginx_ingress_controller_nginx_process_cpu_seconds_total"
            ) >= 0.0
        );
        let started = value(
            &out,
            "nginx_ingress_controller_nginx_process_oldest_start_time_seconds",
        );
        assert!(started > 1.7e9, "{started}");
        m.set_leader("ingressd-leader", false);
        let out = rendered(&m);
        let leader = "nginx_ingress_controller_leader_election_status{name=\"ingressd-leader\"}";
        assert_eq!(value(&out, leader), 0.0);
    }

    /// ingress-nginx's dashboards list controllers from `config_hash`'s `controller_*` labels
    /// and filter every panel by them: every series must carry them, or choosing a
    /// controller empties the panels. Certificates carry `class` instead.
    #[test]
    fn every_series_names_the_controller_as_ingress_nginx_does() {
        let m = super::super::metrics::ProxyMetrics::new(SeriesOptions {
            controller: Some(ControllerLabels {
                class: "k8s.io/ingress-nginx".into(),
                namespace: "ingress".into(),
                pod: "ingressd-x7k2p".into(),
            }),
            ..SeriesOptions::default()
        });
        let host = HostMatch::Exact("shop.example".into());
        let l = m.location(labels(&host, Some("shop-api-next-8080")));
        l.record(MethodSlot::of(&Method::GET), false, &done(200, 1, 10));
        l.record(MethodSlot::of(&Method::GET), true, &done(200, 1, 10));
        let (chain, key) = crate::translate::testutil::self_signed(&["shop.example"]);
        let key = crate::translate::tls::certified_key_from_pem(chain.as_bytes(), key.as_bytes())
            .expect("a certificate");
        let tls = TlsConfig {
            certs: vec![crate::snapshot::TlsCert {
                origin: Default::default(),
                secret: Default::default(),
                hosts: vec![host.clone()],
                key: Arc::new(key),
            }],
            ..TlsConfig::default()
        };
        m.config_applied(1, &tls, &[], false, true, Duration::from_millis(1));
        m.set_config_hash(9);
        m.set_leader("lease", true);
        // An Ingress routing to a Service without endpoints.
        let objects = crate::store::cache::ObjectCache::from_objects([
            crate::source::Object::IngressClass(crate::translate::testutil::mk_class(
                "xdp",
                crate::translate::testutil::CONTROLLER,
                false,
            )),
            crate::source::Object::Service(
                crate::translate::testutil::mk_service("shop", "web")
                    .port("http", 80, 8080)
                    .build(),
            ),
            crate::source::Object::Ingress(
                crate::translate::testutil::mk_ingress("shop", "api")
                    .host("shop.example")
                    .path("/", "Prefix", "web", 80)
                    .build(),
            ),
        ]);
        let t = crate::translate::translate(&objects, &crate::translate::testutil::settings());
        m.set_applied(t.snapshot);
        let out = rendered(&m);
        let ctl = "controller_class=\"k8s.io/ingress-nginx\",controller_namespace=\"ingress\",\
                   controller_pod=\"ingressd-x7k2p\"";
        let samples: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("nginx_ingress_controller_"))
            .collect();
        for family in [
            "requests",
            "config_hash",
            "build_info",
            "success",
            "leader_election",
            "orphan_ingress",
        ] {
            let name = format!("nginx_ingress_controller_{family}");
            assert!(
                samples.iter().any(|l| l.starts_with(&name)),
                "no {name} in\n{out}"
            );
        }
        for line in &samples {
            if line.starts_with("nginx_ingress_controller_ssl_") {
                assert!(line.contains(",class=\"k8s.io/ingress-nginx\"}"), "{line}");
                assert!(!line.contains("controller_pod"), "{line}");
            } else {
                assert!(line.contains(ctl), "{line}");
            }
        }
        assert!(out.contains(&format!(
            "nginx_ingress_controller_config_hash{{{ctl}}} 9\n"
        )));
        for (kind, value) in [("no-endpoint", 1), ("no-service", 0)] {
            let line = format!(
                "nginx_ingress_controller_orphan_ingress{{namespace=\"shop\",ingress=\"api\",\
                 type=\"{kind}\",{ctl}}} {value}\n"
            );
            assert!(out.contains(&line), "no {line} in\n{out}");
        }
        let expiry = samples
            .iter()
            .find(|l| l.starts_with("nginx_ingress_controller_ssl_expire_time_seconds"))
            .expect("an expiry");
        assert!(expiry.contains(",identifier=\"-"), "{expiry}");
    }

    #[test]
    fn status_classes_and_excluded_families_as_ingress_nginx_flags_ask() {
        let get = MethodSlot::of(&Method::GET);
        let host = HostMatch::Exact("shop.example".into());
        let m = super::super::metrics::ProxyMetrics::new(SeriesOptions {
            status_classes: true,
            excluded: vec!["request_size".into(), "header_duration_seconds".into()],
            ..SeriesOptions::default()
        });
        let l = m.location(labels(&host, None));
        for status in [200, 204, 404, 418, 503, 101] {
            l.record(get, false, &done(status, 1, 10));
        }
        let out = rendered(&m);
        let series = "nginx_ingress_controller_requests{namespace=\"shop\",ingress=\"web\",\
                      service=\"api\",host=\"shop.example\",path=\"/api\",method=\"GET\"";
        for (class, n) in [("1xx", 1), ("2xx", 2), ("4xx", 2), ("5xx", 1)] {
            let want = format!("{series},status=\"{class}\"}} {n}\n");
            assert!(out.contains(&want), "missing {want:?} in\n{out}");
        }
        assert!(!out.contains("status=\"200\""), "{out}");
        assert!(
            !out.contains("nginx_ingress_controller_request_size"),
            "{out}"
        );
        assert!(
            !out.contains("nginx_ingress_controller_header_duration"),
            "{out}"
        );
        assert!(
            out.contains("nginx_ingress_controller_response_size_sum{"),
            "{out}"
        );
    }

    #[test]
    fn location_hosts_are_rule_hosts_or_left_out() {
        let get = MethodSlot::of(&Method::GET);
        let m = super::super::metrics::ProxyMetrics::default();
        let wild = HostMatch::Wildcard("example.com".into());
        let any = HostMatch::Any;
        m.location(labels(&wild, None))
            .record(get, false, &done(200, 1, 0));
        m.location(labels(&any, None))
            .record(get, false, &done(200, 1, 0));
        let out = rendered(&m);
        assert!(
            out.contains("host=\"*.example.com\",path=\"/api\",method=\"GET\",status=\"200\"} 1")
        );
        assert!(out.contains("host=\"\",path=\"/api\",method=\"GET\",status=\"200\"} 1"));
        // `--metrics-per-host=false`: one series for the path, whatever the host.
        let m = super::super::metrics::ProxyMetrics::new(SeriesOptions {
            per_host: false,
            ..SeriesOptions::default()
        });
        let a = m.location(labels(&wild, None));
        let b = m.location(labels(&any, None));
        assert!(Arc::ptr_eq(&a, &b));
        a.record(get, false, &done(200, 1, 0));
        b.record(get, false, &done(200, 1, 0));
        let out = rendered(&m);
        assert!(!out.contains("host="), "{out}");
        assert!(out.contains(
            "{namespace=\"shop\",ingress=\"web\",service=\"api\",path=\"/api\",method=\"GET\",status=\"200\"} 2"
        ));
    }
}
