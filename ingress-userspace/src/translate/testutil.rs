//! Small builders that keep translation test tables readable.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            ConfigMap, Secret, Service, ServicePort, ServiceSpec, TypedLocalObjectReference,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass,
            IngressClassSpec, IngressRule, IngressServiceBackend, IngressSpec, IngressTLS,
            ServiceBackendPort,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, Time},
        util::intstr::IntOrString,
    },
    ByteString,
};

use super::annotations::{NGINX_PREFIX, OWN_PREFIX};
use crate::{config::Settings, store::cache::SERVICE_NAME_LABEL};

/// Our controller name in tests.
pub const CONTROLLER: &str = "ingress.example.dev/xdp-ingress";

/// Settings matching [`mk_ingress`]'s default class.
pub fn settings() -> Settings {
    Settings {
        controller_name: CONTROLLER.into(),
        ingress_class: "xdp".into(),
        ..Default::default()
    }
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// An IngressClass.
pub fn mk_class(name: &str, controller: &str, default: bool) -> IngressClass {
    let mut m = ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    if default {
        m.annotations = Some(BTreeMap::from([(
            "ingressclass.kubernetes.io/is-default-class".to_owned(),
            "true".to_owned(),
        )]));
    }
    IngressClass {
        metadata: m,
        spec: Some(IngressClassSpec {
            controller: Some(controller.into()),
            parameters: None,
        }),
    }
}

/// Something that names a Service port in a backend.
pub trait IntoPort {
    fn into_port(self) -> ServiceBackendPort;
}

impl IntoPort for i32 {
    fn into_port(self) -> ServiceBackendPort {
        ServiceBackendPort {
            number: Some(self),
            name: None,
        }
    }
}

impl IntoPort for &str {
    fn into_port(self) -> ServiceBackendPort {
        ServiceBackendPort {
            number: None,
            name: Some(self.into()),
        }
    }
}

fn backend(svc: &str, port: impl IntoPort) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: svc.into(),
            port: Some(port.into_port()),
        }),
        resource: None,
    }
}

/// Ingress builder; class `xdp` unless changed.
pub struct IngressBuilder(Ingress);

/// Starts an Ingress `ns/name` of class `xdp`.
pub fn mk_ingress(ns: &str, name: &str) -> IngressBuilder {
    IngressBuilder(Ingress {
        metadata: meta(ns, name),
        spec: Some(IngressSpec {
            ingress_class_name: Some("xdp".into()),
            ..Default::default()
        }),
        status: None,
    })
}

impl IngressBuilder {
    fn spec(&mut self) -> &mut IngressSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }

    /// `spec.ingressClassName`.
    pub fn class(mut self, class: &str) -> Self {
        self.spec().ingress_class_name = Some(class.into());
        self
    }

    /// No class at all.
    pub fn no_class(mut self) -> Self {
        self.spec().ingress_class_name = None;
        self
    }

    /// An annotation under the ingress-nginx prefix.
    pub fn annotation(self, name: &str, value: &str) -> Self {
        self.raw_annotation(&format!("{NGINX_PREFIX}{name}"), value)
    }

    /// An annotation under our prefix.
    pub fn own_annotation(self, name: &str, value: &str) -> Self {
        self.raw_annotation(&format!("{OWN_PREFIX}{name}"), value)
    }

    /// An annotation with its full key.
    pub fn raw_annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// `metadata.creationTimestamp` in seconds since the epoch.
    pub fn created(mut self, secs: i64) -> Self {
        let ts = k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp");
        self.0.metadata.creation_timestamp = Some(Time(ts));
        self
    }

    /// Starts a rule for `host` ("" for no host).
    pub fn host(mut self, host: &str) -> Self {
        let host = (!host.is_empty()).then(|| host.to_owned());
        self.spec()
            .rules
            .get_or_insert_with(Vec::new)
            .push(IngressRule { host, http: None });
        self
    }

    fn push_path(&mut self, p: HTTPIngressPath) {
        let rules = self.spec().rules.get_or_insert_with(Vec::new);
        if rules.is_empty() {
            rules.push(IngressRule {
                host: None,
                http: None,
            });
        }
        if let Some(rule) = rules.last_mut() {
            rule.http
                .get_or_insert_with(|| HTTPIngressRuleValue { paths: Vec::new() })
                .paths
                .push(p);
        }
    }

    /// Adds a path to the current rule (a host-less one if none).
    pub fn path(mut self, path: &str, path_type: &str, svc: &str, port: impl IntoPort) -> Self {
        self.push_path(HTTPIngressPath {
            path: Some(path.into()),
            path_type: path_type.into(),
            backend: backend(svc, port),
        });
        self
    }

    /// Adds a path with a `resource` backend.
    pub fn resource_path(mut self, path: &str) -> Self {
        self.push_path(HTTPIngressPath {
            path: Some(path.into()),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: None,
                resource: Some(TypedLocalObjectReference {
                    api_group: Some("example.com".into()),
                    kind: "Bucket".into(),
                    name: "b".into(),
                }),
            },
        });
        self
    }

    /// `spec.defaultBackend`.
    pub fn default_backend(mut self, svc: &str, port: impl IntoPort) -> Self {
        self.spec().default_backend = Some(backend(svc, port));
        self
    }

    /// A `spec.tls` entry.
    pub fn tls(mut self, hosts: &[&str], secret: &str) -> Self {
        self.spec()
            .tls
            .get_or_insert_with(Vec::new)
            .push(IngressTLS {
                hosts: Some(hosts.iter().map(|h| (*h).to_owned()).collect()),
                secret_name: (!secret.is_empty()).then(|| secret.to_owned()),
            });
        self
    }

    /// The Ingress.
    pub fn build(self) -> Ingress {
        self.0
    }
}

