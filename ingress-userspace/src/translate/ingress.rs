//! Phase one of translation: everything an Ingress says on its own, before any other object
//! is looked at. The translator caches the result per Ingress object, so an unchanged Ingress
//! is parsed once, not on every snapshot.
use k8s_openapi::{
    api::networking::v1::{Ingress, IngressBackend},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{
    annotations::{self, AnnotationError, Annotations},
    backends::{BackendRef, PortRef},
    hosts::parse_host,
    paths::parse_path,
    reason,
    state::AgeKey,
    Diagnostic,
};
use crate::snapshot::{HostMatch, ObjectRef, PathMatch};
use std::collections::BTreeMap;

/// Legacy class annotation, consulted only when `spec.ingressClassName` is unset.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// How an Ingress names its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassRef {
    /// `kubernetes.io/ingress.class` annotation, only when `spec.ingressClassName` is unset
    /// (as in ingress-nginx, where the class name alone decides when it is set).
    Annotation(String),
    /// `spec.ingressClassName` (takes precedence over the annotation).
    Name(String),
    /// Neither: only the default class may claim it.
    Unset,
}

/// One Ingress, validated.
#[derive(Clone, Debug)]
pub struct ParsedIngress {
    pub origin: ObjectRef,
    pub created: Option<Time>,
    pub class: ClassRef,
    /// What the annotations say; when some are invalid ([`Self::rejected`]), what the valid
    /// ones say.
    pub annotations: Annotations,
    /// Why its annotations were rejected: it must not be applied as written.
    pub rejected: Option<AnnotationError>,
    /// Parts that were dropped (and rejected snippets), reported if the Ingress is ours.
    pub notes: Vec<Diagnostic>,
    pub rules: Vec<ParsedRule>,
    /// Whether `spec.rules` had entries before invalid ones were dropped: only an Ingress
    /// without any may give the catch-all default backend (as in ingress-nginx).
    pub has_rules: bool,
    pub default_backend: Option<BackendRef>,
    pub tls: Vec<ParsedTls>,
}

/// One `spec.rules[]` entry.
#[derive(Clone, Debug)]
pub struct ParsedRule {
    pub host: HostMatch,
    pub paths: Vec<ParsedPath>,
}

/// One valid path of a rule.
#[derive(Clone, Debug)]
pub struct ParsedPath {
    pub path: PathMatch,
    pub backend: BackendRef,
    /// Position among all paths of the Ingress, from 1 (0 is the default backend): where
    /// its route target is kept between translations.
    pub slot: usize,
    /// The path and `pathType` as written: a canary attaches to a main rule written the
    /// same, as in ingress-nginx, whatever each Ingress's own annotations make of it.
    pub written: (String, String),
}

/// One `spec.tls[]` entry.
#[derive(Clone, Debug)]
pub struct ParsedTls {
    pub secret: Option<String>,
    pub hosts: Vec<HostMatch>,
}

impl ParsedIngress {
    /// The path and `pathType` of the path in `slot`, as written.
    pub fn written(&self, slot: usize) -> Option<&(String, String)> {
        self.rules
            .iter()
            .flat_map(|r| &r.paths)
            .find(|p| p.slot == slot)
            .map(|p| &p.written)
    }

    /// Names of the Services this Ingress routes to (same namespace), sorted, unique.
    pub fn services(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| r.paths.iter().map(|p| p.backend.service.as_str()))
            .chain(self.default_backend.iter().map(|b| b.service.as_str()))
            .chain(self.annotations.default_backend.as_deref())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Hosts of its rules, unique, in rule order.
    pub fn hosts(&self) -> Vec<&HostMatch> {
        let mut out: Vec<&HostMatch> = Vec::new();
        for r in &self.rules {
            if !out.contains(&&r.host) {
                out.push(&r.host);
            }
        }
        out
    }

    /// Its precedence among Ingresses (see [`AgeKey`]).
    pub fn age_key(&self) -> AgeKey {
        AgeKey {
            created: self.created.clone(),
            namespace: self.origin.namespace.clone(),
            name: self.origin.name.clone(),
        }
    }
}

