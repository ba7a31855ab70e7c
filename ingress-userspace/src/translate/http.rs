//! HTTP routing: owned Ingresses -> virtual hosts with routes in precedence order.
//!
//! Rules for the same host merge across Ingresses. The same (host, pathType, path) defined
//! twice goes to the oldest Ingress (then namespace/name); the other gets a `RuleConflict`.
//! Each host's fallback is the `spec.defaultBackend` of the oldest Ingress contributing rules
//! to it that has one. Canary Ingresses add no routes: they attach to the main routes with
//! the same host and path.
use std::{collections::HashMap, sync::Arc};

use super::{
    annotations::Annotations,
    backends::{BackendRef, Resolver},
    hosts::host_order,
    ingress::ParsedIngress,
    paths::{rule_identity, Precedence},
    reason,
    tls::show,
    Diagnostics,
};
use crate::snapshot::{
    Canary, HostMatch, PathMatch, Route, RoutePolicy, RouteTarget, Upstream, VirtualHost,
};

/// An owned, valid Ingress with its policy (Secrets resolved).
#[derive(Debug)]
pub struct HttpIngress<'a> {
    pub parsed: &'a ParsedIngress,
    pub ann: &'a Annotations,
    pub policy: RoutePolicy,
}

impl HttpIngress<'_> {
    /// Resolves a backend of this Ingress, reporting why it has no endpoints if so.
    pub fn upstream(
        &self,
        resolver: &mut Resolver<'_>,
        backend: &BackendRef,
        diags: &mut Diagnostics,
    ) -> Arc<Upstream> {
        let (up, problem) =
            resolver.upstream(&self.parsed.origin.namespace, backend, self.ann.protocol);
        if let Some(p) = problem {
            diags.push(self.parsed.origin.clone(), p.reason, p.message);
        }
        up
    }

    /// A route target of this Ingress.
    pub fn target(&self, upstream: Arc<Upstream>) -> Arc<RouteTarget> {
        Arc::new(RouteTarget {
            origin: self.parsed.origin.clone(),
            upstream,
            policy: self.policy.clone(),
            canary: None,
        })
    }
}

struct RouteDraft<'a> {
    path: PathMatch,
    owner: &'a HttpIngress<'a>,
    upstream: Arc<Upstream>,
    canary: Option<Canary>,
}

#[derive(Default)]
struct HostDraft<'a> {
    routes: Vec<RouteDraft<'a>>,
    index: HashMap<(u8, String), usize>,
    fallback: Option<Arc<RouteTarget>>,
}

/// Builds the virtual hosts. `mains` and `canaries` must be sorted oldest first.
pub fn build<'a>(
    mains: &'a [HttpIngress<'a>],
    canaries: &[HttpIngress<'_>],
    resolver: &mut Resolver<'_>,
    diags: &mut Diagnostics,
) -> Vec<VirtualHost> {
    let mut drafts: HashMap<HostMatch, HostDraft<'a>> = HashMap::new();
    for ing in mains {
        for rule in &ing.parsed.rules {
            let draft = drafts.entry(rule.host.clone()).or_default();
            if draft.fallback.is_none() {
                if let Some(b) = &ing.parsed.default_backend {
                    draft.fallback = Some(ing.target(ing.upstream(resolver, b, diags)));
                }
            }
            for p in &rule.paths {
                let (kind, text) = rule_identity(&p.path);
                if let Some(&i) = draft.index.get(&(kind, text.to_owned())) {
                    diags.push(
                        ing.parsed.origin.clone(),
                        reason::RULE_CONFLICT,
                        format!(
                            "host {} path {} is already defined by {}; this rule is ignored",
                            show(&rule.host),
                            text,
                            draft.routes[i].owner.parsed.origin
                        ),
                    );
                    continue;
                }
                let upstream = ing.upstream(resolver, &p.backend, diags);
                draft
                    .index
                    .insert((kind, text.to_owned()), draft.routes.len());
                draft.routes.push(RouteDraft {
                    path: p.path.clone(),
                    owner: ing,
                    upstream,
                    canary: None,
                });
            }
        }
    }
    for ing in canaries {
        let Some(cfg) = &ing.ann.canary else { continue };
        for rule in &ing.parsed.rules {
            for p in &rule.paths {
                let text = p.path.as_str();
                let matching: Vec<usize> = drafts
                    .get(&rule.host)
                    .map(|d| {
                        d.routes
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.path.as_str() == text)
                            .map(|(i, _)| i)
                            .collect()
                    })
                    .unwrap_or_default();
                if matching.is_empty() {
                    diags.push(
                        ing.parsed.origin.clone(),
                        reason::CANARY_WITHOUT_MAIN_ROUTE,
                        format!(
                            "canary host {} path {text} matches no main route; ignored",
                            show(&rule.host)
                        ),
                    );
                    continue;
                }
                let upstream = ing.upstream(resolver, &p.backend, diags);
                let Some(draft) = drafts.get_mut(&rule.host) else {
                    continue;
                };
                for i in matching {
                    let route = &mut draft.routes[i];
                    if let Some(existing) = &route.canary {
                        diags.push(
                            ing.parsed.origin.clone(),
                            reason::RULE_CONFLICT,
                            format!(
                                "host {} path {text} already has a canary from {}; ignored",
                                show(&rule.host),
                                existing.origin
                            ),
                        );
                        continue;
                    }
                    route.canary = Some(Canary {
                        origin: ing.parsed.origin.clone(),
                        upstream: upstream.clone(),
                        weight: cfg.weight,
                        header: cfg.header.clone(),
                        header_value: cfg.header_value.clone(),
                    });
                }
            }
        }
    }
    let mut hosts: Vec<VirtualHost> = drafts
        .into_iter()
        .map(|(host, mut d)| {
            d.routes
                .sort_by(|a, b| Precedence(&a.path).cmp(&Precedence(&b.path)));
            let routes = d
                .routes
                .into_iter()
                .map(|r| Route {
                    path: r.path,
                    target: Arc::new(RouteTarget {
                        origin: r.owner.parsed.origin.clone(),
                        upstream: r.upstream,
                        policy: r.owner.policy.clone(),
                        canary: r.canary,
                    }),
                })
                .collect();
            VirtualHost {
                host,
                routes,
                fallback: d.fallback,
                tls: false,
            }
        })
        .collect();
    hosts.sort_by(|a, b| host_order(&a.host, &b.host));
    hosts
}
