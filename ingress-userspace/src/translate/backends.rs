//! Backends: a Service port resolved to endpoints.
//!
//! The Ingress names a Service port by number or name; the Service port's *name* then selects
//! the port of each EndpointSlice of that Service (label `kubernetes.io/service-name`), whose
//! number is the resolved `targetPort` (so named targetPorts work). As in ingress-nginx
//! (`getEndpointsFromSlices`), an unnamed Service port takes every slice port of its
//! protocol, and a numeric `targetPort` stands in for a slice port of another name and for a
//! slice without ports. Endpoints whose
//! `conditions.ready` is not `false` are used; when none is ready, those both serving and
//! terminating are (as kube-proxy does). Upstreams are cached per Service and reused, as the
//! same `Arc`, while the Service and its EndpointSlices are the same objects.
use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::reason;
use crate::{
    snapshot::{BackendProtocol, L4Protocol, ObjectRef, Upstream},
    source::external_names::{external_name, resolve_error},
    store::ObjectCache,
};

/// Service annotation listing static endpoints, `"127.0.0.1:8080,[::1]:8081"`: standalone
/// mode has no EndpointSlice controller. The listed addresses are ready endpoints of every
/// port of the Service (each with its own port), in addition to any EndpointSlice. Honoured
/// only when `Settings::static_endpoints` is set (the manifest source).
pub const STATIC_ENDPOINTS_ANNOTATION: &str = "ingress.example.dev/endpoints";

/// A Service port as an Ingress backend or a ConfigMap entry names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
    /// The Service's first port (the `default-backend` annotation names no port).
    First,
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
            PortRef::First => f.write_str("first-port"),
        }
    }
}

/// A Service backend in the Ingress's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendRef {
    pub service: String,
    pub port: PortRef,
}

/// Why a backend has no endpoints to offer (it still routes, and answers 503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Upstreams kept across translations.
#[derive(Debug, Default)]
pub struct BackendCache {
    /// namespace -> service -> entry.
    services: HashMap<String, HashMap<String, ServiceEntry>>,
    /// Services whose static-endpoints annotation has bad entries.
    problems: BTreeMap<(String, String), String>,
}

#[derive(Debug)]
struct ServiceEntry {
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    checked_run: u64,
    /// (Service port number, protocol, through the cluster IP) -> upstream.
    upstreams: HashMap<(i32, BackendProtocol, bool), Arc<Upstream>>,
    /// (port as the Ingress names it, protocol) -> empty upstream, for unknown ports.
    unresolved: HashMap<(String, BackendProtocol), Arc<Upstream>>,
    static_endpoints: Vec<SocketAddr>,
    static_problem: Option<String>,
}

impl ServiceEntry {
    fn empty() -> Self {
        ServiceEntry {
            service: None,
            slices: Vec::new(),
            checked_run: 0,
            upstreams: HashMap::new(),
            unresolved: HashMap::new(),
            static_endpoints: Vec::new(),
            static_problem: None,
        }
    }
}

/// Resolves backends during one translation.
pub struct Resolver<'a> {
    cache: &'a mut BackendCache,
    objects: &'a ObjectCache,
    static_endpoints: bool,
    run: u64,
}

impl<'a> Resolver<'a> {
    /// A resolver for translation number `run`.
    pub fn new(
        cache: &'a mut BackendCache,
        objects: &'a ObjectCache,
        static_endpoints: bool,
        run: u64,
    ) -> Self {
        Resolver {
            cache,
            objects,
            static_endpoints,
            run,
        }
    }

