//! The object cache: typed objects by kind and `namespace/name`, with the indexes translation
//! needs (EndpointSlices by Service). Objects are normalised on the way in and an update that
//! changes nothing translation could see is a no-op, so it never triggers a new snapshot.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    Metadata,
};

use crate::source::{Key, Kind, Object};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation written by `kubectl apply`: a full copy of the object, useless here and large.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Objects of one namespaced kind: namespace -> name -> object. Nested so lookups take `&str`.
#[derive(Debug)]
pub struct NsMap<T> {
    map: HashMap<String, BTreeMap<String, Arc<T>>>,
    len: usize,
}

impl<T> Default for NsMap<T> {
    fn default() -> Self {
        NsMap {
            map: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> NsMap<T> {
    /// The object `namespace/name`, if present.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.map.get(namespace)?.get(name)
    }

    /// Every object, in no particular order across namespaces.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.map.values().flat_map(|m| m.values())
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn insert(&mut self, namespace: &str, name: &str, obj: Arc<T>) -> Option<Arc<T>> {
        let old = self
            .map
            .entry(namespace.to_owned())
            .or_default()
            .insert(name.to_owned(), obj);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<T>> {
        let ns = self.map.get_mut(namespace)?;
        let old = ns.remove(name)?;
        if ns.is_empty() {
            self.map.remove(namespace);
        }
        self.len -= 1;
        Some(old)
    }

    fn keys(&self) -> Vec<(String, String)> {
        self.map
            .iter()
            .flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone())))
            .collect()
    }
}

/// One change to the cache, as incremental translation needs to know it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    Ingress {
        namespace: String,
        name: String,
    },
    /// Any IngressClass: ownership of every Ingress may change.
    IngressClass,
    /// The Service or one of the EndpointSlices labelled with its name.
    Service {
        namespace: String,
        name: String,
    },
    Secret {
        namespace: String,
        name: String,
    },
    ConfigMap {
        namespace: String,
        name: String,
    },
}

/// Changes kept before the oldest are dropped (a consumer then starts from scratch).
const MAX_LOG: usize = 1 << 20;

/// All watched objects, indexed for translation, with a log of what changed.
#[derive(Debug)]
pub struct ObjectCache {
    /// Unique per cache, so a consumer of the log never mixes up two caches.
    id: u64,
    /// Number of changes ever made.
    version: u64,
    /// The changes numbered `log_start + 1 ..= version`.
    log: Vec<Change>,
    log_start: u64,
    ingresses: NsMap<Ingress>,
    ingress_classes: BTreeMap<String, Arc<IngressClass>>,
    services: NsMap<Service>,
    endpoint_slices: NsMap<EndpointSlice>,
    /// namespace -> service -> slice name -> slice.
    slices_by_service: HashMap<String, HashMap<String, BTreeMap<String, Arc<EndpointSlice>>>>,
    secrets: NsMap<Secret>,
    config_maps: NsMap<ConfigMap>,
}

impl Default for ObjectCache {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        ObjectCache {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            version: 0,
            log: Vec::new(),
            log_start: 0,
            ingresses: NsMap::default(),
            ingress_classes: BTreeMap::new(),
            services: NsMap::default(),
            endpoint_slices: NsMap::default(),
            slices_by_service: HashMap::new(),
            secrets: NsMap::default(),
            config_maps: NsMap::default(),
        }
    }
}

impl ObjectCache {
    /// Identity of this cache (for consumers of [`ObjectCache::changes_since`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of changes made so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The changes made after `version`, or `None` if some were already discarded.
    pub fn changes_since(&self, version: u64) -> Option<&[Change]> {
        let skip = usize::try_from(version.checked_sub(self.log_start)?).ok()?;
        self.log.get(skip..)
    }

    /// Forgets the changes up to and including `version` (they have been consumed).
    pub fn discard_changes_until(&mut self, version: u64) {
        let version = version.min(self.version);
        if version <= self.log_start {
            return;
        }
        let n = usize::try_from(version - self.log_start)
            .unwrap_or(usize::MAX)
            .min(self.log.len());
        self.log.drain(..n);
        self.log_start = version;
    }

    fn record(&mut self, change: Change) {
        self.version += 1;
        if self.log.len() >= MAX_LOG {
            self.log.clear();
            self.log_start = self.version;
            return;
        }
        self.log.push(change);
    }

