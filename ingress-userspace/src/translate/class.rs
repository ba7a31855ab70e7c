//! Which Ingresses are ours.
//!
//! As in ingress-nginx (`GetIngressClass`): when `spec.ingressClassName` is set it alone
//! decides, and the Ingress is ours when it names an IngressClass whose `spec.controller` is
//! `Settings::controller_name`. Only when it is unset is the legacy
//! `kubernetes.io/ingress.class` annotation consulted: the Ingress is then ours when the
//! annotation equals `Settings::ingress_class` exactly (not just any of our IngressClass
//! names). With neither, the Ingress is ours when one of our IngressClasses is the cluster
//! default.
//!
//! An Ingress that is not ours can still be *claimed elsewhere*: its class is another
//! controller's, so its status is that controller's to write, even when it lists the same
//! addresses as ours (two controllers on the same nodes, as during a migration).
use std::collections::HashSet;

use super::ingress::ClassRef;
use crate::{config::Settings, store::ObjectCache};

/// Annotation marking the default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The class filter for one translation.
#[derive(Debug)]
pub struct ClassFilter<'a> {
    ours: HashSet<&'a str>,
    default_is_ours: bool,
    /// IngressClasses of other controllers.
    others: HashSet<&'a str>,
    /// Another controller's IngressClass is the cluster default.
    default_is_other: bool,
    legacy: &'a str,
    /// `--ingress-class-by-name`.
    by_name: bool,
}

impl<'a> ClassFilter<'a> {
    /// Reads our IngressClasses from the cache.
    pub fn new(objects: &'a ObjectCache, settings: &'a Settings) -> Self {
        let mut ours = HashSet::new();
        let mut others = HashSet::new();
        let mut default_is_ours = false;
        let mut default_is_other = false;
        for (name, class) in objects.ingress_classes() {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            if controller == Some(settings.controller_name.as_str()) {
                ours.insert(name.as_str());
                default_is_ours |= is_default;
            } else if controller.is_some_and(|c| !c.is_empty()) {
                others.insert(name.as_str());
                default_is_other |= is_default;
            }
        }
        ClassFilter {
            ours,
            others,
            default_is_other,
            default_is_ours: default_is_ours || settings.without_class,
            legacy: &settings.ingress_class,
            by_name: settings.class_by_name,
        }
    }

    /// Whether an Ingress with this class reference is ours.
    pub fn owns(&self, class: &ClassRef) -> bool {
        match class {
            // ingress-nginx compares the annotation with `--ingress-class` only; the
            // IngressClass objects play no part here.
            ClassRef::Annotation(a) => !self.legacy.is_empty() && a == self.legacy,
            ClassRef::Name(n) => {
                self.ours.contains(n.as_str())
                    || (self.by_name && !self.legacy.is_empty() && n == self.legacy)
            }
            ClassRef::Unset => self.default_is_ours,
        }
    }

    /// Whether an Ingress that is not ours belongs to another controller: it names another
    /// controller's IngressClass, or a legacy class annotation other than ours (no object
    /// says who serves that, so someone is assumed to), or nothing while another
    /// controller's class is the default. A class that names no IngressClass is nobody's.
    pub fn claimed_elsewhere(&self, class: &ClassRef) -> bool {
        if self.owns(class) {
            return false;
        }
        match class {
            ClassRef::Annotation(a) => !a.is_empty(),
            ClassRef::Name(n) => self.others.contains(n.as_str()),
            ClassRef::Unset => self.default_is_other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{source::Object, translate::testutil::*};

    #[test]
    fn class_filter_table() {
        let objects = ObjectCache::from_objects([
            Object::IngressClass(mk_class("xdp", CONTROLLER, false)),
            Object::IngressClass(mk_class("xdp-internal", CONTROLLER, false)),
            Object::IngressClass(mk_class("nginx", "k8s.io/ingress-nginx", true)),
        ]);
        let s = settings();
        let f = ClassFilter::new(&objects, &s);
        let table = [
            (ClassRef::Name("xdp".into()), true),
            (ClassRef::Name("xdp-internal".into()), true),
            (ClassRef::Name("nginx".into()), false),
            (ClassRef::Name("missing".into()), false),
            (ClassRef::Annotation("xdp".into()), true),
            (ClassRef::Annotation("nginx".into()), false),
            // Only `Settings::ingress_class` counts, not every IngressClass of ours.
            (ClassRef::Annotation("xdp-internal".into()), false),
            (ClassRef::Annotation("missing".into()), false),
            // A foreign class is the default: class-less Ingresses are not ours.
            (ClassRef::Unset, false),
        ];
        for (class, want) in table {
            assert_eq!(f.owns(&class), want, "{class:?}");
        }
    }

    #[test]
    fn claimed_elsewhere_table() {
        let objects = ObjectCache::from_objects([
            Object::IngressClass(mk_class("xdp", CONTROLLER, false)),
            Object::IngressClass(mk_class("nginx", "k8s.io/ingress-nginx", true)),
        ]);
        let s = settings();
        let f = ClassFilter::new(&objects, &s);
        let table = [
            (ClassRef::Name("xdp".into()), false),
            (ClassRef::Name("nginx".into()), true),
            // No IngressClass of that name: nobody serves it.
            (ClassRef::Name("missing".into()), false),
            (ClassRef::Annotation("xdp".into()), false),
            (ClassRef::Annotation("nginx".into()), true),
            (ClassRef::Annotation("haproxy".into()), true),
            // ingress-nginx's default class takes the class-less ones.
            (ClassRef::Unset, true),
        ];
        for (class, want) in table {
            assert_eq!(f.claimed_elsewhere(&class), want, "{class:?}");
        }
        // With no default class, a class-less Ingress is nobody's.
        let objects = ObjectCache::from_objects([Object::IngressClass(mk_class(
            "nginx",
            "k8s.io/ingress-nginx",
            false,
        ))]);
        assert!(!ClassFilter::new(&objects, &s).claimed_elsewhere(&ClassRef::Unset));
    }

    #[test]
    fn default_class_claims_classless_ingresses() {
        let objects =
            ObjectCache::from_objects([Object::IngressClass(mk_class("xdp", CONTROLLER, true))]);
        let s = settings();
        assert!(ClassFilter::new(&objects, &s).owns(&ClassRef::Unset));
        let objects = ObjectCache::default();
        assert!(!ClassFilter::new(&objects, &s).owns(&ClassRef::Unset));
        assert!(!ClassFilter::new(&objects, &s).owns(&ClassRef::Name("xdp".into())));
    }

    #[test]
    fn the_two_flags_widen_what_is_ours() {
        // A foreign default class, and no IngressClass named after `--ingress-class`.
        let objects = ObjectCache::from_objects([Object::IngressClass(mk_class(
            "nginx",
            "k8s.io/ingress-nginx",
            true,
        ))]);
        let mut s = settings();
        s.without_class = true;
        let f = ClassFilter::new(&objects, &s);
        assert!(f.owns(&ClassRef::Unset), "--watch-ingress-without-class");
        assert!(!f.owns(&ClassRef::Name("xdp".into())));
        s.without_class = false;
        s.class_by_name = true;
        let f = ClassFilter::new(&objects, &s);
        assert!(!f.owns(&ClassRef::Unset));
        assert!(
            f.owns(&ClassRef::Name("xdp".into())),
            "--ingress-class-by-name"
        );
        assert!(!f.owns(&ClassRef::Name("nginx".into())));
    }
}