/// Parses an Ingress, with `defaults` for the annotations it does not set.
pub fn parse(ing: &Ingress, defaults: &annotations::Defaults) -> ParsedIngress {
    let meta = &ing.metadata;
    let origin = ObjectRef {
        kind: "Ingress",
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    let spec = ing.spec.as_ref();
    let class = match (
        spec.and_then(|s| s.ingress_class_name.as_ref()),
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)),
    ) {
        (Some(n), _) => ClassRef::Name(n.clone()),
        (None, Some(a)) => ClassRef::Annotation(a.clone()),
        (None, None) => ClassRef::Unset,
    };
    let mut out = ParsedIngress {
        origin: origin.clone(),
        created: meta.creation_timestamp.clone(),
        class,
        annotations: Annotations::default(),
        rejected: None,
        notes: Vec::new(),
        rules: Vec::new(),
        has_rules: spec
            .and_then(|s| s.rules.as_ref())
            .is_some_and(|r| !r.is_empty()),
        default_backend: None,
        tls: Vec::new(),
    };
    let parsed = annotations::parse(&origin.namespace, meta.annotations.as_ref(), defaults);
    for key in parsed.rejected_snippets {
        out.notes.push(Diagnostic::new(
            origin.clone(),
            reason::SNIPPET_REJECTED,
            format!("annotation {key} ignored: snippets are not supported"),
        ));
    }
    if !parsed.unread.is_empty() {
        out.notes.push(Diagnostic::new(
            origin.clone(),
            reason::ANNOTATION_IGNORED,
            format!(
                "annotations not used (unknown to ingressd, or without effect with the \
                 others given): {}",
                parsed.unread.join(", ")
            ),
        ));
    }
    let ann = match parsed.result {
        Ok(a) => a,
        Err(e) => {
            let valid = without_invalid(&origin.namespace, meta.annotations.as_ref(), defaults, &e);
            out.rejected = Some(e);
            valid
        }
    };
    let Some(spec) = spec else {
        out.annotations = ann;
        return out;
    };
    let mut note = |reason: &'static str, message: String| {
        out.notes
            .push(Diagnostic::new(origin.clone(), reason, message));
    };
    if let Some(b) = &spec.default_backend {
        match parse_backend(b) {
            Ok(b) => out.default_backend = Some(b),
            Err((r, m)) => note(r, format!("spec.defaultBackend: {m}")),
        }
    }
    let mut slots = 0;
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match parse_host(rule.host.as_deref().unwrap_or("")) {
            Ok(h) => h,
            Err(m) => {
                note(
                    reason::INVALID_HOST,
                    format!("spec.rules[{i}] dropped: {m}"),
                );
                continue;
            }
        };
        let mut paths = Vec::new();
        for (j, p) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
            let where_ = format!("spec.rules[{i}].http.paths[{j}]");
            let path = match parse_path(p.path.as_deref(), &p.path_type, ann.use_regex) {
                Ok(path) => path,
                Err(m) => {
                    note(reason::INVALID_PATH, format!("{where_} dropped: {m}"));
                    continue;
                }
            };
            match parse_backend(&p.backend) {
                Ok(backend) => {
                    slots += 1;
                    paths.push(ParsedPath {
                        path,
                        backend,
                        slot: slots,
                        written: (p.path.clone().unwrap_or_default(), p.path_type.clone()),
                    });
                }
                Err((r, m)) => note(r, format!("{where_} dropped: {m}")),
            }
        }
        out.rules.push(ParsedRule { host, paths });
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        let mut hosts = Vec::new();
        for h in tls.hosts.iter().flatten() {
            match parse_host(h) {
                Ok(HostMatch::Any) => note(
                    reason::INVALID_HOST,
                    format!("spec.tls[{i}]: empty host ignored"),
                ),
                Ok(host) => hosts.push(host),
                Err(m) => note(
                    reason::INVALID_HOST,
                    format!("spec.tls[{i}]: {m}; host ignored"),
                ),
            }
        }
        out.tls.push(ParsedTls {
            secret: tls.secret_name.clone().filter(|s| !s.is_empty()),
            hosts,
        });
    }
    out.annotations = ann;
    out
}

/// The annotations read with every invalid one left out, `first` being the first found.
/// The rules must still be read as the Ingress means them (`use-regex`, `canary`), to put
/// its routes in place answering 503 rather than leave its paths to other routes: whatever
/// was left out, the [`annotations::Intent`] of all of them holds.
fn without_invalid(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    defaults: &annotations::Defaults,
    first: &AnnotationError,
) -> Annotations {
    let mut valid = valid_rest(namespace, annotations, defaults, first);
    let meant = annotations::intent(namespace, annotations, defaults);
    valid.use_regex |= meant.regex;
    valid.passthrough |= meant.passthrough;
    if meant.canary && valid.canary.is_none() {
        // A canary that selects nothing: a rejected canary is not applied anyway.
        valid.canary = Some(annotations::CanaryConfig::selecting_nothing());
    }
    valid
}

