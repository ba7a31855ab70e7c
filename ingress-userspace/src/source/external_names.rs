//! ExternalName Services, resolved: the DNS name a Service of type `ExternalName` points at
//! becomes an EndpointSlice of that Service, so translation and the proxy treat its addresses
//! as they treat pods (pooling, balancing, outlier ejection; the kernel's balancing for L4
//! services), as ingress-nginx does.
//!
//! The resolver sits between the sources and the store. Every event passes through it
//! unchanged, except that a `Replace` of EndpointSlices keeps the resolved slices (the source
//! that relisted does not know them). It follows the Services it sees, looks each name up when
//! it first appears and every `refresh` after (nginx's `resolver valid=30s`), and sends a slice
//! only when the addresses change. A lookup that fails keeps the last addresses; a name that
//! never resolved gets an empty slice whose annotation carries the error, which translation
//! reports on the Ingress. `Synced` waits for the first lookups (at most [`SYNC_WAIT`]), so the
//! first snapshot does not answer 503 for them. IP literals need no lookup. As in ingress-nginx,
//! `localhost` and loopback addresses are refused (an Ingress author must not reach the node's
//! own ports through a Service), and here also loopback addresses a name resolves to.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::Service,
        discovery::v1::{Endpoint, EndpointConditions, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use super::{Key, Kind, Object, SourceEvent};
use crate::store::cache::{ns_name, SERVICE_NAME_LABEL};

/// Suffix of a resolved slice's name: `:` is not allowed in object names, so it never
/// collides with a slice from the cluster or a manifest.
pub const SLICE_SUFFIX: &str = ":external-name";
/// Annotation of a resolved slice whose name did not resolve: why.
pub const RESOLVE_ERROR_ANNOTATION: &str = "ingress.example.dev/resolve-error";
/// Longest wait for the first lookups before `Synced` is passed on.
pub const SYNC_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an ExternalName Service points.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExternalName {
    /// An IP address: no lookup.
    Ip(IpAddr),
    /// A DNS name, lower case, without a trailing dot.
    Host(String),
}

/// What a Service of type ExternalName points at, or why it cannot be used; `None` for other
/// Services.
pub fn external_name(svc: &Service) -> Option<Result<ExternalName, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    let raw = spec.external_name.as_deref().unwrap_or("").trim();
    Some(parse(raw))
}

fn parse(raw: &str) -> Result<ExternalName, String> {
    if raw.is_empty() {
        return Err("has no externalName".into());
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return if usable(ip) {
            Ok(ExternalName::Ip(ip))
        } else {
            Err(format!(
                "externalName {raw} is a loopback or unspecified address, which is refused"
            ))
        };
    }
    let host = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(format!(
            "externalName {raw} names localhost, which is refused"
        ));
    }
    if !is_dns_subdomain(&host) {
        return Err(format!("externalName {raw:?} is not a valid DNS name"));
    }
    Ok(ExternalName::Host(host))
}

/// RFC 1123 subdomain, as Kubernetes validates it: labels of `a-z0-9-`, not starting or ending
/// with `-`, at most 63 bytes each and 253 in all.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Whether a proxy may connect to `ip` for an ExternalName.
fn usable(ip: IpAddr) -> bool {
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    !mapped.is_loopback() && !mapped.is_unspecified()
}

/// A name lookup, replaceable in tests.
pub trait Lookup: Send + Sync + 'static {
    /// The addresses `host` resolves to.
    fn lookup(&self, host: String)
        -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then the cluster DNS of resolv.conf).
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Starts the resolver in front of `store`; sources send to the returned sender instead.
/// `refresh` must not be zero (the command line refuses it).
pub fn spawn(
    store: mpsc::Sender<SourceEvent>,
    refresh: Duration,
    lookup: Arc<dyn Lookup>,
) -> mpsc::Sender<SourceEvent> {
    let (tx, rx) = mpsc::channel(crate::store::EVENT_QUEUE);
    let resolver = Resolver {
        store,
        lookup,
        refresh,
        services: BTreeMap::new(),
        results: HashMap::new(),
        published: HashMap::new(),
        in_flight: HashSet::new(),
        held_sync: None,
    };
    tokio::spawn(resolver.run(rx));
    tx
}

/// What the last lookup of a name gave.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Addrs(Vec<IpAddr>),
    Failed(String),
}

