//! Validated settings derived from the command line; what `translate` and `app` consume.
use std::net::IpAddr;

use thiserror::Error;

/// A `namespace/name` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

/// A `namespace/name:port` Service port reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortRef {
    pub namespace: String,
    pub name: String,
    /// Port number or port name.
    pub port: String,
}

/// A flag value that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected namespace/name, got {0:?}")]
    NamespacedName(String),
    #[error("expected namespace/service:port, got {0:?}")]
    ServicePort(String),
    #[error("expected a port range min-max with 1 <= min <= max <= 65535, got {0:?}")]
    PortRange(String),
}

impl NamespacedName {
    /// Whether this names the object `namespace/name`.
    pub fn is(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }
}

impl std::str::FromStr for NamespacedName {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(NamespacedName {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(ConfigError::NamespacedName(s.into())),
        }
    }
}

impl std::str::FromStr for ServicePortRef {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::ServicePort(s.into());
        let (nn, port) = s.rsplit_once(':').ok_or_else(err)?;
        let nn: NamespacedName = nn.parse().map_err(|_| err())?;
        if port.is_empty() {
            return Err(err());
        }
        Ok(ServicePortRef {
            namespace: nn.namespace,
            name: nn.name,
            port: port.into(),
        })
    }
}

/// Parses a `min-max` port range.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), ConfigError> {
    let err = || ConfigError::PortRange(s.into());
    let (a, b) = s.split_once('-').ok_or_else(err)?;
    let a: u16 = a.trim().parse().map_err(|_| err())?;
    let b: u16 = b.trim().parse().map_err(|_| err())?;
    if a == 0 || a > b {
        return Err(err());
    }
    Ok((a, b))
}

/// What the translator needs to know beyond the objects themselves.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `spec.controller` value of IngressClasses we own.
    pub controller_name: String,
    /// Class name also accepted through the legacy `kubernetes.io/ingress.class` annotation.
    pub ingress_class: String,
    /// `--watch-ingress-without-class`: class-less Ingresses are ours.
    pub without_class: bool,
    /// `--ingress-class-by-name`: `ingressClassName: <ingress_class>` is ours by name alone.
    pub class_by_name: bool,
    /// The controller ConfigMap (ingress-nginx's `--configmap`): global settings and
    /// annotation defaults.
    pub controller_config: Option<NamespacedName>,
    /// The flags' controller-wide settings, which the controller ConfigMap's keys replace.
    pub global: crate::snapshot::Global,
    /// `--default-ssl-certificate`: the TLS Secret for names no Ingress has a certificate for.
    pub default_certificate: Option<NamespacedName>,
    /// ConfigMap with TCP services (ingress-nginx `tcp-services` shape).
    pub tcp_services: Option<NamespacedName>,
    /// ConfigMap with UDP services.
    pub udp_services: Option<NamespacedName>,
    /// Addresses the L4 services are exposed on.
    pub l4_addresses: Vec<IpAddr>,
    /// Global default backend Service port.
    pub default_backend: Option<ServicePortRef>,
    /// Honour the static-endpoints Service annotation
    /// ([`crate::translate::STATIC_ENDPOINTS_ANNOTATION`]). Standalone (manifest) mode only:
    /// in a cluster it would let anyone who can annotate a Service point traffic anywhere.
    pub static_endpoints: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r: ServicePortRef = "ns/svc:http".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.port, "http");
        assert!("ns/svc".parse::<ServicePortRef>().is_err());
        assert!("svc:80".parse::<ServicePortRef>().is_err());
        assert!("/x".parse::<NamespacedName>().is_err());
        assert_eq!(parse_port_range("20000-32767"), Ok((20000, 32767)));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10-5").is_err());
    }
}