/// The annotations that parse once the invalid ones are removed one by one; none when an
/// error names a key the Ingress lacks (`auth-secret` missing beside `auth-type`).
fn valid_rest(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    defaults: &annotations::Defaults,
    first: &AnnotationError,
) -> Annotations {
    let mut left: BTreeMap<String, String> = annotations.cloned().unwrap_or_default();
    let mut bad = first.key.clone();
    // Each round removes one key, so this ends within the annotation count.
    for _ in 0..=left.len() {
        if left.remove(&bad).is_none() {
            break;
        }
        match annotations::parse(namespace, Some(&left), defaults).result {
            Ok(a) => return a,
            Err(e) => bad = e.key,
        }
    }
    Annotations::default()
}

fn parse_backend(b: &IngressBackend) -> Result<BackendRef, (&'static str, String)> {
    if b.resource.is_some() {
        return Err((
            reason::UNSUPPORTED_BACKEND,
            "resource backends are not supported".into(),
        ));
    }
    let Some(svc) = &b.service else {
        return Err((reason::INVALID_BACKEND, "backend names no service".into()));
    };
    if svc.name.is_empty() {
        return Err((
            reason::INVALID_BACKEND,
            "backend service has no name".into(),
        ));
    }
    let port = match svc.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
        Some((Some(n), _)) if (1..=65535).contains(&n) => PortRef::Number(n),
        Some((None, Some(name))) if !name.is_empty() => PortRef::Name(name.to_owned()),
        _ => {
            return Err((
                reason::INVALID_BACKEND,
                format!(
                    "service {}: port needs a number in 1..=65535 or a name",
                    svc.name
                ),
            ))
        }
    };
    Ok(BackendRef {
        service: svc.name.clone(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::testutil::*;

    fn parse_plain(ing: &Ingress) -> ParsedIngress {
        parse(ing, &Default::default())
    }

    #[test]
    fn class_reference_precedence() {
        let p = parse_plain(&mk_ingress("ns", "a").class("x").build());
        assert_eq!(p.class, ClassRef::Name("x".into()));
        let p = parse_plain(
            &mk_ingress("ns", "a")
                .class("x")
                .raw_annotation(LEGACY_CLASS_ANNOTATION, "y")
                .build(),
        );
        // The class name alone decides when it is set.
        assert_eq!(p.class, ClassRef::Name("x".into()));
        let p = parse_plain(
            &mk_ingress("ns", "a")
                .no_class()
                .raw_annotation(LEGACY_CLASS_ANNOTATION, "y")
                .build(),
        );
        assert_eq!(p.class, ClassRef::Annotation("y".into()));
        let p = parse_plain(&mk_ingress("ns", "a").no_class().build());
        assert_eq!(p.class, ClassRef::Unset);
    }

    #[test]
    fn bad_parts_are_dropped_with_notes() {
        let ing = mk_ingress("ns", "a")
            .host("bad host")
            .path("/", "Prefix", "svc", 80)
            .host("ok.example")
            .path("nope", "Prefix", "svc", 80)
            .path("/x", "Weird", "svc", 80)
            .path("/y", "Prefix", "svc", 0)
            .path("/z", "Prefix", "svc", "http")
            .resource_path("/r")
            .build();
        let p = parse_plain(&ing);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].paths.len(), 1);
        assert_eq!(
            p.rules[0].paths[0].backend.port,
            PortRef::Name("http".into())
        );
        let reasons: Vec<&str> = p.notes.iter().map(|d| d.reason).collect();
        assert_eq!(
            reasons,
            vec![
                reason::INVALID_HOST,
                reason::INVALID_PATH,
                reason::INVALID_PATH,
                reason::INVALID_BACKEND,
                reason::UNSUPPORTED_BACKEND
            ]
        );
        assert!(
            p.notes[0].message.contains("bad host"),
            "{}",
            p.notes[0].message
        );
    }

    #[test]
    fn invalid_annotation_rejects_everything() {
        let p = parse_plain(
            &mk_ingress("ns", "a")
                .annotation("proxy-body-size", "huge")
                .host("a.example")
                .path("/", "Prefix", "s", 80)
                .build(),
        );
        let e = p.rejected.expect("rejected");
        assert!(
            e.key.ends_with("proxy-body-size") && e.value == "huge",
            "{e:?}"
        );
        // The rules are still read, to stand in place answering 503.
        assert_eq!(p.rules.len(), 1);
    }
}
