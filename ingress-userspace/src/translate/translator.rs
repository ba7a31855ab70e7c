//! The incremental translator.
//!
//! It keeps, per Ingress, what it was translated to (role, hosts, route targets) and, per
//! host, the virtual host built from the Ingresses with rules for it. Each call reads the
//! changes the [`ObjectCache`] logged since the previous call and redoes only what depends
//! on them: changed Ingresses are re-read, hosts they (or the Services they use) touch are
//! rebuilt; TLS, passthrough and L4 are rebuilt when their inputs changed. IngressClass
//! changes, the first call, or a cache whose log no longer reaches back, start from scratch.
//! The result is always what a from-scratch translation gives (tests check this on random
//! change sequences).
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};

use super::{
    annotations::{self, client_cert::ClientCertRef, proxy_ssl::ProxySslRef, AuthRef},
    backends::{self, BackendCache, Resolver},
    class::ClassFilter,
    global::{self, ControllerConfig},
    header_sets, http,
    ingress::{self, ParsedIngress},
    l4, passthrough, reason,
    state::{AgeKey, HostState, IngressState, IngressStates, Role},
    tls::{self, CertCache},
    Diagnostic, Translation,
};
use crate::{
    config::{ServicePortRef, Settings},
    snapshot::{
        BackendProtocol, BasicAuth, ClientAuth, Crls, CustomHeaders, ExternalAuth, HostMatch,
        HttpConfig, L4Service, ObjectRef, PassthroughRoute, RoutePolicy, RouteTarget, Snapshot,
        TlsConfig, UpstreamTls, VirtualHost,
    },
    store::{cache::Change, ObjectCache},
};

type NsName = (String, String);

/// Translation with memory between calls (see the module documentation).
#[derive(Debug)]
pub struct Translator {
    settings: Settings,
    run: u64,
    /// (cache id, cache version) of the last translation.
    seen: Option<(u64, u64)>,
    model: Model,
    backends: BackendCache,
    certs: CertCache,
    auth: HashMap<AuthKey, AuthEntry>,
    /// The last controller ConfigMap settings without an invalid value.
    accepted_controller: Option<global::ControllerConfig>,
}

/// Auth cache key: Secret namespace, name, realm, auth-map.
type AuthKey = (String, String, String, bool);

#[derive(Debug)]
struct AuthEntry {
    secret: Arc<Secret>,
    result: Result<Arc<BasicAuth>, String>,
}

/// Everything derived, kept between translations.
#[derive(Debug, Default)]
struct Model {
    ingresses: IngressStates,
    hosts: HashMap<HostMatch, HostState>,
    /// Hosts with a virtual host, in snapshot order; `None` when the set changed.
    sorted_hosts: Option<Vec<HostMatch>>,
    /// The virtual hosts as last output (TLS flags set), with each host's position; rebuilt
    /// hosts are patched in place, so an unchanged host costs nothing but its clone.
    assembled: Option<(Vec<VirtualHost>, HashMap<HostMatch, usize>)>,
    /// Secrets named by `spec.tls` of the TLS Ingresses (a change to another Secret does
    /// not rebuild TLS).
    tls_secrets: HashSet<NsName>,
    /// (namespace, service) -> Ingresses routing to it.
    service_users: HashMap<NsName, BTreeSet<NsName>>,
    /// (namespace, secret) -> Ingresses using it for basic auth.
    secret_users: HashMap<NsName, BTreeSet<NsName>>,
    /// (namespace, ConfigMap) -> Ingresses naming it in `custom-headers`.
    config_map_users: HashMap<NsName, BTreeSet<NsName>>,
    owned: BTreeSet<ObjectRef>,
    /// Foreign Ingresses that another controller's class claims.
    claimed: BTreeSet<ObjectRef>,
    /// Main Ingresses with a `spec.defaultBackend` and no `spec.rules`: candidates for the
    /// global default backend.
    defaults: BTreeSet<AgeKey>,
    passthroughs: BTreeSet<AgeKey>,
    /// Main and canary Ingresses with `spec.tls` entries.
    tls_ingresses: BTreeSet<AgeKey>,
    /// Owned Ingresses with diagnostics of their own.
    diag_ingresses: BTreeSet<NsName>,
    /// Hosts whose build produced diagnostics.
    diag_hosts: HashSet<HostMatch>,
    passthrough: (Vec<PassthroughRoute>, Vec<Diagnostic>),
    tls: (TlsConfig, HashSet<HostMatch>, Vec<Diagnostic>),
    l4: (Vec<L4Service>, Vec<Diagnostic>),
    /// Services the L4 ConfigMaps name.
    l4_services: HashSet<NsName>,
    /// The controller ConfigMap, read (again) with every translation from scratch.
    controller: ControllerConfig,
}