    /// The upstream for `backend` in `namespace`; with a problem, it has no endpoints. With
    /// `via_cluster_ip` (`service-upstream`) its one endpoint is the Service's cluster IP, so
    /// kube-proxy or a mesh sidecar picks the pod; a headless Service has none, and its pods
    /// are used as without it.
    pub fn upstream(
        &mut self,
        namespace: &str,
        backend: &BackendRef,
        protocol: BackendProtocol,
        via_cluster_ip: bool,
    ) -> (Arc<Upstream>, Option<Problem>) {
        let qualified = || format!("{namespace}/{}", backend.service);
        let entry = self.entry(namespace, &backend.service);
        // The common case (Service and port exist) must not allocate: this runs per path.
        let resolved = entry.service.as_ref().and_then(|svc| {
            find_port(svc, &backend.port, None)
                .map(Cow::Borrowed)
                .or_else(|| external_name_port(svc, &backend.port).map(Cow::Owned))
                .map(|sp| (svc, sp))
        });
        let Some((svc, sp)) = resolved else {
            let message = match &entry.service {
                None => format!("service {} not found", qualified()),
                Some(_) => format!("service {} has no port {}", qualified(), backend.port),
            };
            let problem = Problem {
                reason: reason::BACKEND_NOT_FOUND,
                message,
            };
            let key = (backend.port.to_string(), protocol);
            // A Service without the port is there, but has no endpoint for it (as
            // ingress-nginx tells its orphans apart).
            let missing = entry.service.is_none();
            let up = entry
                .unresolved
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(Upstream {
                        name: format!("{}:{}", qualified(), backend.port),
                        endpoints: Vec::new(),
                        missing,
                        protocol,
                        tls: None,
                    })
                })
                .clone();
            return (up, Some(problem));
        };
        let problem = external_name_problem(svc, namespace, &backend.service, &entry.slices);
        let key = (sp.port, protocol, via_cluster_ip);
        if let Some(up) = entry.upstreams.get(&key) {
            return (up.clone(), problem);
        }
        let cluster = via_cluster_ip
            .then(|| cluster_ip_endpoint(svc, &sp))
            .flatten();
        let (endpoints, name) = match (problem.is_some(), cluster) {
            (true, _) => (Vec::new(), format!("{}:{}", qualified(), sp.port)),
            // A name of its own: the proxy keys endpoint state by upstream name.
            (false, Some(addr)) => (
                vec![addr],
                format!("{}:{}@cluster-ip", qualified(), sp.port),
            ),
            (false, None) => (
                endpoints_of(&sp, &entry.slices, &entry.static_endpoints),
                format!("{}:{}", qualified(), sp.port),
            ),
        };
        let up = Arc::new(Upstream {
            name,
            endpoints,
            missing: false,
            protocol,
            tls: None,
        });
        entry.upstreams.insert(key, up.clone());
        (up, problem)
    }

    /// Endpoints of a Service port for an L4 service: the port must also have `protocol`.
    pub fn l4_endpoints(
        &mut self,
        namespace: &str,
        service: &str,
        port: &PortRef,
        protocol: L4Protocol,
    ) -> Result<Vec<SocketAddr>, Problem> {
        let qualified = format!("{namespace}/{service}");
        let entry = self.entry(namespace, service);
        let Some(svc) = &entry.service else {
            return Err(Problem {
                reason: reason::BACKEND_NOT_FOUND,
                message: format!("service {qualified} not found"),
            });
        };
        let proto = match protocol {
            L4Protocol::Tcp => "TCP",
            L4Protocol::Udp => "UDP",
        };
        let found = find_port(svc, port, Some(proto))
            .map(Cow::Borrowed)
            .or_else(|| external_name_port(svc, port).map(Cow::Owned));
        let Some(sp) = found else {
            return Err(Problem {
                reason: reason::BACKEND_NOT_FOUND,
                message: format!("service {qualified} has no {proto} port {port}"),
            });
        };
        if let Some(p) = external_name_problem(svc, namespace, service, &entry.slices) {
            return Err(p);
        }
        Ok(endpoints_of(&sp, &entry.slices, &entry.static_endpoints))
    }

    /// Problems with Services themselves (a bad static-endpoints annotation), for the
    /// Services `referenced` says are in use.
    pub fn service_problems(
        &self,
        referenced: impl Fn(&str, &str) -> bool,
    ) -> Vec<(ObjectRef, String)> {
        self.cache
            .problems
            .iter()
            .filter(|((ns, name), _)| referenced(ns, name))
            .map(|((ns, name), p)| {
                (
                    ObjectRef {
                        kind: "Service",
                        namespace: ns.clone(),
                        name: name.clone(),
                    },
                    p.clone(),
                )
            })
            .collect()
    }

    /// Brings the entry of a Service up to date with the cache now (after it changed).
    pub fn refresh(&mut self, namespace: &str, service: &str) {
        self.entry(namespace, service);
    }

    /// Forgets Services not looked at in this run (call only after a run that looked at
    /// every Service in use).
    pub fn finish(self) {
        let run = self.run;
        self.cache.services.retain(|_, m| {
            m.retain(|_, e| e.checked_run == run);
            !m.is_empty()
        });
        let services = &self.cache.services;
        self.cache
            .problems
            .retain(|(ns, name), _| services.get(ns).is_some_and(|m| m.contains_key(name)));
    }

    /// The cache entry of a Service, refreshed if its objects changed since it was built.
    fn entry(&mut self, namespace: &str, service: &str) -> &mut ServiceEntry {
        let objects = self.objects;
        let (run, static_ok) = (self.run, self.static_endpoints);
        let BackendCache { services, problems } = &mut *self.cache;
        // Look up before inserting: the common path must not allocate keys.
        if !services
            .get(namespace)
            .is_some_and(|m| m.contains_key(service))
        {
            services
                .entry(namespace.to_owned())
                .or_default()
                .insert(service.to_owned(), ServiceEntry::empty());
        }
        let entry = services
            .get_mut(namespace)
            .and_then(|m| m.get_mut(service))
            .expect("entry inserted above");
        if entry.checked_run == run {
            return entry;
        }
        let fresh = entry.checked_run == 0;
        entry.checked_run = run;
        let current_svc = objects.service(namespace, service);
        let same_svc = match (current_svc, &entry.service) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let slices = objects.slices_of(namespace, service);
        let same_slices = slices.map_or(0, |s| s.len()) == entry.slices.len()
            && slices
                .into_iter()
                .flat_map(|s| s.values())
                .zip(&entry.slices)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same_svc && same_slices && !fresh {
            return entry;
        }
        entry.service = current_svc.cloned();
        entry.slices = slices
            .into_iter()
            .flat_map(|s| s.values().cloned())
            .collect();
        entry.upstreams.clear();
        entry.unresolved.clear();
        (entry.static_endpoints, entry.static_problem) = match (static_ok, &entry.service) {
            (true, Some(svc)) => static_endpoints(svc),
            _ => (Vec::new(), None),
        };
        let key = (namespace.to_owned(), service.to_owned());
        match &entry.static_problem {
            Some(p) => {
                problems.insert(key, p.clone());
            }
            None => {
                problems.remove(&key);
            }
        }
        entry
    }
}

