//! The routing table: a snapshot's `HttpConfig` compiled once per apply into hash lookups by
//! host, with upstream state (pools, balancers, metrics) attached to every target.
//!
//! Semantics (Ingress): host (lower-case, port stripped) -> the first `VirtualHost` in snapshot
//! order (exact, then one-label wildcard, then catch-all); within it the first route in
//! `routes` order whose path matches; else the host's `fallback`; else the global
//! `default_backend`; else 404.
use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{Arc, OnceLock},
};

use rustls::ServerConfig;

use crate::snapshot::{
    BackendProtocol, ClientAuth, HostMatch, HttpConfig, PathMatch, RouteTarget, Upstream,
};

use super::{
    metrics::{ProxyMetrics, RouteMetrics},
    nginx_metrics::{LocationLabels, LocationSeries},
    upstream::{pool::Pool, Endpoint, UpstreamState},
};

/// A route target with its compiled upstream state.
#[derive(Debug)]
pub struct Target {
    pub spec: Arc<RouteTarget>,
    pub primary: Arc<UpstreamState>,
    pub primary_metrics: Arc<RouteMetrics>,
    pub canary: Option<CanaryTarget>,
    /// `default-backend` of the Ingress.
    pub default_backend: Option<Arc<UpstreamState>>,
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<str>,
    /// Rate-limit zone of the Ingress (one per Ingress, like ingress-nginx).
    pub limit_zone: u64,
    /// `custom-headers`, set on every answer of the route.
    pub custom_headers: Option<super::HeaderSet>,
    /// ingress-nginx's series of the path rule the target serves, made on its first request
    /// and reused with the target: an unchanged table keeps its series at no cost.
    pub location: LazyLocation,
}

/// ingress-nginx's series of one location, made on the location's first request: applying a
/// table makes none.
#[derive(Debug, Default)]
pub struct LazyLocation(OnceLock<Arc<LocationSeries>>);

/// The canary side of a target.
#[derive(Debug)]
pub struct CanaryTarget {
    pub upstream: Arc<UpstreamState>,
    pub metrics: Arc<RouteMetrics>,
}

/// One compiled path rule.
#[derive(Debug)]
pub struct CompiledRoute {
    pub path: PathMatch,
    pub target: Arc<Target>,
    /// ingress-nginx's series of this path rule on its host when its target's cannot be
    /// trusted to be this rule's: the snapshot gave more than one rule this target (the
    /// translator gives each rule its own).
    pub own_location: Option<LazyLocation>,
}

impl CompiledRoute {
    /// ingress-nginx's series of this path rule on its host.
    fn location(&self) -> &LazyLocation {
        self.own_location.as_ref().unwrap_or(&self.target.location)
    }
}

/// One compiled virtual host.
#[derive(Debug)]
pub struct CompiledHost {
    /// The host as the rule names it (its series' `host` label).
    pub host: HostMatch,
    pub tls: bool,
    pub routes: Vec<CompiledRoute>,
    pub fallback: Option<Arc<Target>>,
    /// ingress-nginx's series of the fallback on this host (its location `/`).
    pub fallback_location: LazyLocation,
    /// ingress-nginx's series of this host's requests that no rule or fallback takes (its
    /// location `/` on the default backend).
    pub unmatched_location: LazyLocation,
    pub client_auth: Option<Arc<ClientCheck>>,
    /// `app-root`: where `/` on this host redirects.
    pub app_root: Option<Box<str>>,
}

/// A host's client certificate settings and the TLS server config that asks for them.
#[derive(Debug)]
pub struct ClientCheck {
    pub spec: Arc<ClientAuth>,
    /// `None` when it could not be built (logged): requests are still checked, so clients
    /// get the refusal rather than an unchecked pass.
    pub handshake: Option<Arc<ServerConfig>>,
}

/// A routing decision.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The matched host is listed under some Ingress' `spec.tls`.
    pub host_tls: bool,
    /// The matched host's client certificate settings.
    pub client_auth: Option<&'a Arc<ClientCheck>>,
    /// The path rule, when one matched (not for fallbacks and the default backend).
    pub route: Option<&'a CompiledRoute>,
    pub target: &'a Arc<Target>,
    /// ingress-nginx's series the request counts in: a path rule's, a host's fallback's, or
    /// a named host's location `/` when the default backend answers its unmatched path; none
    /// for hosts no rule names (ingress-nginx leaves those out too).
    pub location: Option<LocationRef<'a>>,
    /// No host matched: the default backend answers (ingress-nginx's default server).
    pub default_server: bool,
}