/// What to redo in one translation.
#[derive(Debug, Default)]
struct Work {
    ingresses: BTreeSet<NsName>,
    /// Services that changed.
    services: BTreeSet<NsName>,
    /// Services (newly) in use: their cache entry must be current even if no route
    /// resolves them (e.g. only an unmatched canary does), for their diagnostics.
    refresh: BTreeSet<NsName>,
    hosts: HashSet<HostMatch>,
    passthrough: bool,
    tls: bool,
    l4: bool,
}

impl Translator {
    /// A translator with empty memory.
    pub fn new(settings: Settings) -> Self {
        Translator {
            settings,
            run: 0,
            seen: None,
            model: Model::default(),
            backends: BackendCache::default(),
            certs: CertCache::default(),
            auth: HashMap::new(),
            accepted_controller: None,
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
        let (mut work, full) = self.plan(objects);
        self.reevaluate_ingresses(objects, &mut work);

        let Translator {
            settings,
            model,
            backends,
            certs,
            auth,
            ..
        } = self;
        let mut resolver = Resolver::new(backends, objects, settings.static_endpoints, run);
        model.services_changed(&mut work, &mut resolver);
        if full {
            work.hosts.extend(model.hosts.keys().cloned());
        }
        model.rebuild_hosts(&work.hosts, &mut resolver);
        if work.passthrough {
            model.rebuild_passthrough(&mut resolver);
        }
        if work.l4 {
            model.rebuild_l4(objects, settings, &mut resolver);
        }
        let mut diagnostics = Vec::new();
        let defaults = model.global_default(settings, &mut resolver, &mut diagnostics);
        diagnostics.extend(model.service_problems(&resolver, settings));
        if full {
            resolver.finish();
            let used = model.auth_keys();
            auth.retain(|k, _| used.contains(k));
        }
        if work.tls {
            model.rebuild_tls(objects, certs, run, settings.default_certificate.as_ref());
        }
        model.output(defaults, diagnostics)
    }

    /// Decides what to redo: the logged changes, or everything (first call, another cache,
    /// a log that no longer reaches back, an IngressClass change). Also returns whether it
    /// is everything.
    fn plan(&mut self, objects: &ObjectCache) -> (Work, bool) {
        let changes = match self.seen {
            Some((id, version)) if id == objects.id() => objects.changes_since(version),
            _ => None,
        };
        self.seen = Some((objects.id(), objects.version()));
        let mut work = Work::default();
        // The controller ConfigMap holds defaults for every Ingress's annotations.
        let full = match changes {
            Some(changes)
                if !changes
                    .iter()
                    .any(|c| *c == Change::IngressClass || self.is_controller_config(c)) =>
            {
                self.collect_work(changes, &mut work);
                false
            }
            _ => {
                self.model = Model {
                    controller: self.controller_config(objects),
                    ..Model::default()
                };
                for ing in objects.ingresses().iter() {
                    let ns = ing.metadata.namespace.clone().unwrap_or_default();
                    work.ingresses
                        .insert((ns, ing.metadata.name.clone().unwrap_or_default()));
                }
                (work.passthrough, work.tls, work.l4) = (true, true, true);
                true
            }
        };
        (work, full)
    }

    /// The controller ConfigMap's settings, unless it holds an invalid value: then the last
    /// settings without one stay, as nginx keeps its running configuration when a reload
    /// fails, marked `config_rejected` (a typo in `proxy-body-size` must not turn every
    /// upload into a 413 of the default limit). With no earlier settings, the valid keys
    /// apply and the invalid ones keep their defaults.
    fn controller_config(&mut self, objects: &ObjectCache) -> global::ControllerConfig {
        let mut read = global::read(objects, &self.settings);
        if read.invalid == 0 {
            self.accepted_controller = Some(read.clone());
            return read;
        }
        read.global.config_rejected = true;
        let Some(previous) = &self.accepted_controller else {
            return read;
        };
        let mut kept = previous.clone();
        kept.global.config_rejected = true;
        if let Some(nn) = &self.settings.controller_config {
            read.diagnostics.push(Diagnostic::new(
                ObjectRef {
                    kind: "ConfigMap",
                    namespace: nn.namespace.clone(),
                    name: nn.name.clone(),
                },
                reason::INVALID_CONFIG_KEY,
                "this change is not applied: the previous settings stay until its invalid values \
                 are fixed",
            ));
        }
        kept.diagnostics = read.diagnostics;
        // Still follow the header ConfigMaps the new version names.
        kept.sources = read.sources;
        kept.invalid = read.invalid;
        kept
    }

    /// A translator that remembers what `other` last accepted of the controller ConfigMap, so
    /// from scratch it translates as `other` does incrementally.
    #[cfg(test)]
    pub(crate) fn remembering(settings: Settings, other: &Translator) -> Self {
        let mut t = Translator::new(settings);
        t.accepted_controller.clone_from(&other.accepted_controller);
        t
    }

    /// Whether `change` is to the controller ConfigMap or to a header ConfigMap it names.
    fn is_controller_config(&self, change: &Change) -> bool {
        let Change::ConfigMap { namespace, name } = change else {
            return false;
        };
        let is = |nn: &crate::config::NamespacedName| nn.is(namespace, name);
        self.settings.controller_config.as_ref().is_some_and(is)
            || self.model.controller.sources.iter().any(is)
    }

    /// Translates the changed Ingresses again.
    fn reevaluate_ingresses(&mut self, objects: &ObjectCache, work: &mut Work) {
        // A copy: the filter borrows it while `self` is updated.
        let settings = self.settings.clone();
        let classes = ClassFilter::new(objects, &settings);
        let keys: Vec<NsName> = work.ingresses.iter().cloned().collect();
        for (ns, name) in &keys {
            self.reevaluate(objects, &classes, ns, name, work);
        }
    }

    /// Turns logged changes into work.
    fn collect_work(&self, changes: &[Change], work: &mut Work) {
        for c in changes {
            match c {
                Change::Ingress { namespace, name } => {
                    work.ingresses.insert((namespace.clone(), name.clone()));
                }
                Change::Service { namespace, name } => {
                    work.services.insert((namespace.clone(), name.clone()));
                }
                Change::Secret { namespace, name } => {
                    let key = (namespace.clone(), name.clone());
                    work.tls |= self.model.tls_secrets.contains(&key);
                    let users = self.model.secret_users.get(&key);
                    work.ingresses.extend(users.into_iter().flatten().cloned());
                }
                Change::ConfigMap { namespace, name } => {
                    // Every namespace's ConfigMaps are watched: most concern nothing here.
                    let is = |nn: &Option<crate::config::NamespacedName>| {
                        nn.as_ref().is_some_and(|nn| nn.is(namespace, name))
                    };
                    work.l4 |= is(&self.settings.tcp_services) || is(&self.settings.udp_services);
                    let users = self
                        .model
                        .config_map_users
                        .get(&(namespace.clone(), name.clone()));
                    work.ingresses.extend(users.into_iter().flatten().cloned());
                }
                Change::IngressClass => {}
            }
        }
    }

    /// Forgets what Ingress `ns/name` contributed and translates it again.
    fn reevaluate(
        &mut self,
        objects: &ObjectCache,
        classes: &ClassFilter<'_>,
        ns: &str,
        name: &str,
        work: &mut Work,
    ) {
        let old = self.model.ingresses.remove(ns, name);
        if let Some(old) = &old {
            self.model.detach(old, work);
        }
        let Some(object) = objects.ingresses().get(ns, name) else {
            return;
        };
        let parsed = match &old {
            Some(o) if Arc::ptr_eq(&o.object, object) => o.parsed.clone(),
            _ => Arc::new(ingress::parse(object, &self.model.controller.defaults)),
        };
        let st = self.evaluate(objects, classes, object, parsed);
        self.model.attach(st, work);
    }

    /// Decides what an Ingress is to us and resolves its auth Secret.
    fn evaluate(
        &mut self,
        objects: &ObjectCache,
        classes: &ClassFilter<'_>,
        object: &Arc<Ingress>,
        parsed: Arc<ParsedIngress>,
    ) -> IngressState {
        let mut st = IngressState {
            object: object.clone(),
            parsed: parsed.clone(),
            age: parsed.age_key(),
            role: Role::Foreign,
            claimed_elsewhere: false,
            auth: None,
            client_auth: None,
            proxy_ssl: None,
            tls_upstreams: Vec::new(),
            secrets: Vec::new(),
            config_maps: Vec::new(),
            custom_headers: None,
            external_auth: None,
            diags: Vec::new(),
            slots: Vec::new(),
        };
        if !classes.owns(&parsed.class) {
            st.claimed_elsewhere = classes.claimed_elsewhere(&parsed.class);
            return st;
        }
        st.diags.extend(parsed.notes.iter().cloned());
        let ann = &parsed.annotations;
        if let Some(e) = &parsed.rejected {
            // Fail closed: its routes stand, answering 503, so that a typo never hands its
            // paths to a less specific route of the host (one without its allow-list or
            // auth). Translation stays a function of the objects alone, so the last valid
            // version is not kept, as ingress-nginx does until it restarts. A passthrough
            // Ingress (no HTTP routes) is not applied, nor is a canary: its traffic stays
            // with the main routes, under their policy.
            let (then, applied) = if ann.passthrough || ann.canary.is_some() {
                ("the Ingress is not applied", false)
            } else {
                ("its routes answer 503 until it is fixed", true)
            };
            st.diags.push(Diagnostic::new(
                parsed.origin.clone(),
                reason::INVALID_ANNOTATION,
                format!("{e}; {then}"),
            ));
            if !applied {
                st.role = Role::Rejected;
                return st;
            }
        }
        if let Some(auth) = &ann.auth {
            st.secrets
                .push((auth.secret.namespace.clone(), auth.secret.name.clone()));
            match self.basic_auth(objects, auth) {
                Ok(b) => st.auth = Some(b),
                Err(m) => {
                    let message = format!("{m}; its routes answer 503 until it is fixed");
                    st.diags.push(Diagnostic::new(
                        parsed.origin.clone(),
                        reason::AUTH_SECRET_INVALID,
                        message,
                    ));
                    st.auth = Some(Arc::new(BasicAuth {
                        realm: auth.realm.clone(),
                        users: Default::default(),
                        denied: true,
                    }));
                }
            }
        }
        if let Some(cc) = &ann.client_cert {
            st.secrets
                .push((cc.secret.namespace.clone(), cc.secret.name.clone()));
            st.client_auth = Some(client_auth(objects, &parsed, cc, &mut st.diags));
        }
        if let Some(ps) = &ann.proxy_ssl {
            st.secrets
                .push((ps.secret.namespace.clone(), ps.secret.name.clone()));
            st.proxy_ssl = Some(proxy_ssl(objects, &parsed, ps, &mut st.diags));
        }
        if let Some(nn) = &ann.custom_headers {
            st.config_maps.push((nn.namespace.clone(), nn.name.clone()));
            let allowed = &self.model.controller.allowed_response_headers;
            let custom = header_sets::custom(objects, nn, allowed)
                .map(|headers| CustomHeaders {
                    headers,
                    denied: false,
                })
                .unwrap_or_else(|m| {
                    st.diags.push(Diagnostic::new(
                        parsed.origin.clone(),
                        reason::CUSTOM_HEADERS_INVALID,
                        format!("custom-headers: {m}; its routes answer 503 until it is fixed"),
                    ));
                    CustomHeaders {
                        headers: Vec::new(),
                        denied: true,
                    }
                });
            st.custom_headers = Some(Arc::new(custom));
        }
        if let (Some(nn), Some(ext)) = (&ann.auth_proxy_set_headers, &ann.policy.external_auth) {
            st.config_maps.push((nn.namespace.clone(), nn.name.clone()));
            let with_headers = match header_sets::all_or_none(objects, nn) {
                Ok(headers) => ExternalAuth {
                    proxy_set_headers: headers,
                    ..(**ext).clone()
                },
                Err(m) => {
                    st.diags.push(Diagnostic::new(
                        parsed.origin.clone(),
                        reason::AUTH_HEADERS_INVALID,
                        format!(
                            "auth-proxy-set-headers: {m}; its routes answer 503 until it is fixed"
                        ),
                    ));
                    ExternalAuth {
                        denied: true,
                        ..(**ext).clone()
                    }
                }
            };
            st.external_auth = Some(Arc::new(with_headers));
        }
        st.role = if ann.canary.is_some() {
            Role::Canary
        } else if ann.passthrough {
            Role::Passthrough
        } else {
            Role::Main
        };
        st
    }

    /// The users of an `auth-secret`, parsed once per Secret object and realm.
    fn basic_auth(
        &mut self,
        objects: &ObjectCache,
        auth: &AuthRef,
    ) -> Result<Arc<BasicAuth>, String> {
        let (ns, name) = (&auth.secret.namespace, &auth.secret.name);
        let Some(secret) = objects.secret(ns, name) else {
            return Err(format!("auth secret {ns}/{name} not found"));
        };
        let key = (ns.clone(), name.clone(), auth.realm.clone(), auth.map);
        if let Some(e) = self.auth.get(&key) {
            if Arc::ptr_eq(&e.secret, secret) {
                return e.result.clone();
            }
        }
        let result = annotations::auth::users_from_secret(secret, auth.map)
            .map(|users| {
                Arc::new(BasicAuth {
                    realm: auth.realm.clone(),
                    users,
                    denied: false,
                })
            })
            .map_err(|e| format!("auth secret {ns}/{name}: {e}"));
        self.auth.insert(
            key,
            AuthEntry {
                secret: secret.clone(),
                result: result.clone(),
            },
        );
        result
    }
}

impl Model {
    /// Removes what an Ingress contributed; marks what must be rebuilt.
    fn detach(&mut self, st: &IngressState, work: &mut Work) {
        let key = st.key();
        if st.role != Role::Foreign {
            self.owned.remove(&st.parsed.origin);
        }
        self.claimed.remove(&st.parsed.origin);
        self.diag_ingresses.remove(&key);
        for secret in &st.secrets {
            remove_user(&mut self.secret_users, secret, &key);
        }
        for cm in &st.config_maps {
            remove_user(&mut self.config_map_users, cm, &key);
        }
        for svc in st.parsed.services() {
            remove_user(
                &mut self.service_users,
                &(key.0.clone(), svc.to_owned()),
                &key,
            );
        }
        match st.role {
            Role::Main | Role::Canary | Role::Passthrough => {
                for host in st.parsed.hosts() {
                    if let Some(hs) = self.hosts.get_mut(host) {
                        hs.mains.remove(&st.age);
                        hs.canaries.remove(&st.age);
                    }
                    work.hosts.insert(host.clone());
                }
                if st.role == Role::Passthrough {
                    work.passthrough = true;
                }
            }
            Role::Foreign | Role::Rejected => {}
        }
        self.defaults.remove(&st.age);
        self.passthroughs.remove(&st.age);
        if self.tls_ingresses.remove(&st.age) {
            work.tls = true;
        }
    }

