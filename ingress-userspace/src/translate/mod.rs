//! Translation: store contents -> one [`Snapshot`] plus [`Diagnostic`]s. Pure and total: no
//! I/O, and one bad object never sinks the rest.
//!
//! [`translate`] is the function; [`Translator`] is the same function with memory: it keeps
//! per-object intermediate results (parsed Ingresses, upstreams per Service, parsed
//! certificates and htpasswd files) and reuses them while the objects they came from are the
//! same `Arc`s in the [`ObjectCache`], so a single endpoint change re-translates in
//! milliseconds. Its output is always equal to what [`translate`] would produce.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};

use crate::{
    config::{ServicePortRef, Settings},
    snapshot::{
        BackendProtocol, BasicAuth, HostMatch, HttpConfig, ObjectRef, RoutePolicy, RouteTarget,
        Snapshot, VirtualHost,
    },
    store::ObjectCache,
};

pub mod annotations;
pub mod backends;
pub mod class;
pub mod hosts;
pub mod http;
pub mod ingress;
pub mod l4;
pub mod passthrough;
pub mod paths;
pub mod tls;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use backends::STATIC_ENDPOINTS_ANNOTATION;

/// Diagnostic reasons, CamelCase as in Kubernetes Events.
pub mod reason {
    /// A rule's host is not a valid DNS name or wildcard; the rule is dropped.
    pub const INVALID_HOST: &str = "InvalidHost";
    /// A path is not absolute, has an unknown `pathType` or is a bad regex; it is dropped.
    pub const INVALID_PATH: &str = "InvalidPath";
    /// A backend names no service or no valid port; the path is dropped.
    pub const INVALID_BACKEND: &str = "InvalidBackend";
    /// `resource` backends and ExternalName Services.
    pub const UNSUPPORTED_BACKEND: &str = "UnsupportedBackend";
    /// The Service or its port does not exist: the route answers 503.
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// The same rule (or TLS host, canary, passthrough host) from an older Ingress wins.
    pub const RULE_CONFLICT: &str = "RuleConflict";
    /// A `spec.tls` Secret is missing or unusable; that certificate is dropped.
    pub const TLS_SECRET_INVALID: &str = "TlsSecretInvalid";
    /// An annotation value is invalid; the whole Ingress is not applied.
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// A `*-snippet` annotation was ignored.
    pub const SNIPPET_REJECTED: &str = "SnippetRejected";
    /// The `auth-secret` is missing or unusable; the whole Ingress is not applied.
    pub const AUTH_SECRET_INVALID: &str = "AuthSecretInvalid";
    /// A canary rule has no main route to attach to.
    pub const CANARY_WITHOUT_MAIN_ROUTE: &str = "CanaryWithoutMainRoute";
    /// A passthrough rule without host or backend.
    pub const INVALID_PASSTHROUGH: &str = "InvalidPassthrough";
    /// A bad tcp/udp-services ConfigMap entry.
    pub const INVALID_L4_SERVICE: &str = "InvalidL4Service";
    /// Bad entries in a Service's static-endpoints annotation.
    pub const INVALID_ENDPOINTS: &str = "InvalidEndpoints";
}

/// Something wrong with one object that was dropped from (or partly applied to) the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// The object to attach the Kubernetes Event to (usually the Ingress).
    pub object: ObjectRef,
    /// CamelCase reason, as in Kubernetes Events (`BackendNotFound`, `InvalidAnnotation`, ...).
    pub reason: &'static str,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about `object`.
    pub fn new(object: ObjectRef, reason: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            object,
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.reason, self.message)
    }
}

/// The result of one translation.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    pub snapshot: std::sync::Arc<Snapshot>,
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses this controller owns (class filter passed), sorted; status is written on these.
    pub owned_ingresses: Vec<ObjectRef>,
}

impl Translation {
    /// Same configuration, diagnostics and owned Ingresses (the generation is ignored).
    pub fn same_content(&self, other: &Translation) -> bool {
        self.snapshot.same_config(&other.snapshot)
            && self.diagnostics == other.diagnostics
            && self.owned_ingresses == other.owned_ingresses
    }
}

/// Diagnostics in the order found, without duplicates.
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    seen: HashSet<Diagnostic>,
}

impl Diagnostics {
    /// Records a diagnostic about `object`.
    pub fn push(&mut self, object: ObjectRef, reason: &'static str, message: String) {
        self.add(Diagnostic {
            object,
            reason,
            message,
        });
    }

    /// Records a diagnostic unless the same one is already recorded.
    pub fn add(&mut self, d: Diagnostic) {
        if self.seen.insert(d.clone()) {
            self.list.push(d);
        }
    }

    /// The diagnostics, in the order found.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }
}

