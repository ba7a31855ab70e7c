//! L4 services from ingress-nginx style ConfigMaps (`--tcp-services-configmap`,
//! `--udp-services-configmap`): data `"<port>": "<namespace>/<service>:<port>"`. An entry
//! asking for PROXY protocol in its third or fourth field (`:PROXY`, `::PROXY`) is skipped
//! with a diagnostic: the kernel path can neither read nor write the header, and serving it
//! without would hand the backend a stream it cannot parse. Other values there mean no PROXY
//! protocol, as in ingress-nginx. Each entry is exposed on every `Settings::l4_addresses`
//! address, with the endpoints of the same address family.
use std::{collections::HashSet, net::SocketAddr};

use super::{
    backends::{PortRef, Resolver},
    reason, Diagnostic,
};
use crate::{
    config::{NamespacedName, Settings},
    snapshot::{L4Protocol, L4Service, ObjectRef},
    store::ObjectCache,
};

/// Builds the L4 services, ordered by address, port and protocol; also returns the Services
/// the entries name.
pub fn build(
    objects: &ObjectCache,
    settings: &Settings,
    resolver: &mut Resolver<'_>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<L4Service>, HashSet<(String, String)>) {
    let mut out = Vec::new();
    let mut referenced = HashSet::new();
    let sources = [
        (L4Protocol::Tcp, &settings.tcp_services),
        (L4Protocol::Udp, &settings.udp_services),
    ];
    for (protocol, cm_ref) in sources {
        let Some(NamespacedName { namespace, name }) = cm_ref else {
            continue;
        };
        let Some(cm) = objects.config_map(namespace, name) else {
            continue;
        };
        let origin = ObjectRef {
            kind: "ConfigMap",
            namespace: namespace.clone(),
            name: name.clone(),
        };
        for (key, value) in cm.data.iter().flatten() {
            let entry = match parse_entry(key, value) {
                Ok(e) => e,
                Err(m) => {
                    diags.push(Diagnostic::new(
                        origin.clone(),
                        reason::INVALID_L4_SERVICE,
                        format!("entry {key:?}: {m}; skipped"),
                    ));
                    continue;
                }
            };
            referenced.insert((entry.namespace.clone(), entry.service.clone()));
            let backends = match resolver.l4_endpoints(
                &entry.namespace,
                &entry.service,
                &entry.port,
                protocol,
            ) {
                Ok(b) => b,
                Err(p) => {
                    diags.push(Diagnostic::new(
                        origin.clone(),
                        p.reason,
                        format!("entry {key:?}: {}", p.message),
                    ));
                    Vec::new()
                }
            };
            for vip in &settings.l4_addresses {
                out.push(L4Service {
                    origin: origin.clone(),
                    vip: *vip,
                    port: entry.listen,
                    protocol,
                    backends: backends
                        .iter()
                        .filter(|b| b.is_ipv4() == vip.is_ipv4())
                        .copied()
                        .collect::<Vec<SocketAddr>>(),
                });
            }
        }
    }
    out.sort_by_key(|s| (s.vip, s.port, s.protocol));
    (out, referenced)
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    listen: u16,
    namespace: String,
    service: String,
    port: PortRef,
}

fn parse_entry(key: &str, value: &str) -> Result<Entry, String> {
    let listen: u16 = key
        .trim()
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| "the key must be a port number 1..=65535".to_string())?;
    let fields: Vec<&str> = value.trim().split(':').collect();
    if !(2..=4).contains(&fields.len()) {
        return Err(format!("expected namespace/service:port, got {value:?}"));
    }
    let nn: NamespacedName = fields[0]
        .parse()
        .map_err(|_| format!("expected namespace/service:port, got {value:?}"))?;
    let port = match fields[1].parse::<i32>() {
        Ok(n) if (1..=65535).contains(&n) => PortRef::Number(n),
        Ok(_) => return Err(format!("port {} out of range", fields[1])),
        Err(_) if !fields[1].is_empty() => PortRef::Name(fields[1].to_owned()),
        Err(_) => return Err(format!("expected namespace/service:port, got {value:?}")),
    };
    if fields[2..].contains(&"PROXY") {
        return Err("PROXY protocol is not supported on L4 services".into());
    }
    Ok(Entry {
        listen,
        namespace: nn.namespace,
        service: nn.name,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_table() {
        let ok = |listen, ns: &str, svc: &str, port: PortRef| Entry {
            listen,
            namespace: ns.into(),
            service: svc.into(),
            port,
        };
        let table: &[(&str, &str, Option<Entry>)] = &[
            (
                "9000",
                "default/db:5432",
                Some(ok(9000, "default", "db", PortRef::Number(5432))),
            ),
            (
                "53",
                "kube-system/dns:dns",
                Some(ok(53, "kube-system", "dns", PortRef::Name("dns".into()))),
            ),
            ("9000", "default/db:5432:PROXY", None),
            ("9000", "default/db:5432::PROXY", None),
            ("9000", "default/db:5432:PROXY:", None),
            (
                "9000",
                "default/db:5432::",
                Some(ok(9000, "default", "db", PortRef::Number(5432))),
            ),
            // Anything but PROXY there means no PROXY protocol, as in ingress-nginx.
            (
                "9000",
                "default/db:5432:foo",
                Some(ok(9000, "default", "db", PortRef::Number(5432))),
            ),
            ("0", "default/db:5432", None),
            ("70000", "default/db:5432", None),
            ("x", "default/db:5432", None),
            ("9000", "db:5432", None),
            ("9000", "default/db", None),
            ("9000", "default/db:", None),
            ("9000", "default/db:0", None),
            ("9000", "default/db:1:2:3:4", None),
            ("9000", "", None),
        ];
        for (k, v, want) in table {
            assert_eq!(parse_entry(k, v).ok(), *want, "{k}: {v}");
        }
    }
}