/// Why an ExternalName Service has no endpoints: its name is refused, or did not resolve
/// (`source::external_names` records that on the slice it keeps for the Service).
fn external_name_problem(
    svc: &Service,
    namespace: &str,
    name: &str,
    slices: &[Arc<EndpointSlice>],
) -> Option<Problem> {
    match external_name(svc)? {
        Err(why) => Some(Problem {
            reason: reason::INVALID_BACKEND,
            message: format!("service {namespace}/{name} {why}"),
        }),
        Ok(_) => slices
            .iter()
            .find_map(|s| resolve_error(s))
            .map(|why| Problem {
                reason: reason::EXTERNAL_NAME_UNRESOLVED,
                message: format!("service {namespace}/{name} is of type ExternalName: {why}"),
            }),
    }
}

/// The port of an ExternalName Service without `ports`: the number the Ingress names, as
/// ingress-nginx takes it.
fn external_name_port(svc: &Service, port: &PortRef) -> Option<ServicePort> {
    let PortRef::Number(n) = port else {
        return None;
    };
    let no_ports = svc
        .spec
        .as_ref()?
        .ports
        .as_ref()
        .is_none_or(|p| p.is_empty());
    (no_ports && external_name(svc).is_some()).then(|| ServicePort {
        port: *n,
        ..Default::default()
    })
}

/// The cluster IP and port of a Service port; `None` for a headless Service.
fn cluster_ip_endpoint(svc: &Service, sp: &ServicePort) -> Option<SocketAddr> {
    let ip = svc
        .spec
        .as_ref()?
        .cluster_ip
        .as_deref()?
        .parse::<IpAddr>()
        .ok()?;
    let port = u16::try_from(sp.port).ok().filter(|p| *p != 0)?;
    Some(SocketAddr::new(ip, port))
}