/// Translates the objects with the settings, from scratch.
pub fn translate(objects: &ObjectCache, settings: &Settings) -> Translation {
    Translator::new(settings.clone()).translate(objects)
}

/// Translation with per-object memory across calls (see the module documentation).
#[derive(Debug)]
pub struct Translator {
    settings: Settings,
    run: u64,
    /// namespace -> name -> parsed Ingress (nested so lookups do not allocate).
    ingresses: HashMap<String, HashMap<String, IngressEntry>>,
    targets: http::TargetCache,
    backends: backends::BackendCache,
    certs: tls::CertCache,
    auth: HashMap<(String, String, String, bool), AuthEntry>,
}

/// A parsed Ingress and the object it was parsed from.
#[derive(Debug)]
struct IngressEntry {
    object: Arc<Ingress>,
    parsed: Arc<ingress::ParsedIngress>,
    used_run: u64,
}

#[derive(Debug)]
struct AuthEntry {
    secret: Arc<Secret>,
    result: Result<Arc<BasicAuth>, String>,
    used_run: u64,
}

impl Translator {
    /// A translator with empty memory.
    pub fn new(settings: Settings) -> Self {
        Translator {
            settings,
            run: 0,
            ingresses: HashMap::new(),
            targets: Default::default(),
            backends: Default::default(),
            certs: Default::default(),
            auth: HashMap::new(),
        }
    }

    /// The settings translations use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Translates the objects. `snapshot.generation` is left at 0 for the caller to set.
    pub fn translate(&mut self, objects: &ObjectCache) -> Translation {
        self.run += 1;
        let run = self.run;
        let mut diags = Diagnostics::default();

        let owned = self.owned_ingresses(objects);
        let mut owned_refs: Vec<ObjectRef> = owned.iter().map(|p| p.origin.clone()).collect();
        owned_refs.sort();

        let mut mains = Vec::new();
        let mut canaries = Vec::new();
        let mut passthroughs = Vec::new();
        for p in &owned {
            for n in &p.notes {
                diags.add(n.clone());
            }
            let ann = match &p.annotations {
                Ok(a) => a,
                Err(d) => {
                    diags.add(d.clone());
                    continue;
                }
            };
            let mut auth = None;
            if let Some(auth_ref) = &ann.auth {
                match self.basic_auth(objects, auth_ref, run) {
                    Ok(b) => auth = Some(b),
                    Err(m) => {
                        let message = format!("{m}; the Ingress is not applied");
                        diags.push(p.origin.clone(), reason::AUTH_SECRET_INVALID, message);
                        continue;
                    }
                }
            }
            let hi = http::HttpIngress {
                parsed: p,
                ann,
                auth,
            };
            if ann.canary.is_some() {
                canaries.push(hi);
            } else if ann.passthrough {
                passthroughs.push(hi);
            } else {
                mains.push(hi);
            }
        }
        self.auth.retain(|_, e| e.used_run == run);

        let static_endpoints = self.settings.static_endpoints;
        let mut resolver =
            backends::Resolver::new(&mut self.backends, objects, static_endpoints, run);
        let targets = &mut self.targets;
        targets.begin(run);
        let mut hosts = http::build(&mains, &canaries, &mut resolver, targets, &mut diags);
        let default_backend =
            global_default(&self.settings, &mains, &mut resolver, targets, &mut diags);
        targets.finish();
        let passthrough = passthrough::build(&passthroughs, &mut resolver, &mut diags);
        let l4 = l4::build(objects, &self.settings, &mut resolver, &mut diags);
        for (object, message) in resolver.service_problems() {
            diags.push(object, reason::INVALID_ENDPOINTS, message);
        }
        resolver.finish();

        let mut terminated: Vec<&ingress::ParsedIngress> = mains
            .iter()
            .chain(&canaries)
            .map(|h| h.parsed.as_ref())
            .collect();
        terminated.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        let (tls, tls_hosts) = tls::build(&terminated, &mut self.certs, objects, run, &mut diags);
        self.certs.evict(run);
        mark_tls_hosts(&mut hosts, &tls_hosts);

        let snapshot = Snapshot {
            generation: 0,
            http: HttpConfig {
                hosts,
                default_backend,
            },
            tls,
            passthrough,
            l4,
        };
        Translation {
            snapshot: Arc::new(snapshot),
            diagnostics: diags.into_vec(),
            owned_ingresses: owned_refs,
        }
    }

