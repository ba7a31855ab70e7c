//! The proxy's metrics again under ingress-nginx's names (`nginx_ingress_controller_*`), so
//! dashboards and alerts written for it keep working after a migration: requests by exact
//! status, their duration, response sizes (sum and count: a summary without quantiles, where
//! ingress-nginx keeps a histogram), certificate expiry, the last configuration's success and
//! time, and open connections. Labels are `namespace`, `ingress` and `service` (and `host`,
//! `secret_name` for certificates); ingress-nginx's `method`, `path`, `host` and
//! `controller_*` labels on request series are left out, so selectors such as
//! `{controller_class=~".*"}` still match and groupings by them find one group.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use rustls::sign::CertifiedKey;

use super::metrics::RouteMetrics;
use crate::snapshot::{HostMatch, TlsConfig};

/// Status codes counted without a lock; any other goes to a locked map.
const COMMON: [u16; 24] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429,
    499, 500, 502, 503, 504,
];

/// Responses of one route by exact status code.
#[derive(Debug, Default)]
pub struct StatusCounts {
    common: [AtomicU64; COMMON.len()],
    other: Mutex<BTreeMap<u16, u64>>,
}

impl StatusCounts {
    /// Counts one response.
    pub fn add(&self, status: u16) {
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
    pub routes: &'a [Arc<RouteMetrics>],
    pub certificates: &'a [CertExpiry],
    /// Unix time of the last configuration applied; 0 before the first.
    pub last_apply: u64,
    pub open_connections: i64,
}

/// Appends the `nginx_ingress_controller_*` series.
pub fn render(s: &Sources<'_>, out: &mut String) {
    out.push_str(
        "# HELP nginx_ingress_controller_requests The total number of client requests.\n\
         # TYPE nginx_ingress_controller_requests counter\n",
    );
    for m in s.routes {
        let labels = route_labels(m);
        for (status, n) in m.statuses().counts() {
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
    for m in s.routes {
        m.latency().render(
            "nginx_ingress_controller_request_duration_seconds",
            &route_labels(m),
            out,
        );
    }
    out.push_str(
        "# HELP nginx_ingress_controller_response_size The response length (body bytes sent).\n\
         # TYPE nginx_ingress_controller_response_size summary\n",
    );
    for m in s.routes {
        let labels = route_labels(m);
        let _ = writeln!(
            out,
            "nginx_ingress_controller_response_size_sum{{{labels}}} {}\n\
             nginx_ingress_controller_response_size_count{{{labels}}} {}",
            m.response_bytes(),
            m.latency().count()
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
            super::metrics::escape(&c.host),
            super::metrics::escape(&c.namespace),
            super::metrics::escape(&c.secret),
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
fn route_labels(m: &RouteMetrics) -> String {
    let (namespace, ingress) = m.ingress().split_once('/').unwrap_or(("", m.ingress()));
    let service = m.service().split_once('/').map_or(m.service(), |(_, s)| s);
    let service = service.rsplit_once(':').map_or(service, |(s, _)| s);
    format!(
        "namespace=\"{}\",ingress=\"{}\",service=\"{}\"",
        super::metrics::escape(namespace),
        super::metrics::escape(ingress),
        super::metrics::escape(service)
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
}