    /// Records what an Ingress contributes; marks what must be rebuilt.
    fn attach(&mut self, st: IngressState, work: &mut Work) {
        let key = st.key();
        if st.claimed_elsewhere {
            self.claimed.insert(st.parsed.origin.clone());
        }
        if st.role != Role::Foreign {
            self.owned.insert(st.parsed.origin.clone());
            if !st.diags.is_empty() {
                self.diag_ingresses.insert(key.clone());
            }
        }
        for secret in &st.secrets {
            self.secret_users
                .entry(secret.clone())
                .or_default()
                .insert(key.clone());
        }
        for cm in &st.config_maps {
            self.config_map_users
                .entry(cm.clone())
                .or_default()
                .insert(key.clone());
        }
        if matches!(st.role, Role::Main | Role::Canary | Role::Passthrough) {
            for svc in st.parsed.services() {
                let service = (key.0.clone(), svc.to_owned());
                work.refresh.insert(service.clone());
                self.service_users
                    .entry(service)
                    .or_default()
                    .insert(key.clone());
            }
        }
        match st.role {
            // A passthrough Ingress's rules also serve plain HTTP, as ingress-nginx keeps a
            // server for them: `force-ssl-redirect` sends such clients to HTTPS, where the
            // SNI is spliced (Argo CD's manifests rely on it).
            Role::Main | Role::Canary | Role::Passthrough => {
                for host in st.parsed.hosts() {
                    let hs = self.hosts.entry(host.clone()).or_default();
                    if st.role == Role::Canary {
                        hs.canaries.insert(st.age.clone());
                    } else {
                        hs.mains.insert(st.age.clone());
                    }
                    work.hosts.insert(host.clone());
                }
                // ingress-nginx takes the catch-all server's backend only from an Ingress
                // without rules; with rules it is just the fallback of the hosts it creates.
                if st.role == Role::Main
                    && !st.parsed.has_rules
                    && st.parsed.default_backend.is_some()
                {
                    self.defaults.insert(st.age.clone());
                }
                if !st.parsed.tls.is_empty() {
                    self.tls_ingresses.insert(st.age.clone());
                    work.tls = true;
                }
                if st.role == Role::Passthrough {
                    self.passthroughs.insert(st.age.clone());
                    work.passthrough = true;
                }
            }
            Role::Foreign | Role::Rejected => {}
        }
        self.ingresses.insert(st);
    }