/// Where a request counts under ingress-nginx's names.
#[derive(Clone, Copy, Debug)]
pub struct LocationRef<'a> {
    cell: &'a LazyLocation,
    /// The target of the location; `None` for a host's unmatched paths, which ingress-nginx
    /// counts under the host's Ingress with no Service.
    target: Option<&'a Target>,
    /// `namespace/name` of the Ingress.
    ingress: &'a str,
    host: &'a HostMatch,
    path: &'a str,
}

impl<'a> LocationRef<'a> {
    /// The location `path` of `target` on `host`.
    fn of(cell: &'a LazyLocation, target: &'a Target, host: &'a HostMatch, path: &'a str) -> Self {
        LocationRef {
            cell,
            target: Some(target),
            ingress: &target.ingress,
            host,
            path,
        }
    }

    /// The location's series, found or made in `metrics` on its first request.
    pub fn series(&self, metrics: &ProxyMetrics) -> &'a Arc<LocationSeries> {
        self.cell.0.get_or_init(|| {
            metrics.location(LocationLabels {
                ingress: self.ingress,
                service: self.target.map_or("", |t| &t.primary.name),
                host: Some(self.host),
                path: self.path,
                canary: self
                    .target
                    .and_then(|t| t.spec.canary.as_ref())
                    .map(|c| c.label.as_str()),
            })
        })
    }
}

impl CompiledHost {
    /// Where this host's requests that no rule or fallback takes count: ingress-nginx's
    /// location `/` on the default backend, under the Ingress of the host's first rule. The
    /// catch-all of rules without a host has none: ingress-nginx's default server owns it.
    fn unmatched(&self) -> Option<LocationRef<'_>> {
        if self.host == HostMatch::Any {
            return None;
        }
        let first = self.routes.first()?;
        Some(LocationRef {
            cell: &self.unmatched_location,
            target: None,
            ingress: &first.target.ingress,
            host: &self.host,
            path: "/",
        })
    }
}

/// Hosts and routes of one snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, usize>,
    wildcard: HashMap<Box<str>, usize>,
    any: Option<usize>,
    hosts: Vec<CompiledHost>,
    default_backend: Option<Arc<Target>>,
    /// `--default-backend-service`: named hosts' unmatched paths, custom error pages.
    service_default: Option<Arc<Target>>,
    /// Every compiled target by the address of its snapshot `RouteTarget`. The translator
    /// hands unchanged routes the very same `Arc<RouteTarget>` in the next snapshot, so the
    /// next compile reuses these instead of rebuilding them (a 10,000-host table recompiled
    /// from scratch took ~50 ms per endpoint change).
    targets: HashMap<usize, Arc<Target>>,
    /// Every distinct upstream of the table, by name and protocol: the translator gives two
    /// Ingresses that name one Service port with different `backend-protocol`s two upstreams
    /// of the same name.
    upstreams: HashMap<UpstreamKey, Arc<UpstreamState>>,
    /// Client certificate settings by the address of their snapshot `ClientAuth`, reused by
    /// the next compile like `targets`.
    client_checks: HashMap<usize, Arc<ClientCheck>>,
    /// `from-to-www-redirect`: a name no host has -> the host it redirects to.
    www_redirects: HashMap<Box<str>, Box<str>>,
    /// Names served for another host (`server-alias`, the `www` side of a redirect) and that
    /// host: SNI for them gets its certificate.
    borrowed_names: Vec<(HostMatch, HostMatch)>,
}

impl RouteTable {
    /// The virtual host serving a normalized host name: exact, then one-label wildcard, then
    /// the catch-all.
    fn vhost(&self, host: &str) -> Option<&CompiledHost> {
        self.exact
            .get(host)
            .or_else(|| {
                let (label, suffix) = host.split_once('.')?;
                (!label.is_empty())
                    .then(|| self.wildcard.get(suffix))
                    .flatten()
            })
            .copied()
            .or(self.any)
            .and_then(|i| self.hosts.get(i))
    }

