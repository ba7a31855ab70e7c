//! Ingress annotations -> [`RoutePolicy`] and the other per-Ingress switches.
//!
//! Annotations are read under `nginx.ingress.kubernetes.io/` (ingress-nginx compatibility) and
//! under our own prefix `ingress.example.dev/`; when both name the same annotation, ours wins
//! and the other is not looked at. Values are validated: one invalid value rejects the whole
//! Ingress rather than applying it half-way (its routes answer 503). Annotations under either prefix that nothing read
//! (unknown here, or without effect given the others) are listed, for a Warning, and otherwise
//! ignored. Annotations never execute anything: every `*-snippet` annotation is rejected and
//! ignored.
//!
//! One file per family; each `parse` reads its annotations into [`Annotations`].
use std::{
    borrow::Cow,
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

use thiserror::Error;

use crate::{
    config::NamespacedName,
    snapshot::{BackendProtocol, Pattern, RoutePolicy},
};

mod affinity;
pub(crate) mod auth;
mod canary;
pub(crate) mod client_cert;
mod cookie_rewrite;
mod cors;
mod custom_headers;
mod errors;
mod external_auth;
pub(crate) use external_auth::parse_time;
mod mirror;
mod passthrough;
pub(crate) mod proxy;
pub(crate) mod proxy_ssl;
mod ratelimit;
mod redirect;
mod rewrite;
mod server;
mod source_range;
mod upstream;

pub(crate) use source_range::parse_ranges;

/// ingress-nginx's annotation prefix.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";
/// Our own annotation prefix; takes precedence over [`NGINX_PREFIX`].
pub const OWN_PREFIX: &str = "ingress.example.dev/";

/// An annotation whose value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("annotation {key}: invalid value {value:?}: {reason}")]
pub struct AnnotationError {
    /// Full annotation key, with its prefix.
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// Everything an Ingress's annotations say, before the objects they name are resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Policy for every route of the Ingress; `basic_auth` is filled in later from `auth`.
    pub policy: RoutePolicy,
    /// `auth-type: basic`: where the users are.
    pub auth: Option<AuthRef>,
    /// `backend-protocol`.
    pub protocol: BackendProtocol,
    /// `use-regex` (also implied by `rewrite-target`, as in ingress-nginx).
    pub use_regex: bool,
    /// `canary: "true"` and its settings.
    pub canary: Option<CanaryConfig>,
    /// `ssl-passthrough`.
    pub passthrough: bool,
    /// `ingress.example.dev/proxy-protocol` (passthrough only).
    pub proxy_protocol: bool,
    /// `service-upstream`: one endpoint, the Service's cluster IP, instead of its pods.
    pub service_upstream: bool,
    /// `auth-tls-secret` and the rest of its family (not `off`).
    pub client_cert: Option<client_cert::ClientCertRef>,
    /// `server-alias`: more names for the Ingress's hosts.
    pub server_aliases: Vec<crate::snapshot::HostMatch>,
    /// `from-to-www-redirect`.
    pub www_redirect: bool,
    /// `proxy-ssl-secret` and its family.
    pub proxy_ssl: Option<proxy_ssl::ProxySslRef>,
    /// `default-backend`: a Service name in the Ingress's namespace.
    pub default_backend: Option<String>,
    /// `custom-headers`: a ConfigMap of response headers in the Ingress's namespace.
    pub custom_headers: Option<NamespacedName>,
    /// `auth-proxy-set-headers` (with `auth-url`): a ConfigMap of headers for the auth
    /// service.
    pub auth_proxy_set_headers: Option<NamespacedName>,
}

/// Values for annotations an Ingress does not set, from the controller ConfigMap (whose keys
/// of the same names are ingress-nginx's global defaults). Each was checked on its own when
/// the ConfigMap was read; an Ingress's own annotation replaces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Where the values come from, for messages (`ConfigMap ns/name`).
    pub source: String,
    /// By annotation name, without prefix.
    pub values: BTreeMap<String, String>,
    /// The `global-auth-*` keys, by the `auth-*` annotation name they stand for: used as a
    /// whole by an Ingress without its own `auth-url` and without `enable-global-auth: false`.
    pub global_auth: BTreeMap<String, String>,
    /// `retry-non-idempotent`: every Ingress's `proxy-next-upstream` also retries
    /// non-idempotent requests, as ingress-nginx appends `non_idempotent` to each.
    pub retry_non_idempotent: bool,
}