    /// Marks what depends on the Services that changed, and refreshes Services in use.
    fn services_changed(&mut self, work: &mut Work, resolver: &mut Resolver<'_>) {
        for (ns, svc) in &work.services {
            resolver.refresh(ns, svc);
            let users = self.service_users.get(&(ns.clone(), svc.clone()));
            for (user_ns, user) in users.into_iter().flatten() {
                let Some(st) = self.ingresses.get(user_ns, user) else {
                    continue;
                };
                match st.role {
                    Role::Main | Role::Canary | Role::Passthrough => {
                        work.hosts.extend(st.parsed.hosts().into_iter().cloned());
                        work.passthrough |= st.role == Role::Passthrough;
                    }
                    Role::Foreign | Role::Rejected => {}
                }
            }
            work.l4 = true;
        }
        for (ns, svc) in &work.refresh {
            resolver.refresh(ns, svc);
        }
    }

    fn rebuild_passthrough(&mut self, resolver: &mut Resolver<'_>) {
        let list: Vec<&IngressState> = self
            .passthroughs
            .iter()
            .filter_map(|k| self.ingresses.get(&k.namespace, &k.name))
            .collect();
        let mut diags = Vec::new();
        let routes = passthrough::build(&list, resolver, &mut diags);
        self.passthrough = (routes, diags);
    }

