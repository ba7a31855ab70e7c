//! TLS passthrough (`ssl-passthrough: "true"`): each rule's host is spliced by SNI to the
//! backend of its `/` path, or its first path, or the Ingress's default backend. Paths mean
//! nothing here. A rule without a host cannot be routed by SNI and is dropped.
use std::collections::HashMap;

use super::{
    backends::Resolver, hosts::host_order, http::upstream, reason, state::IngressState, tls::show,
    Diagnostic,
};
use crate::snapshot::{HostMatch, ObjectRef, PassthroughRoute};

/// Builds the passthrough routes from passthrough Ingresses sorted oldest first.
pub fn build(
    ingresses: &[&IngressState],
    resolver: &mut Resolver<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<PassthroughRoute> {
    let mut claimed: HashMap<&HostMatch, &ObjectRef> = HashMap::new();
    let mut out = Vec::new();
    for st in ingresses {
        let ing = &st.parsed;
        let origin = &ing.origin;
        let (proxy_protocol, load_balance) = st
            .annotations()
            .map(|a| (a.proxy_protocol, a.policy.load_balance))
            .unwrap_or_default();
        for rule in &ing.rules {
            if rule.host == HostMatch::Any {
                diags.push(Diagnostic::new(
                    origin.clone(),
                    reason::INVALID_PASSTHROUGH,
                    "passthrough rule without host dropped",
                ));
                continue;
            }
            let backend = rule
                .paths
                .iter()
                .find(|p| p.path.as_str() == "/")
                .or(rule.paths.first())
                .map(|p| &p.backend)
                .or(ing.default_backend.as_ref());
            let Some(backend) = backend else {
                diags.push(Diagnostic::new(
                    origin.clone(),
                    reason::INVALID_PASSTHROUGH,
                    format!(
                        "passthrough host {} has no backend; dropped",
                        show(&rule.host)
                    ),
                ));
                continue;
            };
            if let Some(winner) = claimed.get(&rule.host) {
                diags.push(Diagnostic::new(
                    origin.clone(),
                    reason::RULE_CONFLICT,
                    format!(
                        "passthrough host {} is already defined by {winner}; ignored",
                        show(&rule.host)
                    ),
                ));
                continue;
            }
            claimed.insert(&rule.host, origin);
            out.push(PassthroughRoute {
                origin: origin.clone(),
                host: rule.host.clone(),
                upstream: upstream(resolver, st, backend, diags),
                proxy_protocol,
                load_balance,
            });
        }
    }
    out.sort_by(|a, b| host_order(&a.host, &b.host));
    out
}