    /// A cache holding `objects` (later duplicates replace earlier ones).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut cache = ObjectCache::default();
        for obj in objects {
            cache.apply(obj);
        }
        cache
    }

    /// Adds or replaces an object. Returns whether translation could see a difference.
    /// Objects without a name are ignored.
    pub fn apply(&mut self, obj: Object) -> bool {
        let change = match &obj {
            Object::EndpointSlice(_) => None, // recorded by apply_slice, with both labels
            other => key_of(other).map(|k| change_of(&k)),
        };
        let changed = self.apply_inner(obj);
        if let (true, Some(c)) = (changed, change) {
            self.record(c);
        }
        changed
    }

    fn apply_inner(&mut self, obj: Object) -> bool {
        match obj {
            Object::Ingress(o) => upsert(&mut self.ingresses, o, |a, b| a.spec == b.spec),
            Object::IngressClass(mut o) => {
                normalize(o.metadata_mut());
                let Some(name) = o.metadata.name.clone().filter(|n| !n.is_empty()) else {
                    return false;
                };
                match self.ingress_classes.get(&name) {
                    Some(old) if meta_eq(&old.metadata, &o.metadata) && old.spec == o.spec => false,
                    _ => {
                        self.ingress_classes.insert(name, Arc::new(o));
                        true
                    }
                }
            }
            Object::Service(o) => upsert(&mut self.services, o, |a, b| a.spec == b.spec),
            Object::EndpointSlice(o) => self.apply_slice(o),
            Object::Secret(o) => upsert(&mut self.secrets, o, |a, b| {
                a.data == b.data && a.string_data == b.string_data && a.type_ == b.type_
            }),
            Object::ConfigMap(o) => upsert(&mut self.config_maps, o, |a, b| {
                a.data == b.data && a.binary_data == b.binary_data
            }),
        }
    }

    /// Removes an object. Returns whether it was present.
    pub fn delete(&mut self, key: &Key) -> bool {
        let changed = self.delete_inner(key);
        if changed && key.kind != Kind::EndpointSlice {
            self.record(change_of(key));
        }
        changed
    }

    fn delete_inner(&mut self, key: &Key) -> bool {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        match key.kind {
            Kind::Ingress => self.ingresses.remove(ns, name).is_some(),
            Kind::IngressClass => self.ingress_classes.remove(name).is_some(),
            Kind::Service => self.services.remove(ns, name).is_some(),
            Kind::EndpointSlice => match self.endpoint_slices.remove(ns, name) {
                Some(old) => {
                    self.unindex_slice(ns, name, &old);
                    true
                }
                None => false,
            },
            Kind::Secret => self.secrets.remove(ns, name).is_some(),
            Kind::ConfigMap => self.config_maps.remove(ns, name).is_some(),
        }
    }

    /// Makes `objects` the complete set of `kind`. Returns whether anything changed.
    /// Objects in the list that are not of `kind` are applied anyway (a source bug, harmless).
    pub fn replace(&mut self, kind: Kind, objects: Vec<Object>) -> bool {
        let keep: std::collections::HashSet<Key> = objects
            .iter()
            .filter_map(key_of)
            .filter(|k| k.kind == kind)
            .collect();
        let existing: Vec<(String, String)> = match kind {
            Kind::Ingress => self.ingresses.keys(),
            Kind::IngressClass => self
                .ingress_classes
                .keys()
                .map(|n| (String::new(), n.clone()))
                .collect(),
            Kind::Service => self.services.keys(),
            Kind::EndpointSlice => self.endpoint_slices.keys(),
            Kind::Secret => self.secrets.keys(),
            Kind::ConfigMap => self.config_maps.keys(),
        };
        let mut changed = false;
        for (namespace, name) in existing {
            let key = Key {
                kind,
                namespace,
                name,
            };
            if !keep.contains(&key) {
                changed |= self.delete(&key);
            }
        }
        for obj in objects {
            changed |= self.apply(obj);
        }
        changed
    }

    /// Total number of cached objects.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All Ingresses.
    pub fn ingresses(&self) -> &NsMap<Ingress> {
        &self.ingresses
    }

    /// All IngressClasses by name.
    pub fn ingress_classes(&self) -> &BTreeMap<String, Arc<IngressClass>> {
        &self.ingress_classes
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services.get(namespace, name)
    }

    /// The EndpointSlices labelled with Service `namespace/service`, by slice name.
    pub fn slices_of(
        &self,
        namespace: &str,
        service: &str,
    ) -> Option<&BTreeMap<String, Arc<EndpointSlice>>> {
        self.slices_by_service.get(namespace)?.get(service)
    }

    /// The Secret `namespace/name`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Arc<Secret>> {
        self.secrets.get(namespace, name)
    }

    /// The ConfigMap `namespace/name`.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&Arc<ConfigMap>> {
        self.config_maps.get(namespace, name)
    }

    fn apply_slice(&mut self, mut o: EndpointSlice) -> bool {
        normalize(o.metadata_mut());
        let Some((ns, name)) = ns_name(&o.metadata) else {
            return false;
        };
        if let Some(old) = self.endpoint_slices.get(&ns, &name) {
            if meta_eq(&old.metadata, &o.metadata)
                && old.address_type == o.address_type
                && old.endpoints == o.endpoints
                && old.ports == o.ports
            {
                return false;
            }
        }
        let new = Arc::new(o);
        if let Some(old) = self.endpoint_slices.insert(&ns, &name, new.clone()) {
            self.unindex_slice(&ns, &name, &old);
        }
        if let Some(service) = service_label(&new.metadata) {
            self.record(Change::Service {
                namespace: ns.clone(),
                name: service.to_owned(),
            });
            self.slices_by_service
                .entry(ns)
                .or_default()
                .entry(service.to_owned())
                .or_default()
                .insert(name, new.clone());
        }
        true
    }

    fn unindex_slice(&mut self, ns: &str, name: &str, old: &EndpointSlice) {
        let Some(service) = service_label(&old.metadata) else {
            return;
        };
        self.record(Change::Service {
            namespace: ns.to_owned(),
            name: service.to_owned(),
        });
        let Some(by_ns) = self.slices_by_service.get_mut(ns) else {
            return;
        };
        if let Some(slices) = by_ns.get_mut(service) {
            slices.remove(name);
            if slices.is_empty() {
                by_ns.remove(service);
            }
        }
        if by_ns.is_empty() {
            self.slices_by_service.remove(ns);
        }
    }
}