    fn rebuild_l4(
        &mut self,
        objects: &ObjectCache,
        settings: &Settings,
        resolver: &mut Resolver<'_>,
    ) {
        let mut diags = Vec::new();
        let (services, referenced) = l4::build(objects, settings, resolver, &mut diags);
        self.l4_services = referenced;
        self.l4 = (services, diags);
    }

    fn rebuild_tls(
        &mut self,
        objects: &ObjectCache,
        certs: &mut CertCache,
        run: u64,
        default: Option<&crate::config::NamespacedName>,
    ) {
        let list: Vec<&ParsedIngress> = self
            .tls_ingresses
            .iter()
            .filter_map(|k| self.ingresses.get(&k.namespace, &k.name))
            .map(|st| st.parsed.as_ref())
            .collect();
        let mut diags = Vec::new();
        let (mut config, hosts) = tls::build(&list, certs, objects, run, &mut diags);
        if let Some(nn) = default {
            config.default = tls::default_certificate(nn, certs, objects, run, &mut diags);
        }
        certs.evict(run);
        self.tls_secrets = list
            .iter()
            .flat_map(|p| {
                p.tls
                    .iter()
                    .filter_map(|t| Some((p.origin.namespace.clone(), t.secret.clone()?)))
            })
            .chain(default.map(|nn| (nn.namespace.clone(), nn.name.clone())))
            .collect();
        let hosts: HashSet<HostMatch> = hosts.into_iter().collect();
        if hosts != self.tls.1 {
            self.assembled = None;
        }
        self.tls = (config, hosts, diags);
    }

