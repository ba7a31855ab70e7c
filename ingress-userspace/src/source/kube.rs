//! Kubernetes source: kube-rs watchers for every watched kind, relisting with backoff after errors.
//!
//! Each kind gets one `kube::runtime::watcher` over every namespace (Secrets leave out Helm
//! release and service-account token Secrets, by field selector). A watcher's
//! `Init .. InitDone` run, which is both the first list and every relist after a watch error,
//! becomes one [`SourceEvent::Replace`]; live changes become [`SourceEvent::Apply`] /
//! [`SourceEvent::Delete`]. Once every watcher has listed once, one [`SourceEvent::Synced`]
//! follows.
use std::{collections::BTreeMap, path::Path};

use futures_util::{stream::BoxStream, StreamExt};
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::{
        watcher::{self, Event},
        WatchStreamExt,
    },
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Key, Kind, Object, SourceEvent};

/// Annotation `kubectl apply` stores the whole previous manifest in; dropped to save memory.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Secrets never read but big or numerous enough to matter when every Secret is cached: Helm v3
/// keeps each release revision as a `helm.sh/release.v1` Secret (often 100 KB to 1 MB), and
/// service-account token Secrets add one per account. Only TLS and Opaque Secrets are read;
/// ingress-nginx filters Helm releases out the same way.
const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Building a Kubernetes client failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: KubeconfigError,
    },
    #[error("inferring Kubernetes config (not in a cluster, no usable kubeconfig): {0}")]
    Infer(#[from] InferConfigError),
    #[error("building Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Builds a client: from `kubeconfig` if given, else the in-cluster service account, else the
/// usual kubeconfig lookup (`$KUBECONFIG`, `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(e) => {
                debug!(error = %e, "no in-cluster config; trying kubeconfig");
                kube::Config::infer().await?
            }
        },
    };
    Ok(Client::try_from(config)?)
}

/// Removes what only costs memory: `managedFields` and kubectl's last-applied copy. Every other
/// annotation stays, since annotations are configuration.
pub fn strip_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Spawns [`run`] on the current runtime.
pub fn spawn(
    client: Client,
    tx: mpsc::Sender<SourceEvent>,
    namespace: Option<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, tx, namespace))
}

/// Watches every kind the translator needs and sends [`SourceEvent`]s until `tx` is closed;
/// with `namespace` (`--watch-namespace`), Ingresses, Services, EndpointSlices and Secrets of
/// that namespace only. Transient API errors are logged and retried with backoff; this never
/// gives up.
pub async fn run(client: Client, tx: mpsc::Sender<SourceEvent>, namespace: Option<String>) {
    let (kinds, streams): (Vec<Kind>, Vec<_>) =
        watches(&client, namespace.as_deref()).into_iter().unzip();
    let mut merger = Merger::new(kinds);
    let mut events = futures_util::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |r| (i, r))),
    );
    while let Some((stream, result)) = events.next().await {
        match result {
            Ok(event) => {
                for out in merger.handle(stream, event) {
                    if matches!(out, SourceEvent::Synced) {
                        info!("kubernetes source synced");
                    }
                    if tx.send(out).await.is_err() {
                        debug!("source receiver gone; stopping kubernetes watchers");
                        return;
                    }
                }
            }
            Err(error) => {
                let kind = merger.kind(stream);
                warn!(?kind, %error, "watch failed; relisting with backoff");
            }
        }
    }
}

type ObjectStream = BoxStream<'static, Result<Event<Object>, watcher::Error>>;

/// The API of a namespaced kind: every namespace's, or `namespace`'s only.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One watcher per kind, in a fixed order.
fn watches(client: &Client, namespace: Option<&str>) -> Vec<(Kind, ObjectStream)> {
    let all = watcher::Config::default();
    vec![
        (
            Kind::Ingress,
            watch(
                scoped::<Ingress>(client, namespace),
                all.clone(),
                Object::Ingress,
            ),
        ),
        (
            Kind::IngressClass,
            watch(
                Api::<IngressClass>::all(client.clone()),
                all.clone(),
                Object::IngressClass,
            ),
        ),
        (
            Kind::Service,
            watch(
                scoped::<Service>(client, namespace),
                all.clone(),
                Object::Service,
            ),
        ),
        (
            Kind::EndpointSlice,
            watch(
                scoped::<EndpointSlice>(client, namespace),
                all,
                Object::EndpointSlice,
            ),
        ),
        (
            Kind::Secret,
            watch(
                scoped::<Secret>(client, namespace),
                watcher::Config::default().fields(SECRET_FIELD_SELECTOR),
                Object::Secret,
            ),
        ),
        // Every namespace's: `custom-headers` names a ConfigMap in its Ingress's namespace,
        // and the controller ConfigMap's keys name more; which ones is known only once read.
        (
            Kind::ConfigMap,
            watch(
                Api::<ConfigMap>::all(client.clone()),
                watcher::Config::default(),
                Object::ConfigMap,
            ),
        ),
    ]
}