/// Inserts a namespaced object unless it equals the cached one in everything translation reads.
fn upsert<T: Metadata<Ty = ObjectMeta>>(
    map: &mut NsMap<T>,
    mut obj: T,
    body_eq: impl Fn(&T, &T) -> bool,
) -> bool {
    normalize(obj.metadata_mut());
    let Some((ns, name)) = ns_name(obj.metadata()) else {
        return false;
    };
    if let Some(old) = map.get(&ns, &name) {
        if meta_eq(old.metadata(), obj.metadata()) && body_eq(old, &obj) {
            return false;
        }
    }
    map.insert(&ns, &name, Arc::new(obj));
    true
}

/// Drops what only costs memory: managed fields and kubectl's copy of the whole object.
fn normalize(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Metadata equality ignoring `resourceVersion`, `generation` and other server bookkeeping.
fn meta_eq(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.name == b.name
        && a.namespace == b.namespace
        && a.uid == b.uid
        && a.labels == b.labels
        && a.annotations == b.annotations
        && a.creation_timestamp == b.creation_timestamp
        && a.deletion_timestamp == b.deletion_timestamp
}

/// `(namespace, name)` of an object; `None` when it has no name.
pub(crate) fn ns_name(meta: &ObjectMeta) -> Option<(String, String)> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    Some((meta.namespace.clone().unwrap_or_default(), name.to_owned()))
}

fn change_of(key: &Key) -> Change {
    let (namespace, name) = (key.namespace.clone(), key.name.clone());
    match key.kind {
        Kind::Ingress => Change::Ingress { namespace, name },
        Kind::IngressClass => Change::IngressClass,
        // A slice is recorded under its Service's name, by the slice paths.
        Kind::Service | Kind::EndpointSlice => Change::Service { namespace, name },
        Kind::Secret => Change::Secret { namespace, name },
        Kind::ConfigMap => Change::ConfigMap { namespace, name },
    }
}