    /// Bad static-endpoints annotations of the Services in use.
    fn service_problems(&self, resolver: &Resolver<'_>, settings: &Settings) -> Vec<Diagnostic> {
        let referenced = |ns: &str, svc: &str| {
            let key = (ns.to_owned(), svc.to_owned());
            self.service_users.contains_key(&key)
                || self.l4_services.contains(&key)
                || settings
                    .default_backend
                    .as_ref()
                    .is_some_and(|d| d.namespace == ns && d.name == svc)
        };
        resolver
            .service_problems(referenced)
            .into_iter()
            .map(|(object, message)| Diagnostic::new(object, reason::INVALID_ENDPOINTS, message))
            .collect()
    }

    /// The translation: the snapshot from the current state, all diagnostics sorted and
    /// unique.
    fn output(
        &mut self,
        (default_backend, service_default): (Option<Arc<RouteTarget>>, Option<Arc<RouteTarget>>),
        mut diagnostics: Vec<Diagnostic>,
    ) -> Translation {
        let hosts = self.assemble_hosts();
        diagnostics.extend(self.diagnostics());
        diagnostics.sort_by(|a, b| {
            (&a.object, a.reason, &a.message).cmp(&(&b.object, b.reason, &b.message))
        });
        diagnostics.dedup();
        let snapshot = Snapshot {
            generation: 0,
            http: HttpConfig {
                hosts,
                default_backend,
                service_default,
            },
            tls: self.tls.0.clone(),
            passthrough: self.passthrough.0.clone(),
            l4: self.l4.0.clone(),
            global: self.controller.global.clone(),
            endpoints_only: false,
        };
        Translation {
            snapshot: Arc::new(snapshot),
            diagnostics,
            owned_ingresses: self.owned.iter().cloned().collect(),
            claimed_elsewhere: self.claimed.iter().cloned().collect(),
        }
    }

    /// Rebuilds the given hosts.
    fn rebuild_hosts(&mut self, hosts: &HashSet<HostMatch>, resolver: &mut Resolver<'_>) {
        for host in hosts {
            let Some(hs) = self.hosts.get_mut(host) else {
                continue;
            };
            if hs.mains.is_empty() && hs.canaries.is_empty() {
                if hs.built.is_some() {
                    self.sorted_hosts = None;
                    self.assembled = None;
                }
                self.hosts.remove(host);
                self.diag_hosts.remove(host);
                continue;
            }
            let mut diags = Vec::new();
            let built = http::build_host(
                host,
                &hs.mains,
                &hs.canaries,
                &mut self.ingresses,
                resolver,
                &mut diags,
            );
            if built.is_some() != hs.built.is_some() {
                self.sorted_hosts = None;
                self.assembled = None;
            }
            if let (Some((list, positions)), Some(vh)) = (&mut self.assembled, &built) {
                if let Some(&i) = positions.get(host) {
                    list[i] = with_tls_flag(vh.clone(), &self.tls.1);
                }
            }
            hs.built = built;
            if diags.is_empty() {
                self.diag_hosts.remove(host);
            } else {
                self.diag_hosts.insert(host.clone());
            }
            hs.diags = diags;
        }
    }

