//! Translation: store contents -> one [`Snapshot`] plus [`Diagnostic`]s. Pure and total: no
//! I/O, and one bad object never sinks the rest.
//!
//! [`translate`] is the function; [`Translator`] is the same function with memory: it keeps
//! what each Ingress and each host translated to, and redoes only what the changes logged by
//! the [`ObjectCache`] since its previous call affect, so a single endpoint change
//! re-translates in milliseconds. Its output is always equal to what [`translate`] gives.
//! Diagnostics are sorted (by object, reason, message) and unique.
use std::fmt;

use crate::{
    config::Settings,
    snapshot::{ObjectRef, Snapshot},
    store::ObjectCache,
};

pub mod annotations;
pub mod backends;
pub mod class;
pub mod global;
pub mod header_sets;
pub mod hosts;
pub mod http;
pub mod ingress;
pub mod l4;
pub mod log_format;
pub mod passthrough;
pub mod paths;
pub mod state;
pub mod tls;
mod translator;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use backends::STATIC_ENDPOINTS_ANNOTATION;
pub use translator::Translator;

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
    /// An ExternalName Service whose name did not resolve to a usable address.
    pub const EXTERNAL_NAME_UNRESOLVED: &str = "ExternalNameUnresolved";
    /// The same rule (or TLS host, canary, passthrough host) from an older Ingress wins.
    pub const RULE_CONFLICT: &str = "RuleConflict";
    /// A `spec.tls` Secret is missing or unusable; that certificate is dropped.
    pub const TLS_SECRET_INVALID: &str = "TlsSecretInvalid";
    /// An annotation value is invalid; the Ingress's routes answer 503 (a canary or
    /// passthrough Ingress is not applied).
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// A `*-snippet` annotation was ignored.
    pub const SNIPPET_REJECTED: &str = "SnippetRejected";
    /// Annotations under our prefixes that nothing read (unknown here, or without effect).
    pub const ANNOTATION_IGNORED: &str = "AnnotationIgnored";
    /// The `auth-secret` is missing or unusable; the Ingress's routes answer 503.
    pub const AUTH_SECRET_INVALID: &str = "AuthSecretInvalid";
    /// A `custom-headers` ConfigMap is missing or sets a header it may not.
    pub const CUSTOM_HEADERS_INVALID: &str = "CustomHeadersInvalid";
    /// The `auth-proxy-set-headers` ConfigMap is missing or holds an invalid header.
    pub const AUTH_HEADERS_INVALID: &str = "AuthProxySetHeadersInvalid";
    /// A canary rule has no main route to attach to.
    pub const CANARY_WITHOUT_MAIN_ROUTE: &str = "CanaryWithoutMainRoute";
    /// A passthrough rule without host or backend.
    pub const INVALID_PASSTHROUGH: &str = "InvalidPassthrough";
    /// A bad tcp/udp-services ConfigMap entry.
    pub const INVALID_L4_SERVICE: &str = "InvalidL4Service";
    /// Bad entries in a Service's static-endpoints annotation.
    pub const INVALID_ENDPOINTS: &str = "InvalidEndpoints";
    /// A controller ConfigMap key with a bad value; that key is ignored.
    pub const INVALID_CONFIG_KEY: &str = "InvalidConfigKey";
    /// Controller ConfigMap keys ingressd does not use.
    pub const CONFIG_KEY_IGNORED: &str = "ConfigKeyIgnored";
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
    /// Ingresses of other controllers' classes, sorted; their status is theirs, so it is
    /// never cleared even when it lists our addresses.
    pub claimed_elsewhere: Vec<ObjectRef>,
}

impl Translation {
    /// Same configuration, diagnostics and owned Ingresses (the generation is ignored).
    pub fn same_content(&self, other: &Translation) -> bool {
        self.snapshot.same_config(&other.snapshot)
            && self.diagnostics == other.diagnostics
            && self.owned_ingresses == other.owned_ingresses
            && self.claimed_elsewhere == other.claimed_elsewhere
    }
}

/// Translates the objects with the settings, from scratch.
pub fn translate(objects: &ObjectCache, settings: &Settings) -> Translation {
    Translator::new(settings.clone()).translate(objects)
}
