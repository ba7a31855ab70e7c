//! What the translator remembers about each Ingress and each host between translations.
use std::{
    cmp::Ordering,
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::{api::networking::v1::Ingress, apimachinery::pkg::apis::meta::v1::Time};

use super::{annotations::Annotations, ingress::ParsedIngress, Diagnostic};
use crate::snapshot::{
    BackendProtocol, BasicAuth, ClientAuth, CustomHeaders, ExternalAuth, RouteTarget, Upstream,
    UpstreamTls, VirtualHost,
};

/// Precedence between Ingresses, as ingress-nginx's `sortIngressSlice`: oldest first (no
/// timestamp counts as oldest); on equal timestamps, `namespace/name` DESCENDING comes
/// first. It decides path conflicts, TLS host conflicts and fallbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeKey {
    pub created: Option<Time>,
    pub namespace: String,
    pub name: String,
}

impl AgeKey {
    /// The bytes of `namespace/name`, the string ingress-nginx compares (without allocating).
    fn qualified(&self) -> impl Iterator<Item = u8> + '_ {
        self.namespace
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(self.name.bytes())
    }
}

impl Ord for AgeKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.created
            .cmp(&other.created)
            // Reversed on purpose: ingress-nginx lets the greater "ns/name" win ties.
            .then_with(|| other.qualified().cmp(self.qualified()))
    }
}

impl PartialOrd for AgeKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What an Ingress is to this controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another controller's: ignored completely.
    Foreign,
    /// Ours, but not applied (a canary or passthrough Ingress with an invalid annotation).
    Rejected,
    /// Ours: host/path routes.
    Main,
    /// Ours, `canary: "true"`: attaches to main routes.
    Canary,
    /// Ours, `ssl-passthrough: "true"`: SNI routes.
    Passthrough,
}

/// One Ingress as last translated.
#[derive(Debug)]
pub struct IngressState {
    pub object: Arc<Ingress>,
    pub parsed: Arc<ParsedIngress>,
    pub age: AgeKey,
    pub role: Role,
    /// `Foreign`, and another controller's class claims it (`ClassFilter::claimed_elsewhere`).
    pub claimed_elsewhere: bool,
    /// Users of the `auth-secret`, when it resolved.
    pub auth: Option<Arc<BasicAuth>>,
    /// `auth-tls-*` with its CA Secret resolved (`denied` when it did not resolve).
    pub client_auth: Option<Arc<ClientAuth>>,
    /// `proxy-ssl-*` with its Secret resolved; an empty `name` stands for each Service's own.
    pub proxy_ssl: Option<Arc<UpstreamTls>>,
    /// Upstreams given `proxy_ssl`, by the resolver's upstream they were made from, so that an
    /// unchanged upstream keeps its `Arc` (and its routes theirs).
    pub tls_upstreams: Vec<(Arc<Upstream>, Arc<Upstream>)>,
    /// The Secrets its annotations name (`auth-secret`, `auth-tls-secret`), resolved or not,
    /// to re-translate it when one changes.
    pub secrets: Vec<(String, String)>,
    /// The ConfigMaps `custom-headers` and `auth-proxy-set-headers` name, found or not,
    /// likewise.
    pub config_maps: Vec<(String, String)>,
    /// `custom-headers` with its ConfigMap read (`denied` when it could not be used).
    pub custom_headers: Option<Arc<CustomHeaders>>,
    /// `auth-url` with the `auth-proxy-set-headers` ConfigMap read (`denied` when it could
    /// not be used); `None` leaves the annotations' own.
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// Its own diagnostics (parse notes, rejection), when it is ours.
    pub diags: Vec<Diagnostic>,
    /// Route targets by slot (see `ParsedPath::slot`), reused between translations.
    pub slots: Vec<Option<Arc<RouteTarget>>>,
}

impl IngressState {
    /// Its valid annotations (`None` when rejected for them).
    pub fn annotations(&self) -> Option<&Annotations> {
        Some(&self.parsed.annotations)
    }

    /// Protocol of its upstreams.
    pub fn protocol(&self) -> BackendProtocol {
        self.annotations().map(|a| a.protocol).unwrap_or_default()
    }

    /// `service-upstream`: proxy to the Service's cluster IP instead of its pods.
    pub fn service_upstream(&self) -> bool {
        self.annotations().is_some_and(|a| a.service_upstream)
    }

    /// Namespace/name key.
    pub fn key(&self) -> (String, String) {
        (self.age.namespace.clone(), self.age.name.clone())
    }
}

/// Ingress states by namespace and name (nested so that lookups do not allocate).
#[derive(Debug, Default)]
pub struct IngressStates {
    map: HashMap<String, HashMap<String, IngressState>>,
}

impl IngressStates {
    /// The state of `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&IngressState> {
        self.map.get(namespace)?.get(name)
    }

    /// The state of `namespace/name`, mutably.
    pub fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut IngressState> {
        self.map.get_mut(namespace)?.get_mut(name)
    }

    /// Stores a state.
    pub fn insert(&mut self, st: IngressState) {
        let (ns, name) = st.key();
        self.map.entry(ns).or_default().insert(name, st);
    }

    /// Removes and returns the state of `namespace/name`.
    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<IngressState> {
        let by_ns = self.map.get_mut(namespace)?;
        let st = by_ns.remove(name)?;
        if by_ns.is_empty() {
            self.map.remove(namespace);
        }
        Some(st)
    }
}

/// One host as last translated.
#[derive(Debug, Default)]
pub struct HostState {
    /// Main Ingresses with a rule for this host.
    pub mains: BTreeSet<AgeKey>,
    /// Canary Ingresses with a rule for this host.
    pub canaries: BTreeSet<AgeKey>,
    /// The virtual host (its `tls` flag is set when the snapshot is assembled).
    pub built: Option<VirtualHost>,
    pub diags: Vec<Diagnostic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(created: Option<i64>, namespace: &str, name: &str) -> AgeKey {
        AgeKey {
            created: created.map(|s| {
                Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("valid timestamp"))
            }),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn age_key_orders_like_ingress_nginx() {
        // Each list is in precedence order (first wins).
        let table: &[&[AgeKey]] = &[
            // Oldest first; no timestamp counts as oldest.
            &[
                key(None, "z", "z"),
                key(Some(1), "z", "z"),
                key(Some(2), "a", "a"),
            ],
            // Equal timestamps: "ns/name" descending.
            &[key(Some(1), "ns", "b"), key(Some(1), "ns", "a")],
            &[key(Some(1), "b", "a"), key(Some(1), "a", "z")],
            &[key(None, "ns", "b"), key(None, "ns", "a")],
            // The joined string is compared, not (namespace, name): '/' sorts after '-'.
            &[key(Some(1), "a", "x"), key(Some(1), "a-b", "x")],
        ];
        for want in table {
            let mut got = want.to_vec();
            got.reverse();
            got.sort();
            assert_eq!(&got, want);
            let set: BTreeSet<AgeKey> = want.iter().cloned().collect();
            assert_eq!(set.into_iter().collect::<Vec<_>>(), want.to_vec());
        }
    }
}