fn service_label(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// The store key of an object (cluster-scoped kinds get an empty namespace).
pub fn key_of(obj: &Object) -> Option<Key> {
    let (kind, meta) = match obj {
        Object::Ingress(o) => (Kind::Ingress, &o.metadata),
        Object::IngressClass(o) => (Kind::IngressClass, &o.metadata),
        Object::Service(o) => (Kind::Service, &o.metadata),
        Object::EndpointSlice(o) => (Kind::EndpointSlice, &o.metadata),
        Object::Secret(o) => (Kind::Secret, &o.metadata),
        Object::ConfigMap(o) => (Kind::ConfigMap, &o.metadata),
    };
    let name = meta.name.clone().filter(|n| !n.is_empty())?;
    let namespace = match kind {
        Kind::IngressClass => String::new(),
        _ => meta.namespace.clone().unwrap_or_default(),
    };
    Some(Key {
        kind,
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::Endpoint;

    fn slice(ns: &str, name: &str, service: Option<&str>, addr: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: service
                    .map(|s| BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), s.to_owned())])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![addr.into()],
                ..Default::default()
            }],
            ports: None,
        }
    }

    fn ingress(ns: &str, name: &str, rv: &str) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn resource_version_only_updates_change_nothing() {
        let mut cache = ObjectCache::default();
        assert!(cache.apply(Object::Ingress(ingress("a", "x", "1"))));
        assert!(!cache.apply(Object::Ingress(ingress("a", "x", "2"))));
        let mut changed = ingress("a", "x", "3");
        changed.spec = Some(Default::default());
        assert!(cache.apply(Object::Ingress(changed)));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn strips_managed_fields_and_last_applied_but_keeps_other_annotations() {
        let mut ing = ingress("a", "x", "1");
        ing.metadata.managed_fields = Some(vec![Default::default()]);
        ing.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED_ANNOTATION.to_owned(), "{...}".to_owned()),
            (
                "nginx.ingress.kubernetes.io/ssl-redirect".to_owned(),
                "false".to_owned(),
            ),
        ]));
        let mut cache = ObjectCache::default();
        cache.apply(Object::Ingress(ing));
        let stored = cache.ingresses().get("a", "x").expect("stored");
        assert!(stored.metadata.managed_fields.is_none());
        let ann = stored
            .metadata
            .annotations
            .as_ref()
            .expect("annotations kept");
        assert_eq!(ann.len(), 1);
        assert!(ann.contains_key("nginx.ingress.kubernetes.io/ssl-redirect"));
    }

    #[test]
    fn endpoint_slices_are_indexed_by_service_and_follow_relabels() {
        let mut cache = ObjectCache::default();
        cache.apply(Object::EndpointSlice(slice(
            "ns",
            "s1",
            Some("web"),
            "10.0.0.1",
        )));
        cache.apply(Object::EndpointSlice(slice(
            "ns",
            "s2",
            Some("web"),
            "10.0.0.2",
        )));
        cache.apply(Object::EndpointSlice(slice("ns", "s3", None, "10.0.0.3")));
        assert_eq!(cache.slices_of("ns", "web").map(BTreeMap::len), Some(2));
        cache.apply(Object::EndpointSlice(slice(
            "ns",
            "s2",
            Some("api"),
            "10.0.0.2",
        )));
        assert_eq!(cache.slices_of("ns", "web").map(BTreeMap::len), Some(1));
        assert_eq!(cache.slices_of("ns", "api").map(BTreeMap::len), Some(1));
        let key = Key {
            kind: Kind::EndpointSlice,
            namespace: "ns".into(),
            name: "s1".into(),
        };
        assert!(cache.delete(&key));
        assert!(!cache.delete(&key));
        assert!(cache.slices_of("ns", "web").is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replace_removes_what_is_not_listed() {
        let mut cache = ObjectCache::default();
        cache.apply(Object::Ingress(ingress("a", "x", "1")));
        cache.apply(Object::Ingress(ingress("a", "y", "1")));
        cache.apply(Object::EndpointSlice(slice(
            "a",
            "s",
            Some("web"),
            "10.0.0.1",
        )));
        assert!(cache.replace(Kind::Ingress, vec![Object::Ingress(ingress("a", "y", "2"))]));
        assert!(cache.ingresses().get("a", "x").is_none());
        assert!(cache.ingresses().get("a", "y").is_some());
        assert!(!cache.replace(Kind::Ingress, vec![Object::Ingress(ingress("a", "y", "3"))]));
        assert!(cache.replace(Kind::EndpointSlice, vec![]));
        assert!(cache.slices_of("a", "web").is_none());
    }

    #[test]
    fn changes_are_logged_for_incremental_consumers() {
        let mut cache = ObjectCache::default();
        assert_eq!(cache.changes_since(0), Some(&[][..]));
        cache.apply(Object::Ingress(ingress("a", "x", "1")));
        cache.apply(Object::Ingress(ingress("a", "x", "2"))); // no change, not logged
        cache.apply(Object::EndpointSlice(slice(
            "a",
            "s",
            Some("web"),
            "10.0.0.1",
        )));
        cache.apply(Object::EndpointSlice(slice(
            "a",
            "s",
            Some("api"),
            "10.0.0.1",
        )));
        let svc = |n: &str| Change::Service {
            namespace: "a".into(),
            name: n.into(),
        };
        let ing = Change::Ingress {
            namespace: "a".into(),
            name: "x".into(),
        };
        assert_eq!(cache.version(), 4);
        assert_eq!(
            cache.changes_since(0).expect("kept"),
            &[ing.clone(), svc("web"), svc("web"), svc("api")][..]
        );
        assert_eq!(cache.changes_since(3).expect("kept"), &[svc("api")][..]);
        cache.discard_changes_until(2);
        assert_eq!(cache.changes_since(1), None, "discarded");
        assert_eq!(cache.changes_since(2).map(<[Change]>::len), Some(2));
        let key = Key {
            kind: Kind::EndpointSlice,
            namespace: "a".into(),
            name: "s".into(),
        };
        cache.delete(&key);
        assert_eq!(cache.changes_since(4).expect("kept"), &[svc("api")][..]);
        assert_ne!(ObjectCache::default().id(), cache.id());
    }

    #[test]
    fn nameless_objects_are_ignored() {
        let mut cache = ObjectCache::default();
        assert!(!cache.apply(Object::Ingress(Ingress::default())));
        assert!(cache.is_empty());
    }
}
