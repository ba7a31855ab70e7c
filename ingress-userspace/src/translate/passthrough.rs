//! TLS passthrough (`ssl-passthrough: "true"`): each rule's host is spliced by SNI to the
//! backend of its `/` path, or its first path, or the Ingress's default backend. Paths mean
//! nothing here. A rule without a host cannot be routed by SNI and is dropped.
use std::collections::HashMap;

use super::{hosts::host_order, http::HttpIngress, reason, tls::show, Diagnostics};
use crate::snapshot::{HostMatch, ObjectRef, PassthroughRoute};

/// Builds the passthrough routes from passthrough Ingresses sorted oldest first.
pub fn build(
    ingresses: &[HttpIngress<'_>],
    resolver: &mut super::backends::Resolver<'_>,
    diags: &mut Diagnostics,
) -> Vec<PassthroughRoute> {
    let mut claimed: HashMap<HostMatch, ObjectRef> = HashMap::new();
    let mut out = Vec::new();
    for ing in ingresses {
        let origin = &ing.parsed.origin;
        for rule in &ing.parsed.rules {
            if rule.host == HostMatch::Any {
                diags.push(
                    origin.clone(),
                    reason::INVALID_PASSTHROUGH,
                    "passthrough rule without host dropped".to_string(),
                );
                continue;
            }
            let backend = rule
                .paths
                .iter()
                .find(|p| p.path.as_str() == "/")
                .or(rule.paths.first())
                .map(|p| &p.backend)
                .or(ing.parsed.default_backend.as_ref());
            let Some(backend) = backend else {
                diags.push(
                    origin.clone(),
                    reason::INVALID_PASSTHROUGH,
                    format!(
                        "passthrough host {} has no backend; dropped",
                        show(&rule.host)
                    ),
                );
                continue;
            };
            if let Some(winner) = claimed.get(&rule.host) {
                diags.push(
                    origin.clone(),
                    reason::RULE_CONFLICT,
                    format!(
                        "passthrough host {} is already defined by {winner}; ignored",
                        show(&rule.host)
                    ),
                );
                continue;
            }
            claimed.insert(rule.host.clone(), origin.clone());
            out.push(PassthroughRoute {
                origin: origin.clone(),
                host: rule.host.clone(),
                upstream: ing.upstream(resolver, backend, diags),
                proxy_protocol: ing.ann.proxy_protocol,
                load_balance: ing.ann.policy.load_balance,
            });
        }
    }
    out.sort_by(|a, b| host_order(&a.host, &b.host));
    out
}
