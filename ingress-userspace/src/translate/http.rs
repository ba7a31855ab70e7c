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
    BasicAuth, Canary, HostMatch, PathMatch, Route, RoutePolicy, RouteTarget, Upstream, VirtualHost,
};

/// An owned, valid Ingress with the objects its annotations name, resolved.
#[derive(Debug)]
pub struct HttpIngress<'a> {
    pub parsed: &'a Arc<ParsedIngress>,
    pub ann: &'a Annotations,
    /// The users of `auth-secret`, if any.
    pub auth: Option<Arc<BasicAuth>>,
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

    /// The route policy of this Ingress.
    pub fn policy(&self) -> RoutePolicy {
        RoutePolicy {
            basic_auth: self.auth.clone(),
            ..self.ann.policy.clone()
        }
    }

    /// A new route target of this Ingress.
    pub fn target(&self, upstream: Arc<Upstream>) -> Arc<RouteTarget> {
        Arc::new(RouteTarget {
            origin: self.parsed.origin.clone(),
            upstream,
            policy: self.policy(),
            canary: None,
        })
    }
}

/// Route targets kept across translations: one per backend slot of an Ingress (slot 0 is its
/// default backend, then its paths in order). A target is reused, as the same `Arc`, while
/// the Ingress, its auth Secret and the slot's upstream are the same objects; so unchanged
/// routes cost no allocation and compare by pointer.
#[derive(Debug, Default)]
pub struct TargetCache {
    /// Keyed by the address of the parsed Ingress, which the entry keeps alive.
    entries: HashMap<usize, TargetEntry>,
    run: u64,
}

#[derive(Debug)]
struct TargetEntry {
    parsed: Arc<ParsedIngress>,
    auth: Option<Arc<BasicAuth>>,
    slots: Vec<Option<Arc<RouteTarget>>>,
    used_run: u64,
}

impl TargetCache {
    /// Starts translation number `run`.
    pub fn begin(&mut self, run: u64) {
        self.run = run;
    }

    /// Forgets Ingresses not seen in this run.
    pub fn finish(&mut self) {
        let run = self.run;
        self.entries.retain(|_, e| e.used_run == run);
    }

    /// The target of `slot` of `ing` with `upstream`, reused when nothing changed.
    pub fn target(
        &mut self,
        ing: &HttpIngress<'_>,
        slot: usize,
        upstream: Arc<Upstream>,
    ) -> Arc<RouteTarget> {
        let run = self.run;
        let entry = self
            .entries
            .entry(Arc::as_ptr(ing.parsed) as usize)
            .or_insert_with(|| TargetEntry {
                parsed: ing.parsed.clone(),
                auth: ing.auth.clone(),
                slots: Vec::new(),
                used_run: run,
            });
        let same_auth = match (&entry.auth, &ing.auth) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        // The key is the address of `parsed`, which the entry keeps alive: always the same
        // Ingress, checked anyway because a stale target would be a silent misroute.
        if !same_auth || !Arc::ptr_eq(&entry.parsed, ing.parsed) {
            entry.parsed = ing.parsed.clone();
            entry.auth = ing.auth.clone();
            entry.slots.clear();
        }
        entry.used_run = run;
        if entry.slots.len() <= slot {
            entry.slots.resize(slot + 1, None);
        }
        if let Some(t) = &entry.slots[slot] {
            if Arc::ptr_eq(&t.upstream, &upstream) {
                return t.clone();
            }
        }
        let t = ing.target(upstream);
        entry.slots[slot] = Some(t.clone());
        t
    }
}

struct RouteDraft<'a> {
    path: &'a PathMatch,
    owner: &'a HttpIngress<'a>,
    target: Arc<RouteTarget>,
    canary: Option<Canary>,
}

#[derive(Default)]
struct HostDraft<'a> {
    routes: Vec<RouteDraft<'a>>,
    fallback: Option<Arc<RouteTarget>>,
}

/// Builds the virtual hosts. `mains` and `canaries` must be sorted oldest first.
pub fn build<'a>(
    mains: &'a [HttpIngress<'a>],
    canaries: &[HttpIngress<'_>],
    resolver: &mut Resolver<'_>,
    targets: &mut TargetCache,
    diags: &mut Diagnostics,
) -> Vec<VirtualHost> {
    let mut drafts: HashMap<&'a HostMatch, HostDraft<'a>> = HashMap::new();
    for ing in mains {
        let mut slot = 0;
        for rule in &ing.parsed.rules {
            let draft = drafts.entry(&rule.host).or_default();
            if draft.fallback.is_none() {
                if let Some(b) = &ing.parsed.default_backend {
                    let up = ing.upstream(resolver, b, diags);
                    draft.fallback = Some(targets.target(ing, 0, up));
                }
            }
            for p in &rule.paths {
                slot += 1;
                // Hosts rarely have many paths: a scan beats building an index every time.
                let identity = rule_identity(&p.path);
                if let Some(winner) = draft
                    .routes
                    .iter()
                    .find(|r| rule_identity(r.path) == identity)
                {
                    diags.push(
                        ing.parsed.origin.clone(),
                        reason::RULE_CONFLICT,
                        format!(
                            "host {} path {} is already defined by {}; this rule is ignored",
                            show(&rule.host),
                            identity.1,
                            winner.owner.parsed.origin
                        ),
                    );
                    continue;
                }
                let upstream = ing.upstream(resolver, &p.backend, diags);
                let target = targets.target(ing, slot, upstream);
                draft.routes.push(RouteDraft {
                    path: &p.path,
                    owner: ing,
                    target,
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
                .sort_by(|a, b| Precedence(a.path).cmp(&Precedence(b.path)));
            let routes = d
                .routes
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
                        path: r.path.clone(),
                        target,
                    }
                })
                .collect();
            VirtualHost {
                host: host.clone(),
                routes,
                fallback: d.fallback,
                tls: false,
            }
        })
        .collect();
    hosts.sort_by(|a, b| host_order(&a.host, &b.host));
    hosts
}