struct Resolver {
    store: mpsc::Sender<SourceEvent>,
    lookup: Arc<dyn Lookup>,
    refresh: Duration,
    /// (namespace, Service) -> where it points.
    services: BTreeMap<(String, String), ExternalName>,
    /// Host -> the latest usable outcome.
    results: HashMap<String, Outcome>,
    /// (namespace, Service) -> the slice the store holds.
    published: HashMap<(String, String), EndpointSlice>,
    in_flight: HashSet<String>,
    /// When a `Synced` waits for the first lookups, until when.
    held_sync: Option<Instant>,
}

type Done = (String, io::Result<Vec<IpAddr>>);

impl Resolver {
    async fn run(mut self, mut rx: mpsc::Receiver<SourceEvent>) {
        let mut lookups: JoinSet<Done> = JoinSet::new();
        // A zero period would panic in `interval_at`; the flag refuses it, this guards callers.
        let refresh = self.refresh.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval_at(Instant::now() + refresh, refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sync_deadline = self.held_sync;
            let ok = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev, &mut lookups).await,
                    None => break,
                },
                Some(done) = lookups.join_next() => match done {
                    Ok((host, result)) => self.resolved(host, result).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "name lookup task failed");
                        true
                    }
                },
                _ = tick.tick() => {
                    let hosts: HashSet<String> = self.hosts().cloned().collect();
                    for host in hosts {
                        self.start(host, &mut lookups);
                    }
                    true
                }
                () = crate::sleep_until_opt(sync_deadline) => {
                    tracing::warn!("ExternalName lookups still running; reporting synced without them");
                    self.release_sync().await
                }
            };
            if !ok {
                return;
            }
            if self.held_sync.is_some() && self.in_flight.is_empty() && !self.release_sync().await {
                return;
            }
        }
        // The sources are gone; a held `Synced` still goes, so the store publishes.
        self.release_sync().await;
    }

    /// Passes `ev` on, and what it changes about ExternalName Services. False once the store
    /// is gone.
    async fn handle(&mut self, ev: SourceEvent, lookups: &mut JoinSet<Done>) -> bool {
        let touched: Vec<(String, String)> = match &ev {
            SourceEvent::Apply(Object::Service(svc)) => {
                let key = ns_name(&svc.metadata);
                self.track(key.clone(), svc);
                key.into_iter().collect()
            }
            SourceEvent::Delete(Key {
                kind: Kind::Service,
                namespace,
                name,
            }) => {
                let key = (namespace.clone(), name.clone());
                self.services.remove(&key);
                vec![key]
            }
            SourceEvent::Replace(Kind::Service, list) => {
                let mut touched: Vec<_> = self.services.keys().cloned().collect();
                self.services.clear();
                for o in list {
                    if let Object::Service(svc) = o {
                        let key = ns_name(&svc.metadata);
                        self.track(key.clone(), svc);
                        touched.extend(key);
                    }
                }
                touched
            }
            _ => Vec::new(),
        };
        let ev = match ev {
            SourceEvent::Replace(Kind::EndpointSlice, mut list) => {
                list.extend(
                    self.published
                        .values()
                        .map(|s| Object::EndpointSlice(s.clone())),
                );
                SourceEvent::Replace(Kind::EndpointSlice, list)
            }
            SourceEvent::Synced if !self.in_flight.is_empty() => {
                self.held_sync = Some(Instant::now() + SYNC_WAIT);
                return true;
            }
            ev => ev,
        };
        if self.store.send(ev).await.is_err() {
            return false;
        }
        // Only Service events change which names are in use: the rest (EndpointSlices above
        // all) pass without this bookkeeping.
        if touched.is_empty() {
            return true;
        }
        let used: HashSet<String> = self.hosts().cloned().collect();
        self.results.retain(|h, _| used.contains(h));
        for host in used {
            if !self.results.contains_key(&host) {
                self.start(host, lookups);
            }
        }
        for key in touched {
            if !self.publish(key).await {
                return false;
            }
        }
        true
    }

    fn track(&mut self, key: Option<(String, String)>, svc: &Service) {
        let Some(key) = key else { return };
        match external_name(svc) {
            Some(Ok(target)) => {
                self.services.insert(key, target);
            }
            // Not ExternalName, or unusable (translation reports why): no slice.
            _ => {
                self.services.remove(&key);
            }
        }
    }

    fn hosts(&self) -> impl Iterator<Item = &String> {
        self.services.values().filter_map(|t| match t {
            ExternalName::Host(h) => Some(h),
            ExternalName::Ip(_) => None,
        })
    }

    fn start(&mut self, host: String, lookups: &mut JoinSet<Done>) {
        if !self.in_flight.insert(host.clone()) {
            return;
        }
        let fut = self.lookup.lookup(host.clone());
        lookups.spawn(async move {
            let result = match tokio::time::timeout(LOOKUP_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out")),
            };
            (host, result)
        });
    }

    async fn resolved(&mut self, host: String, result: io::Result<Vec<IpAddr>>) -> bool {
        self.in_flight.remove(&host);
        if !self.hosts().any(|h| *h == host) {
            return true;
        }
        let outcome = match result {
            Ok(addrs) => {
                let mut usable_addrs: Vec<IpAddr> =
                    addrs.iter().copied().filter(|a| usable(*a)).collect();
                usable_addrs.sort_unstable();
                usable_addrs.dedup();
                if usable_addrs.is_empty() && !addrs.is_empty() {
                    Outcome::Failed(format!(
                        "{host} resolves only to loopback or unspecified addresses, which are refused"
                    ))
                } else if usable_addrs.is_empty() {
                    Outcome::Failed(format!("{host} has no address"))
                } else {
                    Outcome::Addrs(usable_addrs)
                }
            }
            Err(e) => Outcome::Failed(format!("looking up {host} failed: {e}")),
        };
        let outcome = match (outcome, self.results.get(&host)) {
            // A failed refresh keeps what the name last resolved to.
            (Outcome::Failed(why), Some(Outcome::Addrs(old))) => {
                tracing::warn!(%host, error = %why, "ExternalName lookup failed; keeping its last addresses");
                Outcome::Addrs(old.clone())
            }
            (outcome, _) => outcome,
        };
        if let Outcome::Failed(why) = &outcome {
            tracing::warn!(%host, error = %why, "ExternalName did not resolve");
        }
        self.results.insert(host.clone(), outcome);
        let keys: Vec<_> = self
            .services
            .iter()
            .filter(|(_, t)| matches!(t, ExternalName::Host(h) if *h == host))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if !self.publish(key).await {
                return false;
            }
        }
        true
    }

    /// Brings the store's slice of Service `key` in line with what it points at now.
    async fn publish(&mut self, key: (String, String)) -> bool {
        let want = match self.services.get(&key) {
            Some(ExternalName::Ip(ip)) => Some(Outcome::Addrs(vec![*ip])),
            // A name being looked up for the first time: the old slice serves until it answers,
            // so changing `externalName` does not leave the Service without endpoints meanwhile.
            Some(ExternalName::Host(h)) if !self.results.contains_key(h) => return true,
            Some(ExternalName::Host(h)) => self.results.get(h).cloned(),
            None => None,
        };
        let slice = want.map(|o| slice_for(&key.0, &key.1, &o));
        if slice.as_ref() == self.published.get(&key) {
            return true;
        }
        let ev = match slice {
            Some(s) => {
                self.published.insert(key, s.clone());
                SourceEvent::Apply(Object::EndpointSlice(s))
            }
            None => {
                self.published.remove(&key);
                SourceEvent::Delete(Key {
                    kind: Kind::EndpointSlice,
                    name: format!("{}{SLICE_SUFFIX}", key.1),
                    namespace: key.0,
                })
            }
        };
        self.store.send(ev).await.is_ok()
    }

    async fn release_sync(&mut self) -> bool {
        if self.held_sync.take().is_none() {
            return true;
        }
        self.store.send(SourceEvent::Synced).await.is_ok()
    }
}