    /// Where a request for a normalized host name that nothing answers (the proxy's 404)
    /// counts under ingress-nginx's names: its host's location `/`, when the host is defined.
    pub fn unmatched(&self, host: &str) -> Option<LocationRef<'_>> {
        self.vhost(host)?.unmatched()
    }

    /// Whether some virtual host (the catch-all included) serves a normalized host name.
    pub fn serves(&self, host: &str) -> bool {
        self.vhost(host).is_some()
    }

    /// Routes a request by its normalized host and its path (without query).
    pub fn find(&self, host: &str, path: &str) -> Option<Matched<'_>> {
        let Some(vhost) = self.vhost(host) else {
            return self.default_backend.as_ref().map(|target| Matched {
                host_tls: false,
                client_auth: None,
                route: None,
                target,
                location: None,
                default_server: true,
            });
        };
        if let Some(route) = vhost.routes.iter().find(|r| r.path.matches(path)) {
            return Some(Matched {
                host_tls: vhost.tls,
                client_auth: vhost.client_auth.as_ref(),
                route: Some(route),
                target: &route.target,
                location: Some(LocationRef::of(
                    route.location(),
                    &route.target,
                    &vhost.host,
                    route.path.as_str(),
                )),
                default_server: false,
            });
        }
        let (target, location) = match &vhost.fallback {
            Some(t) => {
                let at = LocationRef::of(&vhost.fallback_location, t, &vhost.host, "/");
                (t, Some(at))
            }
            // The host-less rules' server is the catch-all's; a named host's is its own, whose
            // stray paths go to the default Service (ingress-nginx's `upstream-default-backend`).
            None if vhost.host == HostMatch::Any => {
                (self.default_backend.as_ref()?, vhost.unmatched())
            }
            None => (self.service_default.as_ref()?, vhost.unmatched()),
        };
        Some(Matched {
            host_tls: vhost.tls,
            client_auth: vhost.client_auth.as_ref(),
            route: None,
            target,
            location,
            default_server: false,
        })
    }

    /// Whether a host of its own serves this normalized name (exact or wildcard, not the
    /// catch-all), or a `from-to-www-redirect` answers it: `ssl-reject-handshake` lets its
    /// handshakes through.
    pub fn serves_name(&self, host: &str) -> bool {
        let own = self.exact.contains_key(host)
            || host.split_once('.').is_some_and(|(label, suffix)| {
                !label.is_empty() && self.wildcard.contains_key(suffix)
            });
        own || self.www_redirects.contains_key(host)
    }

    /// `from-to-www-redirect`: the host a request for this normalized name is sent to, when
    /// no host of its own has the name.
    /// The `app-root` of the host serving a normalized host name, if it has one.
    pub fn app_root(&self, host: &str) -> Option<&str> {
        self.vhost(host)?.app_root.as_deref()
    }

    pub fn www_redirect(&self, host: &str) -> Option<&str> {
        if self.www_redirects.is_empty() {
            return None;
        }
        self.www_redirects.get(host).map(|h| &**h)
    }

    /// Names served for another host, and that host (for the certificate index).
    pub fn borrowed_names(&self) -> &[(HostMatch, HostMatch)] {
        &self.borrowed_names
    }

    /// Whether some host asks for client certificates (the handshake then looks at the SNI
    /// before choosing its config).
    pub fn requests_client_certs(&self) -> bool {
        !self.client_checks.is_empty()
    }

    /// The TLS server config for a handshake with this SNI (lower-case, no trailing dot), when
    /// its host asks for client certificates. Without SNI, the catch-all host's.
    pub fn handshake_config(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        let vhost = match sni {
            Some(name) => self.vhost(name),
            None => self.any.and_then(|i| self.hosts.get(i)),
        }?;
        vhost.client_auth.as_ref()?.handshake.clone()
    }

    /// The default Service (`--default-backend-service`), which `custom-http-errors` asks
    /// for its pages, as ingress-nginx asks its `upstream-default-backend`.
    pub fn service_default(&self) -> Option<&Arc<Target>> {
        self.service_default.as_ref()
    }

    /// The Ingresses (`namespace/name`) whose rules or fallbacks the table serves.
    pub fn ingresses(&self) -> HashSet<&str> {
        let routes = self.hosts.iter().flat_map(|h| &h.routes).map(|r| &r.target);
        let fallbacks = self.hosts.iter().filter_map(|h| h.fallback.as_ref());
        routes.chain(fallbacks).map(|t| &*t.ingress).collect()
    }

    /// Every distinct upstream of the table, by name and protocol.
    pub fn upstreams(&self) -> &HashMap<UpstreamKey, Arc<UpstreamState>> {
        &self.upstreams
    }

    /// Compiles `http`, reusing endpoint state from `previous` where the endpoint remains.
    pub fn compile(http: &HttpConfig, previous: &RouteTable, ctx: &CompileContext<'_>) -> Self {
        let mut c = Compiler {
            ctx,
            previous: &previous.upstreams,
            previous_targets: &previous.targets,
            previous_checks: &previous.client_checks,
            upstreams: HashMap::new(),
            targets: HashMap::new(),
            shared: HashSet::new(),
            client_checks: HashMap::new(),
        };
        let mut table = RouteTable::default();
        let mut compiled: Vec<(usize, &crate::snapshot::VirtualHost)> = Vec::new();
        for vhost in &http.hosts {
            let idx = table.hosts.len();
            let fresh = match &vhost.host {
                HostMatch::Exact(h) => insert_first(&mut table.exact, h, idx),
                HostMatch::Wildcard(s) => insert_first(&mut table.wildcard, s, idx),
                HostMatch::Any => table.any.is_none().then(|| table.any = Some(idx)).is_some(),
            };
            if !fresh {
                // A later duplicate can never be reached: first in order wins.
                continue;
            }
            let routes = vhost
                .routes
                .iter()
                .map(|r| {
                    let key = Arc::as_ptr(&r.target) as usize;
                    let again = c.targets.contains_key(&key);
                    if again {
                        c.shared.insert(key);
                    }
                    let target = c.target(&r.target);
                    let own_location = again.then(LazyLocation::default);
                    CompiledRoute {
                        path: r.path.clone(),
                        target,
                        own_location,
                    }
                })
                .collect();
            let fallback = vhost.fallback.as_ref().map(|t| c.target(t));
            let client_auth = vhost.client_auth.as_ref().map(|a| c.client_check(a));
            compiled.push((table.hosts.len(), vhost));
            table.hosts.push(CompiledHost {
                host: vhost.host.clone(),
                tls: vhost.tls,
                routes,
                fallback,
                fallback_location: LazyLocation::default(),
                unmatched_location: LazyLocation::default(),
                client_auth,
                app_root: vhost.app_root.as_deref().map(Box::from),
            });
        }
        if !c.shared.is_empty() {
            // The first rule of a shared target took the target's series, which an earlier
            // table may have made for another of its rules.
            table.own_shared_locations(&c.shared);
        }
        table.add_borrowed_names(&compiled);
        table.default_backend = http.default_backend.as_ref().map(|t| c.target(t));
        table.service_default = http.service_default.as_ref().map(|t| c.target(t));
        // A shared target's series belong to whichever rule compiled it: the next table builds
        // it again rather than lend them to a rule that may now have it alone.
        if !c.shared.is_empty() {
            c.targets.retain(|key, _| !c.shared.contains(key));
        }
        table.targets = c.targets;
        table.upstreams = c.upstreams;
        table.client_checks = c.client_checks;
        table
    }
}

