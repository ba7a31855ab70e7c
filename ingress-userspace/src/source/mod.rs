//! Sources of Kubernetes objects. Both emit the same [`SourceEvent`]s into the store; nothing
//! past the store knows which source an object came from.
pub mod external_names;
pub mod kube;
pub mod manifests;

use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};

/// One watched object, typed.
// Objects move once, source -> store; boxing would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Ingress),
    IngressClass(IngressClass),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
    ConfigMap(ConfigMap),
}

/// The kinds the store indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
}

/// Identity of an object in the store. Cluster-scoped kinds have an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// What a source tells the store.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum SourceEvent {
    /// Object added or modified.
    Apply(Object),
    /// Object deleted.
    Delete(Key),
    /// Every object of `kind` is exactly this list (initial list or relist after a watch
    /// error). Objects of that kind not listed are gone.
    Replace(Kind, Vec<Object>),
    /// The source has delivered its first complete view of every kind; until every source
    /// has said so, readiness stays false.
    Synced,
}
