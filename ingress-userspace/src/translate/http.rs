//! HTTP routing: the virtual host of one host name, from the Ingresses with rules for it.
//!
//! Rules for the same host merge across Ingresses. The same (host, pathType, path) defined
//! twice goes to the first Ingress in [`AgeKey`] order (oldest); the other gets a `RuleConflict`.
//! The host's fallback is the `spec.defaultBackend` of the oldest main Ingress contributing
//! rules to it, if that one has any (as in ingress-nginx, where that Ingress creates the
//! server); otherwise, and always for rules without host, the global default applies. Canary Ingresses add no routes: they attach to the main routes with
//! the same host and path text.
//!
//! Hosts are built one at a time so that the translator can rebuild only those whose inputs
//! changed; the result only depends on the contributing Ingresses (oldest first) and their
//! backends.
use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use super::{
    backends::{BackendRef, Resolver},
    ingress::ParsedIngress,
    paths::{rule_identity, Precedence},
    reason,
    state::{AgeKey, IngressState, IngressStates},
    tls::show,
    Diagnostic,
};
use crate::snapshot::{
    BackendProtocol, Canary, ClientAuth, HostMatch, PathMatch, Route, RoutePolicy, RouteTarget,
    Upstream, UpstreamTls, VirtualHost,
};

/// The upstream of an Ingress's `default-backend` annotation (the Service's first port).
pub fn annotated_default(
    resolver: &mut Resolver<'_>,
    st: &mut IngressState,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<Upstream>> {
    let service = st.annotations()?.default_backend.clone()?;
    let backend = BackendRef {
        service,
        port: super::backends::PortRef::First,
    };
    Some(http_upstream(resolver, st, &backend, diags))
}

/// Resolves a backend of an Ingress, reporting why it has no endpoints if so.
pub fn upstream(
    resolver: &mut Resolver<'_>,
    st: &IngressState,
    backend: &BackendRef,
    diags: &mut Vec<Diagnostic>,
) -> Arc<Upstream> {
    let (up, problem) = resolver.upstream(
        &st.parsed.origin.namespace,
        backend,
        st.protocol(),
        st.service_upstream(),
    );
    if let Some(p) = problem {
        diags.push(Diagnostic::new(
            st.parsed.origin.clone(),
            p.reason,
            p.message,
        ));
    }
    up
}

/// [`upstream`] for HTTP routes: with the Ingress's `proxy-ssl-*` settings.
pub fn http_upstream(
    resolver: &mut Resolver<'_>,
    st: &mut IngressState,
    backend: &BackendRef,
    diags: &mut Vec<Diagnostic>,
) -> Arc<Upstream> {
    let up = upstream(resolver, st, backend, diags);
    with_proxy_ssl(st, backend, up)
}

/// A canary's upstream called with its main route's `protocol`: ingress-nginx sets
/// `proxy_pass` per location, so a canary that does not repeat the main's `backend-protocol`
/// is still called over it. Problems were reported when it was first resolved.
fn canary_upstream(
    resolver: &mut Resolver<'_>,
    st: &mut IngressState,
    backend: &BackendRef,
    protocol: BackendProtocol,
) -> Arc<Upstream> {
    let namespace = st.parsed.origin.namespace.clone();
    let (up, _) = resolver.upstream(&namespace, backend, protocol, st.service_upstream());
    with_proxy_ssl(st, backend, up)
}

/// `up` with the Ingress's `proxy-ssl-*` settings when it is reached over TLS. The settings
/// are part of the name: the proxy keys connection pools by it, and a connection checked
/// under one Ingress's settings must not serve another's.
fn with_proxy_ssl(st: &mut IngressState, backend: &BackendRef, up: Arc<Upstream>) -> Arc<Upstream> {
    let Some(tls) = st.proxy_ssl.clone() else {
        return up;
    };
    if !matches!(up.protocol, BackendProtocol::Https | BackendProtocol::Grpcs) {
        return up;
    }
    if let Some((_, derived)) = st.tls_upstreams.iter().find(|(b, _)| Arc::ptr_eq(b, &up)) {
        return derived.clone();
    }
    let name = if tls.name.is_empty() {
        format!("{}.{}.svc", backend.service, st.parsed.origin.namespace)
    } else {
        tls.name.clone()
    };
    let spec = UpstreamTls {
        name,
        ..(*tls).clone()
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &spec.secret,
        spec.verify.is_some(),
        &spec.ca,
        spec.depth,
        &spec.name,
        spec.sni,
        spec.client_cert.as_ref().map(|k| &k.cert),
        spec.versions,
        spec.tls12_suites
            .as_ref()
            .map(|s| s.iter().map(|c| u16::from(*c)).collect::<Vec<_>>()),
    )
        .hash(&mut h);
    let derived = Arc::new(Upstream {
        name: format!("{}@tls-{:016x}", up.name, h.finish()),
        tls: Some(Arc::new(spec)),
        ..(*up).clone()
    });
    st.tls_upstreams.retain(|(b, _)| b.name != up.name);
    st.tls_upstreams.push((up, derived.clone()));
    derived
}

/// The route target of `slot` of an Ingress, reused (same `Arc`) while its upstream is the
/// same object: unchanged routes then cost no allocation and compare by pointer.
pub fn target(
    st: &mut IngressState,
    slot: usize,
    upstream: Arc<Upstream>,
    default_backend: Option<Arc<Upstream>>,
) -> Arc<RouteTarget> {
    if st.slots.len() <= slot {
        st.slots.resize(slot + 1, None);
    }
    if let Some(t) = &st.slots[slot] {
        let same_default = match (&t.default_backend, &default_backend) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if Arc::ptr_eq(&t.upstream, &upstream) && same_default {
            return t.clone();
        }
    }
    let policy = match st.annotations() {
        Some(a) => RoutePolicy {
            basic_auth: st.auth.clone(),
            rejected: st.parsed.rejected.is_some(),
            custom_headers: st.custom_headers.clone(),
            external_auth: st
                .external_auth
                .clone()
                .or_else(|| a.policy.external_auth.clone()),
            ..a.policy.clone()
        },
        None => RoutePolicy::default(),
    };
    let t = Arc::new(RouteTarget {
        origin: st.parsed.origin.clone(),
        upstream,
        policy,
        canary: None,
        default_backend,
    });
    st.slots[slot] = Some(t.clone());
    t
}

struct RouteDraft {
    path: PathMatch,
    owner: Arc<ParsedIngress>,
    /// The owner's path slot (see [`ParsedIngress::written`]).
    slot: usize,
    target: Arc<RouteTarget>,
    canary: Option<Canary>,
}

/// Builds the virtual host `host` from its main and canary Ingresses (each oldest first).
/// `None` when no main Ingress has a rule for it. Diagnostics go to `diags`.
pub fn build_host(
    host: &HostMatch,
    mains: &std::collections::BTreeSet<AgeKey>,
    canaries: &std::collections::BTreeSet<AgeKey>,
    states: &mut IngressStates,
    resolver: &mut Resolver<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<VirtualHost> {
    let mut routes: Vec<RouteDraft> = Vec::new();
    let mut fallback = None;
    let mut any_main = false;
    let mut client_auth: Option<Arc<ClientAuth>> = None;
    let mut aliases: Vec<HostMatch> = Vec::new();
    let mut www_redirect = false;
    let mut app_root: Option<String> = None;
    for key in mains {
        let Some(st) = states.get_mut(&key.namespace, &key.name) else {
            continue;
        };
        let parsed = st.parsed.clone();
        // Once per Ingress: resolving per path would repeat its diagnostics.
        let db = annotated_default(resolver, st, diags);
        if parsed.rules.iter().any(|r| &r.host == host) {
            host_client_auth(host, st, &mut client_auth, diags);
            if let Some(a) = st.annotations() {
                // The oldest Ingress naming aliases decides them; any asks for the redirect.
                if aliases.is_empty() {
                    aliases.clone_from(&a.server_aliases);
                }
                www_redirect |= a.www_redirect && matches!(host, HostMatch::Exact(_));
                if app_root.is_none() {
                    app_root.clone_from(&a.policy.app_root);
                }
            }
        }
        for rule in parsed.rules.iter().filter(|r| &r.host == host) {
            // Only the oldest main Ingress of the host decides its fallback, even when it has
            // no defaultBackend and a younger one does. Rules without host join the
            // catch-all server, whose fallback is the global default.
            if !any_main && *host != HostMatch::Any {
                if let Some(b) = &parsed.default_backend {
                    let up = http_upstream(resolver, st, b, diags);
                    fallback = Some(target(st, 0, up, db.clone()));
                }
            }
            any_main = true;
            for p in &rule.paths {
                let identity = rule_identity(&p.path);
                // Hosts rarely have many paths: a scan beats an index.
                if let Some(winner) = routes.iter().find(|r| rule_identity(&r.path) == identity) {
                    diags.push(Diagnostic::new(
                        parsed.origin.clone(),
                        reason::RULE_CONFLICT,
                        format!(
                            "host {} path {} is already defined by {}; this rule is ignored",
                            show(host),
                            identity.1,
                            winner.owner.origin
                        ),
                    ));
                    continue;
                }
                let up = http_upstream(resolver, st, &p.backend, diags);
                let t = target(st, p.slot, up, db.clone());
                routes.push(RouteDraft {
                    path: p.path.clone(),
                    owner: parsed.clone(),
                    slot: p.slot,
                    target: t,
                    canary: None,
                });
            }
        }
    }
    for key in canaries {
        let Some(st) = states.get_mut(&key.namespace, &key.name) else {
            continue;
        };
        let parsed = st.parsed.clone();
        let Some(cfg) = st.annotations().and_then(|a| a.canary.clone()) else {
            continue;
        };
        for rule in parsed.rules.iter().filter(|r| &r.host == host) {
            for p in &rule.paths {
                let text = p.path.as_str();
                // The path type must agree too, as in ingress-nginx: a `Prefix` canary does
                // not split the traffic of an `Exact` rule of the same text. A rule written
                // the same attaches even when the main's annotations read it otherwise
                // (its `rewrite-target` or `use-regex` makes it a regex, the canary's
                // own annotations being ignored as ingress-nginx ignores them).
                let identity = rule_identity(&p.path);
                let matching: Vec<usize> = routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        rule_identity(&r.path) == identity
                            || r.owner.written(r.slot) == Some(&p.written)
                    })
                    .map(|(i, _)| i)
                    .collect();
                if matching.is_empty() {
                    diags.push(Diagnostic::new(
                        parsed.origin.clone(),
                        reason::CANARY_WITHOUT_MAIN_ROUTE,
                        format!(
                            "canary host {} path {text} matches no main route; ignored",
                            show(host)
                        ),
                    ));
                    continue;
                }
                let up = http_upstream(resolver, st, &p.backend, diags);
                for i in matching {
                    let route = &mut routes[i];
                    let main_protocol = route.target.upstream.protocol;
                    let up = if up.protocol == main_protocol {
                        up.clone()
                    } else {
                        canary_upstream(resolver, st, &p.backend, main_protocol)
                    };
                    if let Some(existing) = &route.canary {
                        diags.push(Diagnostic::new(
                            parsed.origin.clone(),
                            reason::RULE_CONFLICT,
                            format!(
                                "host {} path {text} already has a canary from {}; ignored",
                                show(host),
                                existing.origin
                            ),
                        ));
                        continue;
                    }
                    route.canary = Some(Canary {
                        origin: parsed.origin.clone(),
                        upstream: up,
                        label: format!(
                            "{}-{}-{}",
                            parsed.origin.namespace, p.backend.service, p.backend.port
                        ),
                        weight: cfg.weight,
                        weight_total: cfg.weight_total,
                        header: cfg.header.clone(),
                        header_value: cfg.header_value.clone(),
                        header_pattern: cfg.header_pattern.clone(),
                        cookie: cfg.cookie.clone(),
                        sticky: cfg.sticky,
                    });
                }
            }
        }
    }
    if !any_main {
        return None;
    }
    routes.sort_by(|a, b| Precedence(&a.path).cmp(&Precedence(&b.path)));
    let routes = routes
        .into_iter()
        .map(|r| {
            let target = match r.canary {
                None => r.target,
                Some(c) => Arc::new(RouteTarget {
                    canary: Some(c),
                    ..(*r.target).clone()
                }),
            };
            Route {
                path: r.path,
                target,
            }
        })
        .collect();
    Some(VirtualHost {
        host: host.clone(),
        routes,
        fallback,
        tls: false,
        client_auth,
        aliases: aliases.into_iter().filter(|a| a != host).collect(),
        www_redirect,
        app_root,
    })
}

/// Client certificates are a property of the host (ingress-nginx sets `ssl_verify_client` on
/// the server): the oldest main Ingress with `auth-tls-*` decides for every route of it. A
/// younger one asking for different settings is told so.
fn host_client_auth(
    host: &HostMatch,
    st: &IngressState,
    current: &mut Option<Arc<ClientAuth>>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(mine) = &st.client_auth else {
        return;
    };
    match current {
        None => *current = Some(mine.clone()),
        Some(winner) if winner.same_settings(mine) => {}
        Some(winner) => diags.push(Diagnostic::new(
            st.parsed.origin.clone(),
            reason::RULE_CONFLICT,
            format!(
                "host {} already has client certificate settings from {}; its auth-tls annotations do not apply there",
                show(host),
                winner.origin
            ),
        )),
    }
}