/// The Service port named by `port`, with `protocol` if given (default protocol is TCP). When
/// no port has that number or name, one whose `targetPort` does stands in, as ingress-nginx
/// matches either (an Ingress naming the pod's port instead of the Service's works there).
fn find_port<'s>(
    svc: &'s Service,
    port: &PortRef,
    protocol: Option<&str>,
) -> Option<&'s ServicePort> {
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    if *port == PortRef::First {
        return ports.first();
    }
    let proto_ok =
        |sp: &ServicePort| protocol.is_none_or(|p| sp.protocol.as_deref().unwrap_or("TCP") == p);
    let own = |sp: &ServicePort| match port {
        PortRef::Number(n) => sp.port == *n,
        PortRef::Name(name) => sp.name.as_deref() == Some(name.as_str()),
        PortRef::First => false,
    };
    let target = |sp: &ServicePort| match (port, &sp.target_port) {
        (PortRef::Number(n), Some(IntOrString::Int(t))) => t == n,
        (PortRef::Name(name), Some(IntOrString::String(t))) => t == name,
        _ => false,
    };
    ports
        .iter()
        .find(|sp| proto_ok(sp) && own(sp))
        .or_else(|| ports.iter().find(|sp| proto_ok(sp) && target(sp)))
}

/// Parses the static-endpoints annotation; bad entries are skipped and reported.
fn static_endpoints(svc: &Service) -> (Vec<SocketAddr>, Option<String>) {
    let Some(value) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATIC_ENDPOINTS_ANNOTATION))
    else {
        return (Vec::new(), None);
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => good.push(a),
            _ => bad.push(item),
        }
    }
    let problem = (!bad.is_empty()).then(|| {
        format!("annotation {STATIC_ENDPOINTS_ANNOTATION}: ignored entries {bad:?} (expected ip:port or [ipv6]:port)")
    });
    (good, problem)
}

/// Endpoints of one Service port: static ones plus those of the EndpointSlices, sorted.
pub fn endpoints_of(
    port: &ServicePort,
    slices: &[Arc<EndpointSlice>],
    static_eps: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut ready = static_eps.to_vec();
    let mut fallback = Vec::new();
    for slice in slices {
        let numbers = slice_ports(port, slice);
        if numbers.is_empty() {
            continue;
        }
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            let is_ready = cond.and_then(|c| c.ready) != Some(false);
            let serving_terminating =
                cond.is_some_and(|c| c.serving == Some(true) && c.terminating == Some(true));
            let list = if is_ready {
                &mut ready
            } else if serving_terminating {
                &mut fallback
            } else {
                continue;
            };
            for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                list.extend(numbers.iter().map(|n| SocketAddr::new(ip, *n)));
            }
        }
    }
    let mut out = if ready.is_empty() { fallback } else { ready };
    out.sort_unstable();
    out.dedup();
    out
}