/// The slice standing for Service `namespace/service`: one ready endpoint per address, no
/// ports (the Service port's target port applies), or none and the error.
fn slice_for(namespace: &str, service: &str, outcome: &Outcome) -> EndpointSlice {
    let (endpoints, error) = match outcome {
        Outcome::Addrs(addrs) => (
            addrs
                .iter()
                .map(|ip| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            None,
        ),
        Outcome::Failed(why) => (Vec::new(), Some(why.clone())),
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}{SLICE_SUFFIX}")),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_owned(),
                service.to_owned(),
            )])),
            annotations: error.map(|e| BTreeMap::from([(RESOLVE_ERROR_ANNOTATION.to_owned(), e)])),
            ..Default::default()
        },
        // Mixed families: translation reads each address, not this.
        address_type: "IPv4".into(),
        endpoints,
        ports: None,
    }
}

/// The resolve error recorded on a Service's resolved slice, if any.
pub fn resolve_error(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .name
        .as_deref()
        .filter(|n| n.ends_with(SLICE_SUFFIX))?;
    slice
        .metadata
        .annotations
        .as_ref()?
        .get(RESOLVE_ERROR_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ServiceSpec;

    use super::*;

    /// Answers from a table that tests change; `gate` holds every answer until opened.
    struct Fake {
        answers: Mutex<HashMap<String, Result<Vec<IpAddr>, String>>>,
        gate: tokio::sync::watch::Receiver<bool>,
    }

    impl Lookup for Fake {
        fn lookup(
            &self,
            host: String,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            let answer = self
                .answers
                .lock()
                .expect("answers")
                .get(&host)
                .cloned()
                .unwrap_or_else(|| Err("no such host".into()));
            let mut gate = self.gate.clone();
            Box::pin(async move {
                let _ = gate.wait_for(|open| *open).await;
                answer.map_err(io::Error::other)
            })
        }
    }

    struct Rig {
        tx: mpsc::Sender<SourceEvent>,
        rx: mpsc::Receiver<SourceEvent>,
        fake: Arc<Fake>,
        open: tokio::sync::watch::Sender<bool>,
    }

    impl Rig {
        async fn send(&self, ev: SourceEvent) {
            self.tx.send(ev).await.expect("the resolver is running");
        }

        async fn apply(&self, svc: Service) {
            self.send(SourceEvent::Apply(Object::Service(svc))).await;
        }
    }

    fn rig(answers: &[(&str, Result<&[&str], &str>)], open: bool) -> Rig {
        let (open_tx, gate) = tokio::sync::watch::channel(open);
        let answers = answers
            .iter()
            .map(|(h, a)| {
                let a = a
                    .map(|ips| ips.iter().map(|i| i.parse().expect("ip")).collect())
                    .map_err(str::to_owned);
                (h.to_string(), a)
            })
            .collect();
        let fake = Arc::new(Fake {
            answers: Mutex::new(answers),
            gate,
        });
        let (store_tx, rx) = mpsc::channel(64);
        let tx = spawn(store_tx, Duration::from_secs(30), fake.clone());
        Rig {
            tx,
            rx,
            fake,
            open: open_tx,
        }
    }

    fn svc(name: &str, external: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(external.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn next(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("an event in time")
            .expect("the resolver is running")
    }

    fn addresses(ev: &SourceEvent) -> Vec<String> {
        match ev {
            SourceEvent::Apply(Object::EndpointSlice(s)) => s
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.clone())
                .collect(),
            other => panic!("expected a slice, got {other:?}"),
        }
    }

    #[test]
    fn names_are_checked_as_ingress_nginx_does() {
        assert_eq!(
            parse("API.Example.com."),
            Ok(ExternalName::Host("api.example.com".into()))
        );
        assert_eq!(
            parse("198.18.0.1"),
            Ok(ExternalName::Ip("198.18.0.1".parse().expect("ip")))
        );
        for refused in [
            "localhost",
            "LOCALHOST.",
            "a.localhost",
            "127.0.0.1",
            "127.1.2.3",
        ] {
            assert!(parse(refused).is_err(), "{refused}");
        }
        for refused in ["::1", "::ffff:127.0.0.1", "0.0.0.0", "::"] {
            assert!(parse(refused).is_err(), "{refused}");
        }
        for invalid in [
            "",
            "under_score.example",
            "-a.example",
            "a..b",
            "sp ace",
            "a/b",
        ] {
            assert!(parse(invalid).is_err(), "{invalid:?}");
        }
        assert!(parse(&format!("{}.example", "a".repeat(64))).is_err());
        assert_eq!(external_name(&Service::default()), None, "not ExternalName");
    }

    #[tokio::test]
    async fn a_name_becomes_a_slice_of_its_service_without_loopback_answers() {
        let mut r = rig(
            &[(
                "api.example",
                Ok(&["198.18.0.2", "127.0.0.1", "2001:db8::1"]),
            )],
            true,
        );
        r.apply(svc("api", "api.example")).await;
        assert!(matches!(
            next(&mut r.rx).await,
            SourceEvent::Apply(Object::Service(_))
        ));
        let ev = next(&mut r.rx).await;
        assert_eq!(addresses(&ev), ["198.18.0.2", "2001:db8::1"]);
        let SourceEvent::Apply(Object::EndpointSlice(slice)) = &ev else {
            unreachable!()
        };
        assert_eq!(slice.metadata.name.as_deref(), Some("api:external-name"));
        assert_eq!(
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            Some(&"api".to_string())
        );
        assert_eq!(resolve_error(slice), None);

        // An IP literal needs no lookup; a Service that stops being ExternalName loses its slice.
        r.apply(svc("api", "198.18.0.9")).await;
        next(&mut r.rx).await;
        assert_eq!(addresses(&next(&mut r.rx).await), ["198.18.0.9"]);
        let mut plain = svc("api", "");
        plain.spec = Some(ServiceSpec::default());
        r.apply(plain).await;
        next(&mut r.rx).await;
        match next(&mut r.rx).await {
            SourceEvent::Delete(k) => {
                assert_eq!(
                    (k.kind, k.namespace.as_str(), k.name.as_str()),
                    (Kind::EndpointSlice, "ns", "api:external-name")
                );
            }
            other => panic!("expected a delete, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_changed_name_keeps_the_old_addresses_until_the_new_one_answers() {
        let mut r = rig(
            &[
                ("old.example", Ok(&["198.18.0.20"])),
                ("new.example", Ok(&["198.18.0.21"])),
            ],
            true,
        );
        r.apply(svc("app", "old.example")).await;
        next(&mut r.rx).await;
        assert_eq!(addresses(&next(&mut r.rx).await), ["198.18.0.20"]);
        r.apply(svc("app", "new.example")).await;
        assert!(matches!(
            next(&mut r.rx).await,
            SourceEvent::Apply(Object::Service(_))
        ));
        // No delete in between: the next event is the new name's slice.
        assert_eq!(addresses(&next(&mut r.rx).await), ["198.18.0.21"]);
    }

    #[tokio::test]
    async fn synced_waits_for_the_first_lookups_and_relists_keep_the_slices() {
        let mut r = rig(&[("db.example", Ok(&["198.18.0.3"]))], false);
        r.send(SourceEvent::Replace(
            Kind::Service,
            vec![Object::Service(svc("db", "db.example"))],
        ))
        .await;
        r.send(SourceEvent::Synced).await;
        assert!(matches!(
            next(&mut r.rx).await,
            SourceEvent::Replace(Kind::Service, _)
        ));
        // Held: nothing more until the lookup answers.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(r.rx.try_recv().is_err(), "Synced must wait for the lookup");
        r.open.send(true).expect("open");
        assert_eq!(addresses(&next(&mut r.rx).await), ["198.18.0.3"]);
        assert!(matches!(next(&mut r.rx).await, SourceEvent::Synced));

        // A source that relists its EndpointSlices does not wipe the resolved one.
        r.send(SourceEvent::Replace(Kind::EndpointSlice, Vec::new()))
            .await;
        match next(&mut r.rx).await {
            SourceEvent::Replace(Kind::EndpointSlice, list) => assert_eq!(list.len(), 1),
            other => panic!("expected a replace, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_follow_the_name_and_a_failure_keeps_the_last_addresses() {
        let mut r = rig(&[("app.example", Ok(&["198.18.0.4"]))], true);
        r.apply(svc("app", "app.example")).await;
        next(&mut r.rx).await;
        assert_eq!(addresses(&next(&mut r.rx).await), ["198.18.0.4"]);

        let set = |answer: Result<Vec<IpAddr>, String>| {
            r.fake
                .answers
                .lock()
                .expect("answers")
                .insert("app.example".into(), answer);
        };
        set(Err("SERVFAIL".into()));
        tokio::time::sleep(Duration::from_secs(31)).await;
        tokio::task::yield_now().await;
        assert!(r.rx.try_recv().is_err(), "a failed refresh changes nothing");

        set(Ok(vec!["198.18.0.5".parse().expect("ip")]));
        assert_eq!(addresses(&next(&mut r.rx).await), ["198.18.0.5"]);

        // A name that never resolved: an empty slice carrying the reason.
        r.apply(svc("gone", "gone.example")).await;
        next(&mut r.rx).await;
        match next(&mut r.rx).await {
            SourceEvent::Apply(Object::EndpointSlice(s)) => {
                assert!(s.endpoints.is_empty());
                let why = resolve_error(&s).expect("an error");
                assert!(
                    why.contains("gone.example") && why.contains("no such host"),
                    "{why}"
                );
            }
            other => panic!("expected a slice, got {other:?}"),
        }
    }
}
