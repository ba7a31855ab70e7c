//! Translation: store contents -> one [`Snapshot`] plus [`Diagnostic`]s. Pure and total: no
//! I/O, and one bad object never sinks the rest.
use crate::snapshot::{ObjectRef, Snapshot};

/// Something wrong with one object that was dropped from (or partly applied to) the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The object to attach the Kubernetes Event to (usually the Ingress).
    pub object: ObjectRef,
    /// CamelCase reason, as in Kubernetes Events (`BackendNotFound`, `InvalidAnnotation`, ...).
    pub reason: &'static str,
    pub message: String,
}

/// The result of one translation.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    pub snapshot: std::sync::Arc<Snapshot>,
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses this controller owns (class filter passed), sorted; status is written on these.
    pub owned_ingresses: Vec<ObjectRef>,
}