/// The port numbers of one EndpointSlice that serve the Service port, picked as ingress-nginx's
/// `getEndpointsFromSlices` does.
fn slice_ports(port: &ServicePort, slice: &EndpointSlice) -> Vec<u16> {
    let valid = |n: i32| u16::try_from(n).ok().filter(|n| *n != 0);
    // An unset targetPort means the port itself (the API server defaults it so; manifests
    // are not defaulted).
    let numeric_target = match &port.target_port {
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(_)) => None,
        None => Some(port.port),
    };
    let listed = slice.ports.as_deref().unwrap_or_default();
    if listed.is_empty() {
        // A slice without ports: only a numeric targetPort says where its endpoints listen.
        return numeric_target.and_then(valid).into_iter().collect();
    }
    let want_name = port.name.as_deref().unwrap_or("");
    let want_proto = port.protocol.as_deref().unwrap_or("TCP");
    let mut out: Vec<u16> = listed
        .iter()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == want_proto)
        .filter_map(|p| {
            // A Service port may go without name only when it is the Service's single port,
            // so any slice port of its protocol is for it.
            let same = want_name.is_empty() || p.name.as_deref().unwrap_or("") == want_name;
            let number = p.port.filter(|_| same).and_then(valid);
            // Otherwise a numeric targetPort still names the endpoints' port.
            number.or_else(|| numeric_target.and_then(valid))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{source::Object, translate::testutil::*};

    fn resolve(
        objects: Vec<Object>,
        backend: BackendRef,
        static_ok: bool,
    ) -> (Arc<Upstream>, Option<Problem>) {
        let cache = ObjectCache::from_objects(objects);
        let mut bc = BackendCache::default();
        let mut r = Resolver::new(&mut bc, &cache, static_ok, 1);
        r.upstream("ns", &backend, BackendProtocol::Http, false)
    }

    fn be(service: &str, port: PortRef) -> BackendRef {
        BackendRef {
            service: service.into(),
            port,
        }
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().expect("addr")).collect()
    }

    #[test]
    fn endpoint_conditions_table() {
        // (ready, serving, terminating) per endpoint -> which are used
        type Cond = (Option<bool>, Option<bool>, Option<bool>);
        let table: &[(&[Cond], &[&str])] = &[
            (
                &[(Some(true), None, None), (Some(false), None, None)],
                &["10.0.0.1:8080"],
            ),
            (&[(None, None, None)], &["10.0.0.1:8080"]),
            (
                &[
                    (Some(false), Some(true), Some(true)),
                    (Some(false), Some(false), Some(true)),
                ],
                &["10.0.0.1:8080"],
            ),
            (
                &[
                    (Some(true), None, None),
                    (Some(false), Some(true), Some(true)),
                ],
                &["10.0.0.1:8080"],
            ),
            (&[(Some(false), Some(true), Some(false))], &[]),
            (
                &[
                    (Some(false), Some(true), Some(true)),
                    (Some(false), Some(true), Some(true)),
                ],
                &["10.0.0.1:8080", "10.0.0.2:8080"],
            ),
        ];
        for (conds, want) in table {
            let mut slice = mk_slice("ns", "web-1", "web").port("http", 8080);
            for (i, c) in conds.iter().enumerate() {
                slice = slice.endpoint_cond(&format!("10.0.0.{}", i + 1), c.0, c.1, c.2);
            }
            let objs = vec![
                Object::Service(mk_service("ns", "web").port("http", 80, 8080).build()),
                Object::EndpointSlice(slice.build()),
            ];
            let (up, problem) = resolve(objs, be("web", PortRef::Number(80)), false);
            assert_eq!(problem, None);
            assert_eq!(up.endpoints, addrs(want), "{conds:?}");
        }
    }

    #[test]
    fn named_ports_and_named_target_ports() {
        // Service port 80 "http" -> targetPort "web" (named); the slices carry the number.
        let objs = || {
            vec![
                Object::Service(
                    mk_service("ns", "web")
                        .port("http", 80, "web")
                        .port("metrics", 9090, 9090)
                        .build(),
                ),
                Object::EndpointSlice(
                    mk_slice("ns", "web-a", "web")
                        .port("http", 8080)
                        .port("metrics", 9090)
                        .endpoint("10.0.0.1")
                        .build(),
                ),
                Object::EndpointSlice(
                    mk_slice("ns", "web-b", "web")
                        .port("http", 8081)
                        .port("metrics", 9090)
                        .endpoint("fd00::2")
                        .build(),
                ),
            ]
        };
        let (up, _) = resolve(objs(), be("web", PortRef::Name("http".into())), false);
        assert_eq!(up.endpoints, addrs(&["10.0.0.1:8080", "[fd00::2]:8081"]));
        assert_eq!(up.name, "ns/web:80");
        let (by_number, _) = resolve(objs(), be("web", PortRef::Number(80)), false);
        assert_eq!(by_number.endpoints, up.endpoints);
        assert_eq!(by_number.name, "ns/web:80");
        let (metrics, _) = resolve(objs(), be("web", PortRef::Number(9090)), false);
        assert_eq!(
            metrics.endpoints,
            addrs(&["10.0.0.1:9090", "[fd00::2]:9090"])
        );
    }

    /// As in ingress-nginx, a port that no Service port has by number or name is looked for
    /// among the targetPorts; a Service port's own number or name still wins.
    #[test]
    fn a_backend_port_may_name_a_target_port() {
        let objs = || {
            vec![
                Object::Service(
                    mk_service("ns", "web")
                        .port("http", 80, 8080)
                        .port("admin", 8080, "admin-port")
                        .port("grpc", 9000, "grpc-port")
                        .build(),
                ),
                Object::EndpointSlice(
                    mk_slice("ns", "web-a", "web")
                        .port("http", 8080)
                        .port("admin", 7000)
                        .port("grpc", 9090)
                        .endpoint("10.0.0.1")
                        .build(),
                ),
            ]
        };
        // 8080 is port "admin"'s own number before it is "http"'s targetPort.
        let (up, problem) = resolve(objs(), be("web", PortRef::Number(8080)), false);
        assert_eq!(problem, None);
        assert_eq!(up.endpoints, addrs(&["10.0.0.1:7000"]));
        let (up, problem) = resolve(objs(), be("web", PortRef::Name("grpc-port".into())), false);
        assert_eq!(problem, None);
        assert_eq!(up.name, "ns/web:9000");
        assert_eq!(up.endpoints, addrs(&["10.0.0.1:9090"]));
        let (only_target, _) = {
            let mut o = objs();
            if let Object::Service(svc) = &mut o[0] {
                if let Some(ports) = svc.spec.as_mut().and_then(|s| s.ports.as_mut()) {
                    ports.retain(|p| p.name.as_deref() == Some("http"));
                }
            }
            resolve(o, be("web", PortRef::Number(8080)), false)
        };
        assert_eq!(only_target.name, "ns/web:80");
        assert_eq!(only_target.endpoints, addrs(&["10.0.0.1:8080"]));
        let (none, problem) = resolve(objs(), be("web", PortRef::Number(1234)), false);
        assert!(none.endpoints.is_empty());
        assert!(problem.is_some());
    }

    #[test]
    fn unnamed_single_port_matches_unnamed_slice_port() {
        let objs = vec![
            Object::Service(mk_service("ns", "web").port("", 80, 8080).build()),
            Object::EndpointSlice(
                mk_slice("ns", "web-a", "web")
                    .port("", 8080)
                    .endpoint("10.0.0.1")
                    .build(),
            ),
            Object::EndpointSlice(
                mk_slice("ns", "other", "not-web")
                    .port("", 8080)
                    .endpoint("10.0.0.9")
                    .build(),
            ),
        ];
        let (up, problem) = resolve(objs, be("web", PortRef::Number(80)), false);
        assert_eq!(problem, None);
        assert_eq!(up.endpoints, addrs(&["10.0.0.1:8080"]));
    }

    #[test]
    fn numeric_target_port_fallbacks() {
        // (service port name, targetPort, slice ports (name, number) or None for no ports)
        // -> endpoints
        type Case = (
            &'static str,
            IntOrString,
            Option<&'static [(&'static str, i32)]>,
            &'static [&'static str],
        );
        let int = IntOrString::Int;
        let named = |s: &str| IntOrString::String(s.into());
        let table: Vec<Case> = vec![
            // No ports on the slice: a numeric targetPort is used, a named one cannot be.
            ("http", int(8080), None, &["10.0.0.1:8080"]),
            ("", int(8080), Some(&[]), &["10.0.0.1:8080"]),
            ("http", named("web"), None, &[]),
            // Unnamed Service port: any slice port of the protocol.
            ("", named("web"), Some(&[("web", 8081)]), &["10.0.0.1:8081"]),
            (
                "",
                named("web"),
                Some(&[("a", 8081), ("b", 8082)]),
                &["10.0.0.1:8081", "10.0.0.1:8082"],
            ),
            // Names differ: a numeric targetPort stands in, a named one does not.
            (
                "http",
                int(8080),
                Some(&[("other", 9000)]),
                &["10.0.0.1:8080"],
            ),
            ("http", named("web"), Some(&[("other", 9000)]), &[]),
            // Same name: the slice's number, as before.
            (
                "http",
                int(8080),
                Some(&[("http", 8090)]),
                &["10.0.0.1:8090"],
            ),
        ];
        for (name, target, ports, want) in table {
            let mut slice = mk_slice("ns", "web-a", "web").endpoint("10.0.0.1");
            for (n, p) in ports.into_iter().flatten() {
                // A UDP port never matches the TCP Service port, whatever its name.
                slice = slice.port(n, *p).port_proto(n, 5353, "UDP");
            }
            let mut slice = slice.build();
            slice.ports = slice.ports.or_else(|| ports.map(|_| Vec::new()));
            let svc_port = ServicePort {
                name: (!name.is_empty()).then(|| name.to_owned()),
                port: 80,
                target_port: Some(target.clone()),
                protocol: Some("TCP".into()),
                ..Default::default()
            };
            let got = endpoints_of(&svc_port, &[Arc::new(slice)], &[]);
            assert_eq!(got, addrs(want), "{name:?} {target:?} {ports:?}");
        }
    }

    #[test]
    fn unknown_service_or_port_routes_with_no_endpoints() {
        let (up, problem) = resolve(vec![], be("ghost", PortRef::Number(80)), false);
        assert!(up.endpoints.is_empty() && up.missing);
        assert_eq!(up.name, "ns/ghost:80");
        assert_eq!(problem.map(|p| p.reason), Some(reason::BACKEND_NOT_FOUND));
        let objs = vec![Object::Service(
            mk_service("ns", "web").port("http", 80, 8080).build(),
        )];
        let (up, problem) = resolve(objs, be("web", PortRef::Name("grpc".into())), false);
        assert!(up.endpoints.is_empty() && !up.missing);
        assert!(problem.expect("problem").message.contains("no port grpc"));
    }

    #[test]
    fn static_endpoints_annotation() {
        let svc = || {
            mk_service("ns", "web")
                .port("http", 80, 8080)
                .annotation(
                    STATIC_ENDPOINTS_ANNOTATION,
                    "127.0.0.1:18081, [::1]:18082,bogus",
                )
                .build()
        };
        let (up, _) = resolve(
            vec![Object::Service(svc())],
            be("web", PortRef::Number(80)),
            true,
        );
        assert_eq!(up.endpoints, addrs(&["127.0.0.1:18081", "[::1]:18082"]));
        // Not honoured unless enabled (Kubernetes mode).
        let (up, _) = resolve(
            vec![Object::Service(svc())],
            be("web", PortRef::Number(80)),
            false,
        );
        assert!(up.endpoints.is_empty());
        let cache = ObjectCache::from_objects([Object::Service(svc())]);
        let mut bc = BackendCache::default();
        let mut r = Resolver::new(&mut bc, &cache, true, 1);
        r.upstream(
            "ns",
            &be("web", PortRef::Number(80)),
            BackendProtocol::Http,
            false,
        );
        let problems = r.service_problems(|_, _| true);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("bogus"), "{}", problems[0].1);
    }

    #[test]
    fn upstreams_are_shared_and_reused_until_their_objects_change() {
        let mut cache = ObjectCache::from_objects([
            Object::Service(mk_service("ns", "web").port("http", 80, 8080).build()),
            Object::EndpointSlice(
                mk_slice("ns", "web-a", "web")
                    .port("http", 8080)
                    .endpoint("10.0.0.1")
                    .build(),
            ),
        ]);
        let mut bc = BackendCache::default();
        let mut r = Resolver::new(&mut bc, &cache, false, 1);
        let (a, _) = r.upstream(
            "ns",
            &be("web", PortRef::Number(80)),
            BackendProtocol::Http,
            false,
        );
        let (b, _) = r.upstream(
            "ns",
            &be("web", PortRef::Name("http".into())),
            BackendProtocol::Http,
            false,
        );
        let (g, _) = r.upstream(
            "ns",
            &be("web", PortRef::Number(80)),
            BackendProtocol::Grpc,
            false,
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &g));
        assert_eq!(g.protocol, BackendProtocol::Grpc);
        r.finish();
        let mut r = Resolver::new(&mut bc, &cache, false, 2);
        let (a2, _) = r.upstream(
            "ns",
            &be("web", PortRef::Number(80)),
            BackendProtocol::Http,
            false,
        );
        assert!(Arc::ptr_eq(&a, &a2), "unchanged objects reuse the upstream");
        r.finish();
        cache.apply(Object::EndpointSlice(
            mk_slice("ns", "web-a", "web")
                .port("http", 8080)
                .endpoint("10.0.0.2")
                .build(),
        ));
        let mut r = Resolver::new(&mut bc, &cache, false, 3);
        let (a3, _) = r.upstream(
            "ns",
            &be("web", PortRef::Number(80)),
            BackendProtocol::Http,
            false,
        );
        assert_eq!(a3.endpoints, addrs(&["10.0.0.2:8080"]));
    }

    #[test]
    fn l4_endpoints_match_protocol() {
        let cache = ObjectCache::from_objects([
            Object::Service(
                mk_service("kube-system", "dns")
                    .port_proto("dns-tcp", 53, 53, "TCP")
                    .port_proto("dns", 53, 53, "UDP")
                    .build(),
            ),
            Object::EndpointSlice(
                mk_slice("kube-system", "dns-a", "dns")
                    .port_proto("dns-tcp", 5353, "TCP")
                    .port_proto("dns", 5354, "UDP")
                    .endpoint("10.0.0.10")
                    .build(),
            ),
        ]);
        let mut bc = BackendCache::default();
        let mut r = Resolver::new(&mut bc, &cache, false, 1);
        let tcp = r.l4_endpoints("kube-system", "dns", &PortRef::Number(53), L4Protocol::Tcp);
        let udp = r.l4_endpoints("kube-system", "dns", &PortRef::Number(53), L4Protocol::Udp);
        assert_eq!(tcp, Ok(addrs(&["10.0.0.10:5353"])));
        assert_eq!(udp, Ok(addrs(&["10.0.0.10:5354"])));
        assert!(r
            .l4_endpoints("kube-system", "dns", &PortRef::Number(54), L4Protocol::Tcp)
            .is_err());
        assert!(r
            .l4_endpoints("kube-system", "nope", &PortRef::Number(53), L4Protocol::Tcp)
            .is_err());
    }

    #[test]
    fn external_name_services_use_their_resolved_slice() {
        use crate::source::external_names::RESOLVE_ERROR_ANNOTATION;
        // Without ports, the Ingress's port number is the port, as in ingress-nginx.
        let resolved = mk_slice("ns", "ext:external-name", "ext")
            .endpoint("198.18.0.7")
            .build();
        let (up, problem) = resolve(
            vec![
                Object::Service(mk_service("ns", "ext").external_name("api.example").build()),
                Object::EndpointSlice(resolved.clone()),
            ],
            be("ext", PortRef::Number(8443)),
            false,
        );
        assert_eq!(problem, None);
        assert_eq!(up.endpoints, addrs(&["198.18.0.7:8443"]));
        // With ports, the target port.
        let (up, _) = resolve(
            vec![
                Object::Service(
                    mk_service("ns", "ext")
                        .external_name("api.example")
                        .port("https", 443, 8443)
                        .build(),
                ),
                Object::EndpointSlice(resolved.clone()),
            ],
            be("ext", PortRef::Name("https".into())),
            false,
        );
        assert_eq!(up.endpoints, addrs(&["198.18.0.7:8443"]));
        // Not resolved: no endpoints, and why.
        let mut failed = mk_slice("ns", "ext:external-name", "ext").build();
        failed.metadata.annotations = Some(BTreeMap::from([(
            RESOLVE_ERROR_ANNOTATION.to_owned(),
            "looking up api.example failed: NXDOMAIN".to_owned(),
        )]));
        let (up, problem) = resolve(
            vec![
                Object::Service(mk_service("ns", "ext").external_name("api.example").build()),
                Object::EndpointSlice(failed),
            ],
            be("ext", PortRef::Number(80)),
            false,
        );
        assert!(up.endpoints.is_empty());
        let problem = problem.expect("a problem");
        assert_eq!(problem.reason, reason::EXTERNAL_NAME_UNRESOLVED);
        assert!(problem.message.contains("NXDOMAIN"), "{}", problem.message);
        // Refused names never get endpoints, even from a slice.
        for refused in ["localhost", "127.0.0.1", "bad_name"] {
            let (up, problem) = resolve(
                vec![
                    Object::Service(mk_service("ns", "ext").external_name(refused).build()),
                    Object::EndpointSlice(resolved.clone()),
                ],
                be("ext", PortRef::Number(80)),
                false,
            );
            assert!(up.endpoints.is_empty(), "{refused}");
            assert_eq!(problem.map(|p| p.reason), Some(reason::INVALID_BACKEND));
        }
        // L4 services take them as well, with or without ports, and refuse what L7 refuses.
        let l4 = |svc: Service, port: i32| {
            let cache = ObjectCache::from_objects(vec![
                Object::Service(svc),
                Object::EndpointSlice(resolved.clone()),
            ]);
            let mut bc = BackendCache::default();
            let mut r = Resolver::new(&mut bc, &cache, false, 1);
            r.l4_endpoints("ns", "ext", &PortRef::Number(port), L4Protocol::Tcp)
        };
        let ported = mk_service("ns", "ext")
            .external_name("api.example")
            .port("", 53, 5353)
            .build();
        assert_eq!(l4(ported, 53), Ok(addrs(&["198.18.0.7:5353"])));
        let bare = mk_service("ns", "ext").external_name("api.example").build();
        assert_eq!(l4(bare, 53), Ok(addrs(&["198.18.0.7:53"])));
        let local = mk_service("ns", "ext").external_name("localhost").build();
        assert_eq!(
            l4(local, 53).map_err(|p| p.reason),
            Err(reason::INVALID_BACKEND)
        );
    }
}