    /// Owned Ingresses, parsed (or reused), oldest first.
    fn owned_ingresses(&mut self, objects: &ObjectCache) -> Vec<Arc<ingress::ParsedIngress>> {
        let run = self.run;
        let classes = class::ClassFilter::new(objects, &self.settings);
        let mut owned = Vec::new();
        for ing in objects.ingresses().iter() {
            let ns = ing.metadata.namespace.as_deref().unwrap_or_default();
            let name = ing.metadata.name.as_deref().unwrap_or_default();
            let cached = self.ingresses.get_mut(ns).and_then(|m| m.get_mut(name));
            let parsed = match cached {
                Some(e) if Arc::ptr_eq(&e.object, ing) => {
                    e.used_run = run;
                    e.parsed.clone()
                }
                _ => {
                    let parsed = Arc::new(ingress::parse(ing));
                    let entry = IngressEntry {
                        object: ing.clone(),
                        parsed: parsed.clone(),
                        used_run: run,
                    };
                    self.ingresses
                        .entry(ns.to_owned())
                        .or_default()
                        .insert(name.to_owned(), entry);
                    parsed
                }
            };
            if classes.owns(&parsed.class) {
                owned.push(parsed);
            }
        }
        self.ingresses.retain(|_, m| {
            m.retain(|_, e| e.used_run == run);
            !m.is_empty()
        });
        owned.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        owned
    }

    /// The users of an `auth-secret`, parsed once per Secret object and realm.
    fn basic_auth(
        &mut self,
        objects: &ObjectCache,
        auth: &annotations::AuthRef,
        run: u64,
    ) -> Result<Arc<BasicAuth>, String> {
        let (ns, name) = (&auth.secret.namespace, &auth.secret.name);
        let Some(secret) = objects.secret(ns, name) else {
            return Err(format!("auth secret {ns}/{name} not found"));
        };
        let key = (ns.clone(), name.clone(), auth.realm.clone(), auth.map);
        if let Some(e) = self.auth.get_mut(&key) {
            if Arc::ptr_eq(&e.secret, secret) {
                e.used_run = run;
                return e.result.clone();
            }
        }
        let result = annotations::auth::users_from_secret(secret, auth.map)
            .map(|users| {
                Arc::new(BasicAuth {
                    realm: auth.realm.clone(),
                    users,
                })
            })
            .map_err(|e| format!("auth secret {ns}/{name}: {e}"));
        self.auth.insert(
            key,
            AuthEntry {
                secret: secret.clone(),
                result: result.clone(),
                used_run: run,
            },
        );
        result
    }
}

/// The global default backend: the configured Service, else the `spec.defaultBackend` of the
/// oldest owned Ingress that has one.
fn global_default(
    settings: &Settings,
    mains: &[http::HttpIngress<'_>],
    resolver: &mut backends::Resolver<'_>,
    targets: &mut http::TargetCache,
    diags: &mut Diagnostics,
) -> Option<Arc<RouteTarget>> {
    if let Some(ServicePortRef {
        namespace,
        name,
        port,
    }) = &settings.default_backend
    {
        let port = match port.parse::<i32>() {
            Ok(n) => backends::PortRef::Number(n),
            Err(_) => backends::PortRef::Name(port.clone()),
        };
        let backend = backends::BackendRef {
            service: name.clone(),
            port,
        };
        let (upstream, problem) = resolver.upstream(namespace, &backend, BackendProtocol::Http);
        let origin = ObjectRef {
            kind: "Service",
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if let Some(p) = problem {
            diags.push(
                origin.clone(),
                p.reason,
                format!("default backend: {}", p.message),
            );
        }
        return Some(Arc::new(RouteTarget {
            origin,
            upstream,
            policy: RoutePolicy::default(),
            canary: None,
        }));
    }
    let (ing, backend) = mains
        .iter()
        .find_map(|m| m.parsed.default_backend.as_ref().map(|b| (m, b)))?;
    let upstream = ing.upstream(resolver, backend, diags);
    Some(targets.target(ing, 0, upstream))
}

/// Sets `VirtualHost.tls` for hosts covered by some `spec.tls[].hosts` entry.
fn mark_tls_hosts(hosts: &mut [VirtualHost], tls_hosts: &[HostMatch]) {
    let mut exact = HashSet::new();
    let mut wild = HashSet::new();
    for h in tls_hosts {
        match h {
            HostMatch::Exact(e) => {
                exact.insert(e.as_str());
            }
            HostMatch::Wildcard(s) => {
                wild.insert(s.as_str());
            }
            HostMatch::Any => {}
        }
    }
    for vh in hosts {
        vh.tls = match &vh.host {
            HostMatch::Exact(e) => {
                exact.contains(e.as_str())
                    || e.split_once('.')
                        .is_some_and(|(_, parent)| wild.contains(parent))
            }
            HostMatch::Wildcard(s) => wild.contains(s.as_str()),
            HostMatch::Any => false,
        };
    }
}
