//! The proxy's metrics again under ingress-nginx's names (`nginx_ingress_controller_*`), so
//! dashboards and alerts written for it keep working after a migration: requests by exact
//! status, their duration, response sizes (sum and count: a summary without quantiles, where
//! ingress-nginx keeps a histogram), certificate expiry, the last configuration's success and
//! time, and open connections. Request series are kept per location (a path rule on its host,
//! as ingress-nginx's) and labelled as its are: `namespace`, `ingress`, `service`, `host`,
//! `path`, `method`, `status`, and `canary` on the requests a canary served. Its
//! `controller_*` labels are left out, so selectors such as `{controller_class=~".*"}` still
//! match and groupings by them find one group.
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

use super::metrics::{escape, Histogram};
use crate::snapshot::{HostMatch, TlsConfig};

/// Status codes counted without a lock; any other goes to a locked map.
const COMMON: [u16; 24] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429,
    499, 500, 502, 503, 504,
];

/// Responses of one route by exact status code.
#[derive(Debug, Default)]
struct StatusCounts {
    common: [AtomicU64; COMMON.len()],
    other: Mutex<BTreeMap<u16, u64>>,
}

impl StatusCounts {
    /// Counts one response.
    fn add(&self, status: u16) {
        match COMMON.binary_search(&status) {
            Ok(i) => {
                self.common[i].fetch_add(1, Relaxed);
            }
            Err(_) => {
                let mut other = self.other.lock().unwrap_or_else(|e| e.into_inner());
                *other.entry(status).or_default() += 1;
            }
        }
    }

