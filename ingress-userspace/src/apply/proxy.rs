//! The proxy applier: compiles a snapshot's HTTP routing and certificates into an
//! [`ActiveConfig`] and swaps it in with one atomic pointer store. Requests in flight keep the
//! config they started with; open connections are untouched; endpoint state (pools, latency,
//! ejections) carries over for endpoints that remain. Everything per-snapshot (lower-cased host
//! maps, certificate index, upstream state) is computed here, not per request.
use std::{sync::Arc, sync::Mutex, time::Instant};

use super::config_hash::ConfigHasher;
use crate::{
    admin::Readiness,
    proxy::{
        router::{CompileContext, RouteTable},
        tls::{self, CertTable},
        ActiveConfig, GlobalPolicy, Proxy,
    },
    snapshot::{ServerTls, Snapshot},
};

/// Brings the proxy up to date with each new snapshot.
#[derive(Debug)]
pub struct ProxyApplier {
    proxy: Proxy,
    readiness: Option<Arc<Readiness>>,
    /// Serializes applies so endpoint reuse always builds on the latest table.
    lock: Mutex<()>,
    /// Hashes applied configurations for `config_hash`; `None` if its thread could not start.
    hasher: Option<ConfigHasher>,
}

/// What one apply installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplySummary {
    pub generation: u64,
    pub upstreams: usize,
    pub certificate_names: usize,
}

impl ProxyApplier {
    /// An applier for `proxy`.
    pub fn new(proxy: Proxy) -> Self {
        let hasher = ConfigHasher::start(proxy.metrics())
            .inspect_err(|e| tracing::warn!(error = %e, "no config_hash: its thread did not start"))
            .ok();
        ProxyApplier {
            proxy,
            readiness: None,
            lock: Mutex::new(()),
            hasher,
        }
    }

    /// Also marks `readiness` ready once the first snapshot is applied.
    pub fn with_readiness(mut self, readiness: Arc<Readiness>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Compiles `snapshot` and makes it the live configuration.
    pub fn apply(&self, snapshot: &Arc<Snapshot>) -> ApplySummary {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let metrics = self.proxy.metrics();
        let limits = &self.proxy.options().limits;
        let previous = self.proxy.active();
        // A snapshot marked endpoints-only differs from the one published before it only in
        // endpoints; when the one before was skipped (the apply loop takes the latest), it
        // may differ from what runs now in more, so it counts as a reload.
        let reload = !snapshot.endpoints_only || snapshot.generation != previous.generation + 1;
        let tls = &snapshot.global.server_tls;
        let tls_same = previous.global.server_tls == *tls;
        let server_tls = self.server_tls(tls, tls_same.then_some(&previous.server_tls));
        let global = GlobalPolicy::compile(&snapshot.global, limits);
        // The process's own log level travels with the proxy's settings (`error-log-level`).
        crate::telemetry::set_level(snapshot.global.error_log_level);
        // Pools that already exist follow the new limits too: they share these settings.
        let pool = self.proxy.pool_settings();
        pool.set(global.upstream_keep_alive);
        let ctx = CompileContext {
            metrics: &metrics,
            pool,
            tls_base: Some(server_tls.as_deref().unwrap_or(self.proxy.tls_config())),
            tls_versions: if server_tls.is_some() {
                tls.versions
            } else {
                Default::default()
            },
            reuse_handshakes: tls_same,
        };
        let routes = RouteTable::compile(&snapshot.http, &previous.routes, &ctx);
        let mut certs = CertTable::compile(&snapshot.tls);
        certs.borrow(routes.borrowed_names());
        let summary = ApplySummary {
            generation: snapshot.generation,
            upstreams: routes.upstreams().len(),
            certificate_names: certs.len(),
        };
        let default_served = default_served(snapshot, &certs);
        drop(previous);
        self.proxy.install(ActiveConfig {
            generation: snapshot.generation,
            routes,
            certs,
            global,
            server_tls,
        });
        let took = started.elapsed();
        metrics.config_applied(
            snapshot.generation,
            &snapshot.tls,
            &default_served,
            snapshot.global.config_rejected,
            reload,
            took,
        );
        metrics.set_applied(snapshot.clone());
        // As ingress-nginx, the hash follows the reloads.
        if let (true, Some(h)) = (reload, &self.hasher) {
            h.submit(snapshot);
        }
        if let Some(r) = &self.readiness {
            r.set_ready();
        }
        tracing::info!(
            generation = summary.generation,
            upstreams = summary.upstreams,
            certificate_names = summary.certificate_names,
            took_us = took.as_micros() as u64,
            "proxy configuration applied"
        );
        summary
    }

    /// The TLS server config for `tls` (`ssl-protocols`, `ssl-ciphers`): `None` for the
    /// acceptor's own, else `previous` when it was built from the same settings.
    fn server_tls(
        &self,
        tls: &ServerTls,
        previous: Option<&Option<Arc<rustls::ServerConfig>>>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        if *tls == ServerTls::default() {
            return None;
        }
        if let Some(Some(config)) = previous {
            return Some(config.clone());
        }
        // The translator checked the settings; should rustls still refuse them, the
        // acceptor's own (every version and suite) is the one left to serve with.
        tls::server_config_narrowed(self.proxy.tls_config(), tls)
            .map_err(|e| tracing::error!(error = %e, "ssl-protocols, ssl-ciphers or ssl-session keys not applied"))
            .ok()
    }
}

/// The TLS hosts that no certificate of their own serves (by `certs`, as SNI would find
/// one), so the default certificate does (when one is set): their expiry is the default's,
/// as ingress-nginx reports it.
fn default_served(snapshot: &Snapshot, certs: &CertTable) -> Vec<String> {
    if snapshot.tls.default.is_none() {
        return Vec::new();
    }
    snapshot
        .http
        .hosts
        .iter()
        .filter(|v| v.tls)
        .filter_map(|v| v.host.name())
        .filter(|name| certs.lookup(name).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyOptions;

    /// An endpoints-only snapshot counts as a reload when the one before it was skipped:
    /// it may differ from what runs in more than endpoints.
    #[tokio::test]
    async fn endpoint_only_applies_are_reloads_after_a_skipped_snapshot() {
        let proxy = Proxy::new(ProxyOptions::default()).expect("proxy");
        let metrics = proxy.metrics();
        let applier = ProxyApplier::new(proxy);
        let snapshot = |generation, endpoints_only| {
            Arc::new(Snapshot {
                generation,
                endpoints_only,
                ..Snapshot::default()
            })
        };
        applier.apply(&snapshot(1, false));
        applier.apply(&snapshot(2, true));
        assert_eq!((metrics.config_applies(), metrics.reloads()), (2, 1));
        applier.apply(&snapshot(4, true));
        assert_eq!((metrics.config_applies(), metrics.reloads()), (3, 2));
    }
}