    /// The backend of unknown hosts and that of named hosts' unmatched paths, as ingress-nginx
    /// has them: the `spec.defaultBackend` of the oldest main Ingress that has one and no
    /// `spec.rules` (a catch-all Ingress) answers unknown hosts, even with
    /// `--default-backend-service`; that Service answers the rest. A catch-all Ingress never
    /// takes another Ingress's host: one tenant's would get every other tenant's stray requests.
    fn global_default(
        &mut self,
        settings: &Settings,
        resolver: &mut Resolver<'_>,
        diags: &mut Vec<Diagnostic>,
    ) -> (Option<Arc<RouteTarget>>, Option<Arc<RouteTarget>>) {
        let service = self.service_default(settings, resolver, diags);
        let catch_all = self.defaults.iter().next().cloned().and_then(|key| {
            let st = self.ingresses.get_mut(&key.namespace, &key.name)?;
            let backend = st.parsed.default_backend.clone()?;
            let upstream = http::http_upstream(resolver, st, &backend, diags);
            Some(http::target(st, 0, upstream, None))
        });
        (catch_all.or_else(|| service.clone()), service)
    }

    /// `--default-backend-service` as a target.
    fn service_default(
        &mut self,
        settings: &Settings,
        resolver: &mut Resolver<'_>,
        diags: &mut Vec<Diagnostic>,
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
            let (upstream, problem) =
                resolver.upstream(namespace, &backend, BackendProtocol::Http, false);
            let origin = ObjectRef {
                kind: "Service",
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if let Some(p) = problem {
                diags.push(Diagnostic::new(
                    origin.clone(),
                    p.reason,
                    format!("default backend: {}", p.message),
                ));
            }
            return Some(Arc::new(RouteTarget {
                origin,
                upstream,
                policy: RoutePolicy::default(),
                canary: None,
                default_backend: None,
            }));
        }
        None
    }

    /// The virtual hosts in snapshot order, with their TLS flags.
    fn assemble_hosts(&mut self) -> Vec<VirtualHost> {
        if self.assembled.is_none() {
            let hosts = &self.hosts;
            let sorted = self.sorted_hosts.get_or_insert_with(|| {
                let mut v: Vec<HostMatch> = hosts
                    .iter()
                    .filter(|(_, hs)| hs.built.is_some())
                    .map(|(h, _)| h.clone())
                    .collect();
                v.sort_by(super::hosts::host_order);
                v
            });
            let list: Vec<VirtualHost> = sorted
                .iter()
                .filter_map(|h| hosts.get(h)?.built.clone())
                .map(|vh| with_tls_flag(vh, &self.tls.1))
                .collect();
            let positions = list
                .iter()
                .enumerate()
                .map(|(i, vh)| (vh.host.clone(), i))
                .collect();
            self.assembled = Some((list, positions));
        }
        self.assembled
            .as_ref()
            .map(|(list, _)| list.clone())
            .unwrap_or_default()
    }

    /// Diagnostics of Ingresses, hosts, TLS, passthrough and L4, unsorted.
    fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (ns, name) in &self.diag_ingresses {
            if let Some(st) = self.ingresses.get(ns, name) {
                out.extend(st.diags.iter().cloned());
            }
        }
        for host in &self.diag_hosts {
            if let Some(hs) = self.hosts.get(host) {
                out.extend(hs.diags.iter().cloned());
            }
        }
        out.extend(self.tls.2.iter().cloned());
        out.extend(self.passthrough.1.iter().cloned());
        out.extend(self.l4.1.iter().cloned());
        out.extend(self.controller.diagnostics.iter().cloned());
        out
    }

    /// Keys of the auth cache still in use.
    fn auth_keys(&self) -> HashSet<AuthKey> {
        let mut out = HashSet::new();
        for users in self.secret_users.values() {
            for (ns, name) in users {
                let Some(st) = self.ingresses.get(ns, name) else {
                    continue;
                };
                if let Some(AuthRef { secret, realm, map }) =
                    st.annotations().and_then(|a| a.auth.as_ref())
                {
                    out.insert((
                        secret.namespace.clone(),
                        secret.name.clone(),
                        realm.clone(),
                        *map,
                    ));
                }
            }
        }
        out
    }
}