    /// Every status seen, with its count, in code order.
    fn counts(&self) -> Vec<(u16, u64)> {
        let mut out: Vec<(u16, u64)> = COMMON
            .iter()
            .zip(&self.common)
            .map(|(s, c)| (*s, c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let other = self.other.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(other.iter().map(|(s, n)| (*s, *n)));
        out.sort_unstable();
        out
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
            let host = match host {
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Wildcard(s) => format!("*.{s}"),
                HostMatch::Any => String::new(),
            };
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
    /// The `canary` label of the requests the canary served: its upstream as ingress-nginx
    /// names upstreams (`namespace-service-port`).
    canary: Box<str>,
    /// Made on the location's first request, as each method's series on its own first one:
    /// a location without traffic costs only this pointer.
    methods: OnceLock<Box<MethodTable>>,
}

/// A location's series by [served by the canary][method slot].
type MethodTable = [[OnceLock<Box<MethodSeries>>; METHODS.len() + 1]; 2];

/// One method's requests at a location.
#[derive(Debug, Default)]
struct MethodSeries {
    statuses: StatusCounts,
    latency: Histogram,
    /// Response body bytes sent, all requests together.
    response_bytes: AtomicU64,
}

impl LocationSeries {
    /// The series of a location, from its rendered labels and its canary's upstream.
    pub fn new(labels: String, canary: Option<&str>) -> Self {
        LocationSeries {
            labels: labels.into(),
            canary: canary
                .map(|c| c.replace(['/', ':'], "-"))
                .unwrap_or_default()
                .into(),
            methods: OnceLock::new(),
        }
    }

    /// Records a finished request that sent `bytes` of response body.
    pub fn record(
        &self,
        method: MethodSlot,
        on_canary: bool,
        status: u16,
        elapsed: Duration,
        bytes: u64,
    ) {
        let table = self.methods.get_or_init(|| {
            Box::new(std::array::from_fn(|_| {
                std::array::from_fn(|_| OnceLock::new())
            }))
        });
        let half = &table[usize::from(on_canary)];
        let Some(slot) = half.get(usize::from(method.0)) else {
            return;
        };
        let m = slot.get_or_init(Box::default);
        m.statuses.add(status);
        m.latency.observe(elapsed);
        m.response_bytes.fetch_add(bytes, Relaxed);
    }

    /// Every method series with its full label text (status aside).
    fn each(&self) -> impl Iterator<Item = (String, &MethodSeries)> + '_ {
        let table = self.methods.get().map_or(&[][..], |t| &t[..]);
        table.iter().enumerate().flat_map(move |(half, slots)| {
            slots.iter().enumerate().filter_map(move |(i, slot)| {
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

/// When one served name's certificate expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertExpiry {
    pub namespace: String,
    pub host: String,
    pub secret: String,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Expiry times of the certificates of each applied configuration, each chain parsed once
/// while it stays in use.
#[derive(Debug, Default)]
pub struct CertExpiries {
    /// By the address of the chain's `CertifiedKey`, which the value keeps alive.
    parsed: HashMap<usize, (Arc<CertifiedKey>, Option<i64>)>,
}

impl CertExpiries {
    /// One entry per name each certificate of `tls` serves (`*.` for wildcards); a chain
    /// whose leaf cannot be read is left out.
    pub fn of(&mut self, tls: &TlsConfig) -> Vec<CertExpiry> {
        let mut kept = HashMap::with_capacity(tls.certs.len());
        let mut out = Vec::new();
        for cert in &tls.certs {
            let addr = Arc::as_ptr(&cert.key) as usize;
            let (_, not_after) = *kept.entry(addr).or_insert_with(|| {
                self.parsed
                    .remove(&addr)
                    .unwrap_or_else(|| (cert.key.clone(), leaf_not_after(&cert.key)))
            });
            let Some(not_after) = not_after else {
                continue;
            };
            for host in &cert.hosts {
                let host = match host {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Wildcard(s) => format!("*.{s}"),
                    HostMatch::Any => continue,
                };
                out.push(CertExpiry {
                    namespace: cert.secret.namespace.clone(),
                    host,
                    secret: cert.secret.name.clone(),
                    not_after,
                });
            }
        }
        self.parsed = kept;
        out
    }
}

fn leaf_not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// What the compatible series are rendered from.
pub struct Sources<'a> {
    pub locations: &'a [Arc<LocationSeries>],
    pub certificates: &'a [CertExpiry],
    /// Unix time of the last configuration applied; 0 before the first.
    pub last_apply: u64,
    pub open_connections: i64,
}

/// Appends the `nginx_ingress_controller_*` series.
pub fn render(s: &Sources<'_>, out: &mut String) {
    let series: Vec<(String, &MethodSeries)> = s.locations.iter().flat_map(|l| l.each()).collect();
    out.push_str(
        "# HELP nginx_ingress_controller_requests The total number of client requests.\n\
         # TYPE nginx_ingress_controller_requests counter\n",
    );
    for (labels, m) in &series {
        for (status, n) in m.statuses.counts() {
            let _ = writeln!(
                out,
                "nginx_ingress_controller_requests{{{labels},status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str(
        "# HELP nginx_ingress_controller_request_duration_seconds The request processing time \
         in seconds.\n\
         # TYPE nginx_ingress_controller_request_duration_seconds histogram\n",
    );
    for (labels, m) in &series {
        m.latency.render(
            "nginx_ingress_controller_request_duration_seconds",
            labels,
            out,
        );
    }
    out.push_str(
        "# HELP nginx_ingress_controller_response_size The response length (body bytes sent).\n\
         # TYPE nginx_ingress_controller_response_size summary\n",
    );
    for (labels, m) in &series {
        let _ = writeln!(
            out,
            "nginx_ingress_controller_response_size_sum{{{labels}}} {}\n\
             nginx_ingress_controller_response_size_count{{{labels}}} {}",
            m.response_bytes.load(Relaxed),
            m.latency.count()
        );
    }
    out.push_str(
        "# HELP nginx_ingress_controller_ssl_expire_time_seconds Number of seconds since \
         1970 to the SSL Certificate expire.\n\
         # TYPE nginx_ingress_controller_ssl_expire_time_seconds gauge\n",
    );
    for c in s.certificates {
        let _ = writeln!(
            out,
            "nginx_ingress_controller_ssl_expire_time_seconds{{host=\"{}\",namespace=\"{}\",\
             secret_name=\"{}\"}} {}",
            escape(&c.host),
            escape(&c.namespace),
            escape(&c.secret),
            c.not_after
        );
    }
    // A snapshot is applied whole or not at all (bad objects are reported and left out), so
    // once one is in use the last "reload" succeeded.
    let _ = writeln!(
        out,
        "# HELP nginx_ingress_controller_config_last_reload_successful Whether the last \
         configuration reload attempt was successful.\n\
         # TYPE nginx_ingress_controller_config_last_reload_successful gauge\n\
         nginx_ingress_controller_config_last_reload_successful {}\n\
         # HELP nginx_ingress_controller_config_last_reload_successful_timestamp_seconds \
         Timestamp of the last successful configuration reload.\n\
         # TYPE nginx_ingress_controller_config_last_reload_successful_timestamp_seconds gauge\n\
         nginx_ingress_controller_config_last_reload_successful_timestamp_seconds {}\n\
         # HELP nginx_ingress_controller_nginx_process_connections Current number of client \
         connections with state {{active}}.\n\
         # TYPE nginx_ingress_controller_nginx_process_connections gauge\n\
         nginx_ingress_controller_nginx_process_connections{{state=\"active\"}} {}",
        u8::from(s.last_apply > 0),
        s.last_apply,
        s.open_connections,
    );
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

    #[test]
    fn statuses_count_exactly_common_or_not() {
        let s = StatusCounts::default();
        for status in [200, 200, 503, 418, 418, 599, 200] {
            s.add(status);
        }
        assert_eq!(s.counts(), [(200, 3), (418, 2), (503, 1), (599, 1)]);
        assert!(
            COMMON.windows(2).all(|w| w[0] < w[1]),
            "sorted for the search"
        );
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

    #[test]
    fn location_series_are_labelled_as_ingress_nginx_labels_them() {
        let m = super::super::metrics::ProxyMetrics::default();
        let host = HostMatch::Exact("shop.example".into());
        let l = m.location(labels(&host, Some("shop/api-next:8080")));
        let ms = Duration::from_millis;
        l.record(MethodSlot::of(&Method::GET), false, 200, ms(2), 100);
        l.record(MethodSlot::of(&Method::GET), false, 200, ms(2), 50);
        l.record(MethodSlot::of(&Method::POST), false, 503, ms(30), 0);
        l.record(MethodSlot::of(&Method::GET), true, 200, ms(2), 7);
        // Methods outside the standard set share one series: a client cannot add series.
        for token in [&b"PROPFIND"[..], b"BREW"] {
            let odd = Method::from_bytes(token).expect("a method token");
            l.record(MethodSlot::of(&odd), false, 405, ms(1), 0);
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
            format!("nginx_ingress_controller_response_size_sum{{{base},method=\"GET\"}} 150"),
            format!("nginx_ingress_controller_response_size_count{{{base},method=\"GET\"}} 2"),
            format!(
                "nginx_ingress_controller_request_duration_seconds_bucket{{{base},method=\"POST\",le=\"0.05\"}} 1"
            ),
        ] {
            assert!(out.contains(&want), "missing {want:?} in\n{out}");
        }
        // No series for a method that saw no request.
        assert!(!out.contains("method=\"PUT\""));
        // The same location again is the same series; gone once nothing refers to it.
        assert!(Arc::ptr_eq(
            &l,
            &m.location(labels(&host, Some("shop/api-next:8080")))
        ));
        drop(l);
        m.prune();
        assert!(!rendered(&m).contains("shop.example"));
    }

    #[test]
    fn location_hosts_are_rule_hosts_or_left_out() {
        let ms = Duration::from_millis(1);
        let get = MethodSlot::of(&Method::GET);
        let m = super::super::metrics::ProxyMetrics::default();
        let wild = HostMatch::Wildcard("example.com".into());
        let any = HostMatch::Any;
        m.location(labels(&wild, None))
            .record(get, false, 200, ms, 0);
        m.location(labels(&any, None))
            .record(get, false, 200, ms, 0);
        let out = rendered(&m);
        assert!(
            out.contains("host=\"*.example.com\",path=\"/api\",method=\"GET\",status=\"200\"} 1")
        );
        assert!(out.contains("host=\"\",path=\"/api\",method=\"GET\",status=\"200\"} 1"));
        // `--metrics-per-host=false`: one series for the path, whatever the host.
        let m = super::super::metrics::ProxyMetrics::new(false);
        let a = m.location(labels(&wild, None));
        let b = m.location(labels(&any, None));
        assert!(Arc::ptr_eq(&a, &b));
        a.record(get, false, 200, ms, 0);
        b.record(get, false, 200, ms, 0);
        let out = rendered(&m);
        assert!(!out.contains("host="), "{out}");
        assert!(out.contains(
            "{namespace=\"shop\",ingress=\"web\",service=\"api\",path=\"/api\",method=\"GET\",status=\"200\"} 2"
        ));
    }
}