/// The htpasswd Secret of `auth-type: basic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRef {
    pub secret: NamespacedName,
    /// `auth-realm`.
    pub realm: String,
    /// `auth-secret-type: auth-map`: one key per user instead of an htpasswd file in `auth`.
    pub map: bool,
}

/// A canary Ingress's selection rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryConfig {
    /// `canary-weight`, 0..=`weight_total`.
    pub weight: u32,
    /// `canary-weight-total`, 100 unless set.
    pub weight_total: u32,
    /// `canary-by-header`.
    pub header: Option<String>,
    /// `canary-by-header-value`.
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`, compiled.
    pub header_pattern: Option<Pattern>,
    /// `canary-by-cookie`.
    pub cookie: Option<String>,
    /// `affinity-canary-behavior`: `sticky` (true, the default) or `legacy`.
    pub sticky: bool,
}

impl CanaryConfig {
    /// `canary: "true"` alone: a canary no request is sent to.
    pub fn selecting_nothing() -> Self {
        CanaryConfig {
            weight: 0,
            weight_total: 100,
            header: None,
            header_value: None,
            header_pattern: None,
            cookie: None,
            sticky: true,
        }
    }
}

/// The outcome of reading one Ingress's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub result: Result<Annotations, AnnotationError>,
    /// `*-snippet` annotation keys that were ignored.
    pub rejected_snippets: Vec<String>,
    /// Keys under our prefixes that nothing read: unknown here, or without effect given the
    /// others (`session-cookie-name` without `affinity`). Empty when `result` is an error.
    pub unread: Vec<String>,
}

type Family = fn(&Reader<'_>, &mut Annotations) -> Result<(), AnnotationError>;

const FAMILIES: &[Family] = &[
    redirect::parse,
    rewrite::parse,
    upstream::parse,
    proxy::parse,
    affinity::parse,
    canary::parse,
    source_range::parse,
    ratelimit::parse,
    cors::parse,
    auth::parse,
    client_cert::parse,
    external_auth::parse,
    errors::parse,
    passthrough::parse,
    server::parse,
    proxy_ssl::parse,
    cookie_rewrite::parse,
    mirror::parse,
    custom_headers::parse,
];

/// Reads the annotations of an Ingress in `namespace`, with `defaults` for those it does not
/// set.
pub fn parse(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    defaults: &Defaults,
) -> Parsed {
    let (reader, rejected_snippets) = Reader::new(namespace, annotations, defaults);
    let mut out = Annotations::default();
    let result = FAMILIES
        .iter()
        .try_for_each(|family| family(&reader, &mut out))
        .map(|()| out);
    let unread = match result {
        Ok(_) => reader.unread(),
        Err(_) => Vec::new(),
    };
    Parsed {
        result,
        rejected_snippets,
        unread,
    }
}

/// What an Ingress's annotations mean for how its paths are read and whether it is a canary
/// or passthrough Ingress, from their keys alone: an Ingress whose annotations do not all
/// parse keeps that meaning (a bad `rewrite-target` still makes its paths regexes, a bad
/// `canary` still makes it a canary), so failing closed never turns it into something else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Intent {
    pub regex: bool,
    pub canary: bool,
    pub passthrough: bool,
}

/// The [`Intent`] of `annotations`: a flag counts unless it reads as false.
pub fn intent(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    defaults: &Defaults,
) -> Intent {
    let (r, _) = Reader::new(namespace, annotations, defaults);
    let on = |name: &str| {
        r.by_name
            .get(name)
            .is_some_and(|v| parse_bool(v.value.trim()) != Ok(false))
    };
    Intent {
        regex: on("use-regex") || r.by_name.contains_key("rewrite-target"),
        canary: on("canary"),
        passthrough: on("ssl-passthrough"),
    }
}

/// One annotation as found on the object.
#[derive(Clone, Copy, Debug)]
struct Value<'a> {
    key: &'a str,
    value: &'a str,
    own: bool,
}

/// Annotation lookup by short name (without prefix), ours taking precedence, then the
/// defaults.
pub(crate) struct Reader<'a> {
    by_name: BTreeMap<&'a str, Value<'a>>,
    defaults: &'a Defaults,
    /// Whether the Ingress takes the global external authentication.
    global_auth: bool,
    namespace: &'a str,
    /// Names some family looked up.
    read: RefCell<BTreeSet<&'a str>>,
}

impl<'a> Reader<'a> {
    fn new(
        namespace: &'a str,
        annotations: Option<&'a BTreeMap<String, String>>,
        defaults: &'a Defaults,
    ) -> (Self, Vec<String>) {
        let mut by_name: BTreeMap<&str, Value<'_>> = BTreeMap::new();
        let mut rejected = Vec::new();
        for (key, value) in annotations.into_iter().flatten() {
            let (name, own) = if let Some(n) = key.strip_prefix(OWN_PREFIX) {
                (n, true)
            } else if let Some(n) = key.strip_prefix(NGINX_PREFIX) {
                (n, false)
            } else {
                continue;
            };
            if name.ends_with("-snippet") {
                rejected.push(key.clone());
                continue;
            }
            let v = Value { key, value, own };
            match by_name.get(name) {
                Some(existing) if existing.own => {}
                _ => {
                    by_name.insert(name, v);
                }
            }
        }
        // Its own `auth-url` replaces the global one entirely, as `enable-global-auth: false`
        // turns it off (a bad value is reported when the family reads it).
        let global_auth = !defaults.global_auth.is_empty()
            && !by_name.contains_key("auth-url")
            && by_name
                .get("enable-global-auth")
                .is_none_or(|v| parse_bool(v.value.trim()) != Ok(false));
        let reader = Reader {
            by_name,
            defaults,
            global_auth,
            namespace,
            read: RefCell::default(),
        };
        (reader, rejected)
    }

    /// Full keys of the annotations no family looked up.
    fn unread(&self) -> Vec<String> {
        let read = self.read.borrow();
        self.by_name
            .iter()
            .filter(|(name, _)| !read.contains(*name))
            .map(|(_, v)| v.key.to_owned())
            .collect()
    }

    /// Namespace of the Ingress being read.
    fn namespace(&self) -> &str {
        self.namespace
    }

    /// Parsed value under either prefix; a parse failure names the annotation and value.
    fn get<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, AnnotationError> {
        self.get_where(name, false, parse)
    }

    /// Like [`Reader::get`] but only under our own prefix.
    fn get_own<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, AnnotationError> {
        self.get_where(name, true, parse)
    }

    fn get_where<T>(
        &self,
        name: &str,
        own_only: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, AnnotationError> {
        let (name, key, value) = match self.by_name.get_key_value(name) {
            Some((name, v)) if v.own || !own_only => (*name, Cow::Borrowed(v.key), v.value),
            Some(_) => return Ok(None),
            None if own_only => return Ok(None),
            None => match self.default_value(name) {
                Some((name, key, value)) => (name, key, value),
                None => return Ok(None),
            },
        };
        self.read.borrow_mut().insert(name);
        parse(value.trim())
            .map(Some)
            .map_err(|reason| AnnotationError {
                key: key.into_owned(),
                value: value.to_owned(),
                reason,
            })
    }

    /// How a default is named in messages: the ConfigMap and its key.
    fn default_key(&self, key: &str) -> Cow<'a, str> {
        Cow::Owned(format!("{} key {key}", self.defaults.source))
    }

    /// The default for annotation `name`: a `global-auth-*` key when the Ingress takes the
    /// global authentication, else the key of the same name.
    fn default_value(&self, name: &str) -> Option<(&'a str, Cow<'a, str>, &'a str)> {
        let defaults: &'a Defaults = self.defaults;
        if self.global_auth {
            if let Some((n, v)) = defaults.global_auth.get_key_value(name) {
                return Some((
                    n.as_str(),
                    self.default_key(&format!("global-{n}")),
                    v.as_str(),
                ));
            }
        }
        defaults
            .values
            .get_key_value(name)
            .map(|(n, v)| (n.as_str(), self.default_key(n), v.as_str()))
    }

    /// Whether annotation `name` would come from the global external authentication.
    fn comes_from_global_auth(&self, name: &str) -> bool {
        self.global_auth
            && !self.by_name.contains_key(name)
            && self.defaults.global_auth.contains_key(name)
    }

    /// An error about annotation `name`, which is present, as given.
    fn error(&self, name: &str, reason: &str) -> AnnotationError {
        let (key, value) = match (self.by_name.get(name), self.default_value(name)) {
            (Some(v), _) => (v.key.to_owned(), v.value.to_owned()),
            (None, Some((_, key, value))) => (key.into_owned(), value.to_owned()),
            (None, None) => (format!("{NGINX_PREFIX}{name}"), String::new()),
        };
        AnnotationError {
            key,
            value,
            reason: reason.to_owned(),
        }
    }

    /// A boolean annotation.
    fn flag(&self, name: &str) -> Result<Option<bool>, AnnotationError> {
        self.get(name, parse_bool)
    }
}

/// Booleans as Go's `strconv.ParseBool` (what ingress-nginx uses) accepts them.
pub(crate) fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// An unsigned integer within `range`.
pub(crate) fn parse_in_range<T>(v: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let n: T = v
        .parse()
        .map_err(|_| format!("expected an integer in {}..={}", range.start(), range.end()))?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be in {}..={}", range.start(), range.end()))
    }
}

/// Rejects values that would break a header or a log line.
pub(crate) fn no_space_or_control(v: &str) -> Result<(), String> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace or control characters".into())
    } else {
        Ok(())
    }
}

/// Bounds a compiled annotation regex, as for `use-regex` paths: an annotation must not be
/// able to make every request run a huge automaton.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// An annotation's regex (Rust `regex` syntax, case-sensitive, unanchored), compiled.
pub(crate) fn compile_pattern(v: &str) -> Result<Pattern, String> {
    if v.is_empty() {
        return Err("must not be empty".to_string());
    }
    let regex = regex::RegexBuilder::new(v)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("not a valid regex: {e}"))?;
    Ok(Pattern {
        source: v.to_owned(),
        regex,
    })
}

/// `v` as an owned HTTP token, or why not (`what` it was meant to be).
pub(crate) fn parse_token(v: &str, what: &str) -> Result<String, String> {
    if is_token(v) {
        Ok(v.to_owned())
    } else {
        Err(format!("not a valid {what}"))
    }
}

/// An HTTP token (header names, cookie names).
pub(crate) fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Comma-separated header names, lower-cased (an empty list is allowed).
pub(crate) fn parse_header_names(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            if is_token(h) {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("{h:?} is not a header name"))
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Parses `(name, value)` pairs given under the ingress-nginx prefix.
    pub fn nginx(pairs: &[(&str, &str)]) -> Result<Annotations, AnnotationError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), (*v).to_owned()))
            .collect();
        parse("ns", Some(&map), &Defaults::default()).result
    }

    /// Asserts that every value is rejected for `name`, naming annotation and value.
    pub fn assert_rejects(name: &str, values: &[&str]) {
        for v in values {
            match nginx(&[(name, v)]) {
                Err(e) => {
                    assert_eq!(e.key, format!("{NGINX_PREFIX}{name}"));
                    assert_eq!(e.value, *v);
                    let text = e.to_string();
                    // The value is quoted (escaped) in the message.
                    assert!(
                        text.contains(name) && text.contains(&format!("{v:?}")),
                        "{text}"
                    );
                }
                Ok(a) => panic!("{name}: {v:?} accepted: {a:?}"),
            }
        }
    }

    /// Parses a single annotation that must be valid.
    pub fn ok(name: &str, value: &str) -> Annotations {
        nginx(&[(name, value)]).unwrap_or_else(|e| panic!("{name}={value:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{test_support::*, *};

    #[test]
    fn defaults_fill_in_and_are_named_as_their_configmap_key() {
        let defaults = Defaults {
            source: "ConfigMap ingress/ingressd".into(),
            values: BTreeMap::from([
                ("proxy-body-size".to_string(), "2k".to_string()),
                ("ssl-redirect".to_string(), "false".to_string()),
            ]),
            ..Default::default()
        };
        let map = BTreeMap::from([(format!("{NGINX_PREFIX}proxy-body-size"), "8k".to_string())]);
        let p = parse("ns", Some(&map), &defaults);
        let a = p.result.expect("valid");
        assert_eq!(
            a.policy.max_body_bytes,
            Some(8192),
            "the Ingress's own wins"
        );
        assert!(!a.policy.ssl_redirect, "the default fills in");
        assert!(p.unread.is_empty(), "defaults are never listed as unread");
        let bad = Defaults {
            values: BTreeMap::from([("proxy-body-size".to_string(), "lots".to_string())]),
            ..defaults
        };
        let e = parse("ns", None, &bad).result.expect_err("invalid");
        assert_eq!(e.key, "ConfigMap ingress/ingressd key proxy-body-size");
        assert_eq!(e.value, "lots");
    }

    #[test]
    fn retry_non_idempotent_applies_to_every_next_upstream_list() {
        let on = Defaults {
            retry_non_idempotent: true,
            ..Default::default()
        };
        let next = |map: Option<&BTreeMap<String, String>>, d: &Defaults| {
            parse("ns", map, d)
                .result
                .expect("valid")
                .policy
                .next_upstream
        };
        assert!(!next(None, &Defaults::default()).non_idempotent);
        assert!(next(None, &on).non_idempotent, "the default list");
        let own = BTreeMap::from([(
            format!("{NGINX_PREFIX}proxy-next-upstream"),
            "http_503".to_string(),
        )]);
        let n = next(Some(&own), &on);
        assert!(n.non_idempotent, "an Ingress's own list too");
        assert_eq!(n.statuses, [503]);
        assert!(!next(Some(&own), &Defaults::default()).non_idempotent);
    }

    #[test]
    fn own_prefix_wins_over_nginx() {
        let map = BTreeMap::from([
            (format!("{NGINX_PREFIX}limit-rps"), "nonsense".to_owned()),
            (format!("{OWN_PREFIX}limit-rps"), "7".to_owned()),
        ]);
        let a = parse("ns", Some(&map), &Defaults::default())
            .result
            .expect("valid");
        assert_eq!(a.policy.limit_rps, Some(7));
        // And the other way round: our invalid value is not rescued by a valid nginx one.
        let map = BTreeMap::from([
            (format!("{NGINX_PREFIX}limit-rps"), "7".to_owned()),
            (format!("{OWN_PREFIX}limit-rps"), "x".to_owned()),
        ]);
        let e = parse("ns", Some(&map), &Defaults::default())
            .result
            .expect_err("invalid");
        assert_eq!(e.key, format!("{OWN_PREFIX}limit-rps"));
    }

    #[test]
    fn snippets_are_rejected_and_ignored() {
        let map = BTreeMap::from([
            (
                format!("{NGINX_PREFIX}configuration-snippet"),
                "more_set_headers x;".to_owned(),
            ),
            (
                format!("{OWN_PREFIX}server-snippet"),
                "return 200;".to_owned(),
            ),
            (format!("{NGINX_PREFIX}ssl-redirect"), "false".to_owned()),
        ]);
        let p = parse("ns", Some(&map), &Defaults::default());
        let a = p.result.expect("rest still valid");
        assert!(!a.policy.ssl_redirect);
        assert_eq!(
            p.rejected_snippets,
            vec![
                format!("{OWN_PREFIX}server-snippet"),
                format!("{NGINX_PREFIX}configuration-snippet")
            ]
        );
    }

    #[test]
    fn unknown_and_foreign_annotations_are_ignored() {
        let map = BTreeMap::from([
            (format!("{NGINX_PREFIX}no-such-thing"), "???".to_owned()),
            ("example.com/limit-rps".to_owned(), "x".to_owned()),
        ]);
        let p = parse("ns", Some(&map), &Defaults::default());
        assert_eq!(p.result, Ok(Annotations::default()));
        assert!(p.rejected_snippets.is_empty());
        // Ours are listed; a foreign prefix is none of our business.
        assert_eq!(p.unread, vec![format!("{NGINX_PREFIX}no-such-thing")]);
        assert_eq!(
            parse("ns", None, &Defaults::default()).result,
            Ok(Annotations::default())
        );
    }

    #[test]
    fn annotations_nothing_read_are_listed() {
        let map = BTreeMap::from([
            (format!("{NGINX_PREFIX}proxy-buffering"), "on".to_owned()),
            (format!("{OWN_PREFIX}limit-rsp"), "5".to_owned()),
            // Read only with `affinity: cookie`: without it, it has no effect.
            (format!("{NGINX_PREFIX}session-cookie-name"), "s".to_owned()),
            // Ours only: the nginx-prefixed one means nothing here.
            (format!("{NGINX_PREFIX}proxy-protocol"), "true".to_owned()),
            (format!("{NGINX_PREFIX}ssl-redirect"), "false".to_owned()),
            // Shadowed by ours: not listed, ours was read.
            (format!("{NGINX_PREFIX}limit-rps"), "1".to_owned()),
            (format!("{OWN_PREFIX}limit-rps"), "2".to_owned()),
        ]);
        let p = parse("ns", Some(&map), &Defaults::default());
        assert_eq!(p.result.as_ref().map(|a| a.policy.limit_rps), Ok(Some(2)));
        assert_eq!(
            p.unread,
            vec![
                format!("{OWN_PREFIX}limit-rsp"),
                format!("{NGINX_PREFIX}proxy-buffering"),
                format!("{NGINX_PREFIX}proxy-protocol"),
                format!("{NGINX_PREFIX}session-cookie-name"),
            ]
        );
        // With `affinity: cookie` the cookie name is read.
        let mut with = map.clone();
        with.insert(format!("{NGINX_PREFIX}affinity"), "cookie".to_owned());
        let p = parse("ns", Some(&with), &Defaults::default());
        assert!(!p.unread.iter().any(|k| k.ends_with("session-cookie-name")));
        // An invalid value rejects the Ingress; nothing is listed then.
        with.insert(format!("{NGINX_PREFIX}limit-connections"), "x".to_owned());
        let p = parse("ns", Some(&with), &Defaults::default());
        assert!(p.result.is_err());
        assert!(p.unread.is_empty());
    }

    #[test]
    fn booleans_accept_go_forms() {
        for v in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(v), Ok(true));
        }
        for v in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(v), Ok(false));
        }
        for v in ["yes", "", "on", "2"] {
            assert!(parse_bool(v).is_err());
        }
    }

    #[test]
    fn values_are_trimmed() {
        assert_eq!(ok("limit-rps", " 5 ").policy.limit_rps, Some(5));
    }
}