fn watch<K>(api: Api<K>, config: watcher::Config, wrap: fn(K) -> Object) -> ObjectStream
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |r| {
            r.map(|event| {
                let event = event.modify(|o| strip_metadata(o.meta_mut()));
                map_event(event, wrap)
            })
        })
        .boxed()
}

fn map_event<K>(event: Event<K>, wrap: fn(K) -> Object) -> Event<Object> {
    match event {
        Event::Apply(o) => Event::Apply(wrap(o)),
        Event::Delete(o) => Event::Delete(wrap(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(wrap(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// The store key of an object.
pub fn key_of(object: &Object) -> Key {
    let (kind, meta) = match object {
        Object::Ingress(o) => (Kind::Ingress, &o.metadata),
        Object::IngressClass(o) => (Kind::IngressClass, &o.metadata),
        Object::Service(o) => (Kind::Service, &o.metadata),
        Object::EndpointSlice(o) => (Kind::EndpointSlice, &o.metadata),
        Object::Secret(o) => (Kind::Secret, &o.metadata),
        Object::ConfigMap(o) => (Kind::ConfigMap, &o.metadata),
    };
    Key {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Per-watcher progress.
struct StreamState {
    kind: Kind,
    /// Objects of the list in progress (between `Init` and `InitDone`).
    listing: Option<Vec<Object>>,
    listed: bool,
    /// Current objects of this watcher, kept only when several watchers share a kind, so a
    /// relist of one can be sent as a `Replace` of the union.
    current: Option<BTreeMap<Key, Object>>,
}

/// Turns the watchers' events into [`SourceEvent`]s. Pure, so it is tested without I/O.
struct Merger {
    streams: Vec<StreamState>,
    synced: bool,
}

impl Merger {
    fn new(kinds: Vec<Kind>) -> Self {
        let shared = |k: Kind| kinds.iter().filter(|&&x| x == k).count() > 1;
        let streams = kinds
            .iter()
            .map(|&kind| StreamState {
                kind,
                listing: None,
                listed: false,
                current: shared(kind).then(BTreeMap::new),
            })
            .collect();
        Merger {
            streams,
            synced: false,
        }
    }

    fn kind(&self, stream: usize) -> Option<Kind> {
        self.streams.get(stream).map(|s| s.kind)
    }

    fn handle(&mut self, stream: usize, event: Event<Object>) -> Vec<SourceEvent> {
        let Some(state) = self.streams.get_mut(stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match event {
            Event::Init => state.listing = Some(Vec::new()),
            Event::InitApply(o) => match state.listing.as_mut() {
                Some(listing) => listing.push(o),
                // Not reachable with kube's watcher; an unbuffered object is still news.
                None => out.push(Self::apply(state, o)),
            },
            Event::InitDone => {
                let objects = state.listing.take().unwrap_or_default();
                state.listed = true;
                let kind = state.kind;
                let objects = match state.current.as_mut() {
                    None => objects,
                    Some(current) => {
                        *current = objects.into_iter().map(|o| (key_of(&o), o)).collect();
                        self.union(kind)
                    }
                };
                out.push(SourceEvent::Replace(kind, objects));
                if !self.synced && self.streams.iter().all(|s| s.listed) {
                    self.synced = true;
                    out.push(SourceEvent::Synced);
                }
            }
            Event::Apply(o) => out.push(Self::apply(state, o)),
            Event::Delete(o) => {
                let key = key_of(&o);
                if let Some(current) = state.current.as_mut() {
                    current.remove(&key);
                }
                out.push(SourceEvent::Delete(key));
            }
        }
        out
    }

    fn apply(state: &mut StreamState, o: Object) -> SourceEvent {
        if let Some(current) = state.current.as_mut() {
            current.insert(key_of(&o), o.clone());
        }
        SourceEvent::Apply(o)
    }

    /// All current objects of a kind watched by several watchers.
    fn union(&self, kind: Kind) -> Vec<Object> {
        self.streams
            .iter()
            .filter(|s| s.kind == kind)
            .filter_map(|s| s.current.as_ref())
            .flat_map(|c| c.values().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(ns: &str, name: &str) -> Object {
        Object::ConfigMap(ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn svc(name: &str) -> Object {
        Object::Service(Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(objects: &[Object]) -> Vec<String> {
        objects.iter().map(|o| key_of(o).name).collect()
    }

    #[test]
    fn list_becomes_one_replace_and_synced_waits_for_every_kind() {
        let mut m = Merger::new(vec![Kind::Service, Kind::Secret]);
        assert!(m.handle(0, Event::Init).is_empty());
        assert!(m.handle(0, Event::InitApply(svc("a"))).is_empty());
        assert!(m.handle(0, Event::InitApply(svc("b"))).is_empty());
        let out = m.handle(0, Event::InitDone);
        assert_eq!(out.len(), 1, "{out:?}");
        match &out[0] {
            SourceEvent::Replace(Kind::Service, objects) => assert_eq!(names(objects), ["a", "b"]),
            other => panic!("unexpected {other:?}"),
        }
        m.handle(1, Event::Init);
        let out = m.handle(1, Event::InitDone);
        assert!(
            matches!(out.as_slice(), [SourceEvent::Replace(Kind::Secret, v), SourceEvent::Synced] if v.is_empty())
        );
        // A relist later is a Replace again, never a second Synced.
        m.handle(0, Event::Init);
        let out = m.handle(0, Event::InitDone);
        assert!(matches!(out.as_slice(), [SourceEvent::Replace(Kind::Service, v)] if v.is_empty()));
    }

    #[test]
    fn restarted_list_discards_the_partial_one() {
        let mut m = Merger::new(vec![Kind::Service]);
        m.handle(0, Event::Init);
        m.handle(0, Event::InitApply(svc("stale")));
        m.handle(0, Event::Init);
        m.handle(0, Event::InitApply(svc("fresh")));
        let out = m.handle(0, Event::InitDone);
        match &out[0] {
            SourceEvent::Replace(_, objects) => assert_eq!(names(objects), ["fresh"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn apply_and_delete_pass_through_with_keys() {
        let mut m = Merger::new(vec![Kind::Service]);
        assert!(matches!(
            m.handle(0, Event::Apply(svc("a"))).as_slice(),
            [SourceEvent::Apply(_)]
        ));
        let out = m.handle(0, Event::Delete(svc("a")));
        match out.as_slice() {
            [SourceEvent::Delete(key)] => assert_eq!(
                key,
                &Key {
                    kind: Kind::Service,
                    namespace: "default".into(),
                    name: "a".into()
                }
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            m.handle(7, Event::InitDone).is_empty(),
            "unknown stream is ignored"
        );
    }

    #[test]
    fn shared_kind_relist_replaces_with_the_union() {
        let mut m = Merger::new(vec![Kind::ConfigMap, Kind::ConfigMap]);
        m.handle(0, Event::Init);
        m.handle(0, Event::InitApply(cm("a", "tcp")));
        m.handle(0, Event::InitDone);
        m.handle(1, Event::Init);
        m.handle(1, Event::InitApply(cm("b", "udp")));
        let out = m.handle(1, Event::InitDone);
        match out.as_slice() {
            [SourceEvent::Replace(Kind::ConfigMap, v), SourceEvent::Synced] => {
                assert_eq!(names(v), ["tcp", "udp"])
            }
            other => panic!("unexpected {other:?}"),
        }
        m.handle(1, Event::Delete(cm("b", "udp")));
        m.handle(0, Event::Init);
        m.handle(0, Event::InitApply(cm("a", "tcp")));
        let out = m.handle(0, Event::InitDone);
        match out.as_slice() {
            [SourceEvent::Replace(Kind::ConfigMap, v)] => assert_eq!(names(v), ["tcp"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn strips_only_managed_fields_and_last_applied() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![Default::default()]),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.to_string(), "{}".to_string()),
                (
                    "nginx.ingress.kubernetes.io/rewrite-target".to_string(),
                    "/".to_string(),
                ),
            ])),
            ..Default::default()
        };
        strip_metadata(&mut meta);
        assert!(meta.managed_fields.is_none());
        let annotations = meta.annotations.unwrap_or_default();
        assert_eq!(annotations.len(), 1);
        assert!(annotations.contains_key("nginx.ingress.kubernetes.io/rewrite-target"));
    }
}