/// Reads Secret `ns/name` with `parse`; a missing or unparsable one is a Warning on the
/// Ingress saying what follows (`effect`), and `None`.
fn read_secret<T>(
    objects: &ObjectCache,
    parsed: &ParsedIngress,
    (what, ns, name): (&str, &str, &str),
    parse: impl FnOnce(&k8s_openapi::api::core::v1::Secret) -> Result<T, String>,
    effect: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let read = match objects.secret(ns, name) {
        None => Err(format!("{what} secret {ns}/{name} not found")),
        Some(secret) => parse(secret).map_err(|e| format!("{what} secret {ns}/{name}: {e}")),
    };
    read.map_err(|m| {
        diags.push(Diagnostic::new(
            parsed.origin.clone(),
            reason::AUTH_SECRET_INVALID,
            format!("{m}; {effect}"),
        ));
    })
    .ok()
}

/// The `auth-tls-*` settings of an Ingress with its CA Secret read. A missing or unusable
/// Secret gives `denied` settings (its hosts answer 503) and a Warning: failing open would
/// serve a host meant to require client certificates to anyone.
fn client_auth(
    objects: &ObjectCache,
    parsed: &ParsedIngress,
    cc: &ClientCertRef,
    diags: &mut Vec<Diagnostic>,
) -> Arc<ClientAuth> {
    let (ns, name) = (&cc.secret.namespace, &cc.secret.name);
    let read = read_secret(
        objects,
        parsed,
        ("auth-tls", ns, name),
        annotations::client_cert::ca_from_secret,
        "its hosts answer 503 until it is fixed",
        diags,
    );
    let (ca, roots, crls, denied) = match read {
        Some(ca) => (ca.certs, ca.roots, ca.crls, false),
        None => (
            Vec::new(),
            Arc::new(rustls::RootCertStore::empty()),
            Crls::default(),
            true,
        ),
    };
    Arc::new(ClientAuth {
        origin: parsed.origin.clone(),
        secret: format!("{ns}/{name}"),
        ca,
        roots,
        crls,
        mode: cc.mode,
        depth: cc.depth,
        error_page: cc.error_page.clone(),
        pass_certificate: cc.pass_certificate,
        match_cn: cc.match_cn.clone(),
        denied,
    })
}

/// The `proxy-ssl-*` settings of an Ingress with its Secret read. An unusable Secret is a
/// Warning; with `proxy-ssl-verify: on` nothing verifies then (its HTTPS upstreams answer 502
/// until it is fixed), as failing open would talk to any upstream.
fn proxy_ssl(
    objects: &ObjectCache,
    parsed: &ParsedIngress,
    ps: &ProxySslRef,
    diags: &mut Vec<Diagnostic>,
) -> Arc<UpstreamTls> {
    let (ns, name) = (&ps.secret.namespace, &ps.secret.name);
    let effect = if ps.verify {
        "its HTTPS upstreams answer 502 until it is fixed"
    } else {
        "its HTTPS upstreams are reached without a client certificate"
    };
    let read = read_secret(
        objects,
        parsed,
        ("proxy-ssl", ns, name),
        |s| annotations::proxy_ssl::from_secret(s, ps.verify),
        effect,
        diags,
    );
    let (ca, roots, client_cert) = match read {
        Some((ca, roots, client)) => (ca, roots, client.map(Arc::new)),
        None => (Vec::new(), rustls::RootCertStore::empty(), None),
    };
    Arc::new(UpstreamTls {
        secret: format!("{ns}/{name}"),
        verify: ps.verify.then(|| Arc::new(roots)),
        ca,
        depth: ps.depth,
        name: ps.name.clone().unwrap_or_default(),
        sni: ps.sni,
        client_cert,
        versions: ps.versions,
        tls12_suites: ps.tls12_suites.clone(),
    })
}

/// Sets `VirtualHost.tls`: a `spec.tls` entry applies to the host (see [`tls::build`]). Only
/// the host itself counts, not a wildcard covering it: that one comes from an Ingress with a
/// rule for the wildcard, not for this host (a certificate valid for the host is already
/// matched by name in `tls::build`).
fn with_tls_flag(mut vh: VirtualHost, tls_hosts: &HashSet<HostMatch>) -> VirtualHost {
    vh.tls = tls_hosts.contains(&vh.host);
    vh
}

fn remove_user(map: &mut HashMap<NsName, BTreeSet<NsName>>, of: &NsName, user: &NsName) {
    if let Some(users) = map.get_mut(of) {
        users.remove(user);
        if users.is_empty() {
            map.remove(of);
        }
    }
}