impl RouteTable {
    /// Gives every rule of a target that `shared` names series of its own.
    fn own_shared_locations(&mut self, shared: &HashSet<usize>) {
        for route in self.hosts.iter_mut().flat_map(|h| &mut h.routes) {
            let key = Arc::as_ptr(&route.target.spec) as usize;
            if route.own_location.is_none() && shared.contains(&key) {
                route.own_location = Some(LazyLocation::default());
            }
        }
    }

    /// Aliases and `www` redirects, after every host's own name so that those always win
    /// (ingress-nginx ignores an alias naming an existing server); among themselves, the first
    /// host in snapshot order wins.
    fn add_borrowed_names(&mut self, compiled: &[(usize, &crate::snapshot::VirtualHost)]) {
        for (idx, vhost) in compiled {
            for alias in &vhost.aliases {
                let fresh = match alias {
                    HostMatch::Exact(h) => insert_first(&mut self.exact, h, *idx),
                    HostMatch::Wildcard(s) => insert_first(&mut self.wildcard, s, *idx),
                    HostMatch::Any => false,
                };
                if fresh {
                    self.borrowed_names
                        .push((alias.clone(), vhost.host.clone()));
                }
            }
        }
        for (_, vhost) in compiled {
            let (HostMatch::Exact(name), Some(other)) = (&vhost.host, vhost.www_counterpart())
            else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if self.exact.contains_key(other.as_str())
                || self.www_redirects.contains_key(other.as_str())
            {
                continue;
            }
            self.borrowed_names
                .push((HostMatch::Exact(other.clone()), vhost.host.clone()));
            self.www_redirects.insert(other.into(), name.into());
        }
    }
}