/// Something that is a Service targetPort.
pub trait IntoTarget {
    fn into_target(self) -> IntOrString;
}

impl IntoTarget for i32 {
    fn into_target(self) -> IntOrString {
        IntOrString::Int(self)
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> IntOrString {
        IntOrString::String(self.into())
    }
}

/// Service builder.
pub struct ServiceBuilder(Service);

/// Starts a Service `ns/name` without ports.
pub fn mk_service(ns: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec::default()),
        status: None,
    })
}

impl ServiceBuilder {
    /// A TCP port (`name` "" for none).
    pub fn port(self, name: &str, port: i32, target: impl IntoTarget) -> Self {
        self.port_proto(name, port, target, "TCP")
    }

    /// A port with a protocol.
    pub fn port_proto(
        mut self,
        name: &str,
        port: i32,
        target: impl IntoTarget,
        proto: &str,
    ) -> Self {
        let spec = self.0.spec.get_or_insert_with(Default::default);
        spec.ports.get_or_insert_with(Vec::new).push(ServicePort {
            name: (!name.is_empty()).then(|| name.to_owned()),
            port,
            target_port: Some(target.into_target()),
            protocol: Some(proto.into()),
            ..Default::default()
        });
        self
    }

    /// `spec.type: ExternalName` pointing at `name`.
    pub fn external_name(mut self, name: &str) -> Self {
        let spec = self.0.spec.get_or_insert_with(Default::default);
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some(name.into());
        self
    }

    /// `spec.clusterIP` (`"None"` for a headless Service).
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.0.spec.get_or_insert_with(Default::default).cluster_ip = Some(ip.into());
        self
    }

    /// An annotation with its full key.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// The Service.
    pub fn build(self) -> Service {
        self.0
    }
}

/// EndpointSlice builder.
pub struct SliceBuilder(EndpointSlice);

/// Starts an EndpointSlice `ns/name` of Service `svc`.
pub fn mk_slice(ns: &str, name: &str, svc: &str) -> SliceBuilder {
    let mut m = meta(ns, name);
    m.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_owned(),
        svc.to_owned(),
    )]));
    SliceBuilder(EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Vec::new(),
        ports: None,
    })
}

impl SliceBuilder {
    /// A TCP port (`name` "" for none).
    pub fn port(self, name: &str, port: i32) -> Self {
        self.port_proto(name, port, "TCP")
    }

    /// A port with a protocol.
    pub fn port_proto(mut self, name: &str, port: i32, proto: &str) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: (!name.is_empty()).then(|| name.to_owned()),
                port: Some(port),
                protocol: Some(proto.into()),
                app_protocol: None,
            });
        self
    }

    /// A ready endpoint.
    pub fn endpoint(self, addr: &str) -> Self {
        self.endpoint_cond(addr, Some(true), Some(true), Some(false))
    }

    /// An endpoint with explicit conditions.
    pub fn endpoint_cond(
        mut self,
        addr: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        self.0.endpoints.push(Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            ..Default::default()
        });
        self
    }

    /// The EndpointSlice.
    pub fn build(self) -> EndpointSlice {
        self.0
    }
}

/// A `kubernetes.io/tls` Secret.
pub fn mk_tls_secret(ns: &str, name: &str, cert: &str, key: &str) -> Secret {
    let mut s = mk_secret(ns, name, &[("tls.crt", cert), ("tls.key", key)]);
    s.type_ = Some("kubernetes.io/tls".into());
    s
}

/// An Opaque Secret with `data`.
pub fn mk_secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(ns, name),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// A ConfigMap with `data`.
pub fn mk_configmap(ns: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(ns, name),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A self-signed certificate and its key, PEM.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}
