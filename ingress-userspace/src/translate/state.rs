//! What the translator remembers about each Ingress and each host between translations.
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::{api::networking::v1::Ingress, apimachinery::pkg::apis::meta::v1::Time};

use super::{annotations::Annotations, ingress::ParsedIngress, Diagnostic};
use crate::snapshot::{BackendProtocol, BasicAuth, RouteTarget, VirtualHost};

/// Precedence between Ingresses: oldest first (no timestamp counts as oldest), then
/// namespace, then name.
pub type AgeKey = (Option<Time>, String, String);

/// What an Ingress is to this controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another controller's: ignored completely.
    Foreign,
    /// Ours, but not applied (invalid annotation, unusable auth Secret).
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
    /// Users of the `auth-secret`, when it resolved.
    pub auth: Option<Arc<BasicAuth>>,
    /// The `auth-secret` named (resolved or not), to re-translate when it changes.
    pub auth_secret: Option<(String, String)>,
    /// Its own diagnostics (parse notes, rejection), when it is ours.
    pub diags: Vec<Diagnostic>,
    /// Route targets by slot (see `ParsedPath::slot`), reused between translations.
    pub slots: Vec<Option<Arc<RouteTarget>>>,
}

impl IngressState {
    /// Its valid annotations (`None` when rejected for them).
    pub fn annotations(&self) -> Option<&Annotations> {
        self.parsed.annotations.as_ref().ok()
    }

    /// Protocol of its upstreams.
    pub fn protocol(&self) -> BackendProtocol {
        self.annotations().map(|a| a.protocol).unwrap_or_default()
    }

    /// Namespace/name key.
    pub fn key(&self) -> (String, String) {
        (self.age.1.clone(), self.age.2.clone())
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
