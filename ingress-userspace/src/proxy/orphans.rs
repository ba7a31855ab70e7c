//! ingress-nginx's `orphan_ingress` gauge: for each Ingress, whether a backend it routes to
//! is a Service that does not exist (`type="no-service"`), and whether one that exists has
//! no endpoint for the port (`type="no-endpoint"`, a port the Service lacks included, as in
//! ingress-nginx). Alerts written for ingress-nginx catch Ingresses answering 503 with it.
//!
//! Worked out from the applied snapshot, so an endpoint change updates it as it updates the
//! routes. ingress-nginx sets the gauges from the first path that creates each upstream, so
//! an Ingress sharing a Service with an older one may keep a stale value there; here every
//! path of every Ingress counts, and either type is 1 when any of its backends is so.
use std::collections::BTreeMap;

use crate::snapshot::{ObjectRef, Snapshot, Upstream};

/// One Ingress with backends, and which kind of orphan it is (possibly both, or neither).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub namespace: String,
    pub ingress: String,
    /// A backend Service does not exist.
    pub no_service: bool,
    /// A backend Service that exists has no endpoint for the port.
    pub no_endpoint: bool,
}

/// Every Ingress with a rule path, a canary path, a default backend or a passthrough host
/// in `snapshot`, sorted by namespace and name.
pub fn orphans(snapshot: &Snapshot) -> Vec<Orphan> {
    let mut by_ingress: BTreeMap<(&str, &str), (bool, bool)> = BTreeMap::new();
    for (origin, up) in backends(snapshot) {
        if origin.kind != "Ingress" {
            continue;
        }
        let e = by_ingress
            .entry((origin.namespace.as_str(), origin.name.as_str()))
            .or_default();
        e.0 |= up.missing;
        e.1 |= !up.missing && up.endpoints.is_empty();
    }
    by_ingress
        .into_iter()
        .map(|((namespace, ingress), (no_service, no_endpoint))| Orphan {
            namespace: namespace.to_owned(),
            ingress: ingress.to_owned(),
            no_service,
            no_endpoint,
        })
        .collect()
}

/// Each backend of the snapshot's Ingresses, with the Ingress it comes from.
fn backends(snapshot: &Snapshot) -> impl Iterator<Item = (&ObjectRef, &Upstream)> {
    let http = &snapshot.http;
    // A host's fallback is the `spec.defaultBackend` of an Ingress that also has rules.
    let targets = http
        .hosts
        .iter()
        .flat_map(|h| h.routes.iter().map(|r| &r.target).chain(h.fallback.iter()));
    let routes = targets.flat_map(|t| {
        let canary = t.canary.as_ref().map(|c| (&c.origin, &*c.upstream));
        std::iter::once((&t.origin, &*t.upstream)).chain(canary)
    });
    let fallback = http
        .default_backend
        .iter()
        .map(|t| (&t.origin, &*t.upstream));
    let passthrough = snapshot
        .passthrough
        .iter()
        .map(|p| (&p.origin, &*p.upstream));
    routes.chain(fallback).chain(passthrough)
}