fn insert_first(map: &mut HashMap<Box<str>, usize>, key: &str, idx: usize) -> bool {
    let key: Box<str> = key.to_ascii_lowercase().into();
    if map.contains_key(&key) {
        return false;
    }
    map.insert(key, idx);
    true
}

/// What compiling needs from the proxy.
#[derive(Debug)]
pub struct CompileContext<'a> {
    pub metrics: &'a ProxyMetrics,
    /// The keep-alive limits new endpoints' pools follow.
    pub pool: &'a Arc<super::upstream::pool::PoolSettings>,
    /// The proxy's TLS server config, which hosts asking for client certificates derive
    /// theirs from; without it they are checked per request only.
    pub tls_base: Option<&'a ServerConfig>,
    /// The versions `tls_base` offers.
    pub tls_versions: crate::snapshot::TlsVersions,
    /// Whether the previous table's client-certificate configs still fit `tls_base`.
    pub reuse_handshakes: bool,
}

/// An upstream's name and protocol.
pub type UpstreamKey = (Arc<str>, BackendProtocol);

struct Compiler<'a, 'b> {
    ctx: &'a CompileContext<'b>,
    previous: &'a HashMap<UpstreamKey, Arc<UpstreamState>>,
    previous_targets: &'a HashMap<usize, Arc<Target>>,
    /// Targets (by the address of their `RouteTarget`) that more than one rule has.
    shared: HashSet<usize>,
    previous_checks: &'a HashMap<usize, Arc<ClientCheck>>,
    upstreams: HashMap<UpstreamKey, Arc<UpstreamState>>,
    targets: HashMap<usize, Arc<Target>>,
    client_checks: HashMap<usize, Arc<ClientCheck>>,
}

impl Compiler<'_, '_> {
    /// The compiled form of a host's client certificate settings, shared by every host with
    /// the same `Arc` and kept from the previous table while the translator hands out the
    /// same one.
    fn client_check(&mut self, spec: &Arc<ClientAuth>) -> Arc<ClientCheck> {
        let key = Arc::as_ptr(spec) as usize;
        if let Some(c) = self.client_checks.get(&key) {
            return c.clone();
        }
        let check = match self
            .previous_checks
            .get(&key)
            .filter(|c| self.ctx.reuse_handshakes && Arc::ptr_eq(&c.spec, spec))
        {
            Some(c) => c.clone(),
            None => {
                let handshake = self.ctx.tls_base.and_then(|base| {
                    super::tls::client_auth_server_config(base, self.ctx.tls_versions, &spec.roots)
                        .map_err(|e| {
                            tracing::warn!(secret = %spec.secret, error = %e, "cannot ask for client certificates");
                        })
                        .ok()
                });
                Arc::new(ClientCheck {
                    spec: spec.clone(),
                    handshake,
                })
            }
        };
        self.client_checks.insert(key, check.clone());
        check
    }

    /// The compiled target of `spec`, reused from the previous table when unchanged.
    fn target(&mut self, spec: &Arc<RouteTarget>) -> Arc<Target> {
        let key = Arc::as_ptr(spec) as usize;
        if let Some(t) = self.targets.get(&key) {
            return t.clone();
        }
        // Same allocation as a target of the previous table, which keeps it alive: the very
        // same, unchanged RouteTarget. Its upstreams are unchanged too (they are inside it).
        if let Some(t) = self
            .previous_targets
            .get(&key)
            .filter(|t| Arc::ptr_eq(&t.spec, spec))
        {
            let t = t.clone();
            self.adopt_upstream(&t.primary);
            if let Some(c) = &t.canary {
                self.adopt_upstream(&c.upstream);
            }
            if let Some(d) = &t.default_backend {
                self.adopt_upstream(d);
            }
            self.targets.insert(key, t.clone());
            return t;
        }
        let ingress: Arc<str> = format!("{}/{}", spec.origin.namespace, spec.origin.name).into();
        let primary = self.upstream(&spec.upstream);
        let primary_metrics = self.ctx.metrics.route(&ingress, &primary.name);
        let canary = spec.canary.as_ref().map(|c| {
            let upstream = self.upstream(&c.upstream);
            let canary_ingress = format!("{}/{}", c.origin.namespace, c.origin.name);
            let metrics = self.ctx.metrics.route(&canary_ingress, &upstream.name);
            CanaryTarget { upstream, metrics }
        });
        let default_backend = spec.default_backend.as_ref().map(|u| self.upstream(u));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ingress.hash(&mut h);
        let t = Arc::new(Target {
            spec: spec.clone(),
            primary,
            primary_metrics,
            canary,
            default_backend,
            ingress,
            limit_zone: h.finish(),
            custom_headers: spec
                .policy
                .custom_headers
                .as_ref()
                .map(|c| super::HeaderSet::compile(&c.headers)),
            location: LazyLocation::default(),
        });
        self.targets.insert(key, t.clone());
        t
    }

    /// Registers the state of a reused target's upstream so other targets naming the same
    /// upstream share it (the first registration of a name wins, as in [`Compiler::upstream`]).
    fn adopt_upstream(&mut self, state: &Arc<UpstreamState>) {
        self.upstreams
            .entry((state.name.clone(), state.protocol))
            .or_insert_with(|| state.clone());
    }

    fn upstream(&mut self, u: &Upstream) -> Arc<UpstreamState> {
        let key: UpstreamKey = (u.name.as_str().into(), u.protocol);
        if let Some(s) = self.upstreams.get(&key) {
            return s.clone();
        }
        // Pools hold connections checked under the old TLS settings: new settings, new pools.
        let prev = self
            .previous
            .get(&key)
            .filter(|p| p.tls.as_ref().map(|t| &t.spec) == u.tls.as_ref());
        let state = match prev {
            Some(p)
                if p.endpoints
                    .iter()
                    .map(|e| e.addr)
                    .eq(u.endpoints.iter().copied()) =>
            {
                p.clone()
            }
            _ => {
                let mut fresh = Vec::new();
                let eps: Vec<Arc<Endpoint>> = u
                    .endpoints
                    .iter()
                    .map(|addr| {
                        prev.and_then(|p| p.endpoints.iter().find(|e| e.addr == *addr))
                            .cloned()
                            .unwrap_or_else(|| {
                                let pool = Pool::new(self.ctx.pool.clone());
                                let e = Arc::new(Endpoint::new(&u.name, *addr, pool));
                                fresh.push(e.clone());
                                e
                            })
                    })
                    .collect();
                // The new endpoints are not measured yet: the mean is of the kept ones.
                super::upstream::balance::slow_start(&eps, &fresh, super::upstream::now_ms());
                let tls = u.tls.as_ref().and_then(|spec| {
                    super::tls::UpstreamTlsClients::new(spec.clone())
                        .map(Arc::new)
                        .map_err(|e| {
                            tracing::warn!(upstream = %u.name, error = %e, "proxy-ssl settings unusable: no endpoint is used (503)");
                        })
                        .ok()
                });
                // Never connect without the checks asked for.
                let eps = if u.tls.is_some() && tls.is_none() {
                    Vec::new()
                } else {
                    eps
                };
                Arc::new(UpstreamState::new(key.0.clone(), u.protocol, eps).with_tls(tls))
            }
        };
        self.upstreams.insert(key, state.clone());
        state
    }
}

/// The host of a request, lower-cased, without port or trailing dot.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match raw.split_once(':') {
            // More than one colon (a bare IPv6 address) or a port that is not one: no port.
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Foo.Example.COM:8080"), "foo.example.com");
        assert_eq!(normalize_host("foo.example.com."), "foo.example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        for (given, want) in [
            ("shop.example", "shop.example"),
            ("shop.example:8443", "shop.example"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("198.51.100.1:80", "198.51.100.1"),
        ] {
            assert_eq!(normalize_host(given), want, "{given}");
        }
        assert_eq!(normalize_host("example.com"), "example.com");
        assert_eq!(normalize_host(""), "");
    }
}
