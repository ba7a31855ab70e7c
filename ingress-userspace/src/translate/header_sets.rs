//! `proxy-set-headers` and `add-headers`, the controller ConfigMap keys that name another
//! ConfigMap whose entries are headers: set on every request to an upstream, or on every
//! answer to a client. Each entry is checked on its own; a bad one is reported and left out.
use crate::{config::NamespacedName, store::ObjectCache};

/// Names never taken from a header ConfigMap: they frame or route the message, and the proxy
/// sets them itself.
const REFUSED: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers of one ConfigMap, and the entries left out.
#[derive(Debug, Default)]
pub struct HeaderSet {
    /// `(name, value)`, lower-case names; an empty value removes the header.
    pub headers: Vec<(String, String)>,
    /// One message per entry left out.
    pub problems: Vec<String>,
}

/// The ConfigMap a key's value names: `namespace/name`, or `name` in `namespace` (the
/// controller ConfigMap's). Every namespace's ConfigMaps are watched, so any may be named.
pub fn reference(namespace: &str, value: &str) -> Result<NamespacedName, String> {
    match value.parse::<NamespacedName>() {
        Ok(nn) => Ok(nn),
        Err(_) if !value.is_empty() && !value.contains('/') => Ok(NamespacedName {
            namespace: namespace.to_owned(),
            name: value.to_owned(),
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads the ConfigMap `nn`; `Err` when it does not exist.
pub fn read(objects: &ObjectCache, nn: &NamespacedName) -> Result<HeaderSet, String> {
    let cm = objects
        .config_map(&nn.namespace, &nn.name)
        .ok_or_else(|| format!("ConfigMap {}/{} not found", nn.namespace, nn.name))?;
    let mut out = HeaderSet::default();
    for (name, value) in cm.data.iter().flatten() {
        match entry(name, value) {
            Ok(h) => out.headers.push(h),
            Err(m) => out.problems.push(format!("header {name:?}: {m}")),
        }
    }
    Ok(out)
}

/// The headers of ConfigMap `nn`, all or none: `Err` when it does not exist or an entry is
/// invalid, as ingress-nginx denies the location then (`auth-proxy-set-headers`).
pub fn all_or_none(
    objects: &ObjectCache,
    nn: &NamespacedName,
) -> Result<Vec<(String, String)>, String> {
    let set = read(objects, nn)?;
    match set.problems.first() {
        Some(problem) => Err(format!("ConfigMap {}/{}: {problem}", nn.namespace, nn.name)),
        None => Ok(set.headers),
    }
}

/// The headers of the `custom-headers` ConfigMap `nn`, as [`all_or_none`], and each named in
/// `allowed` (lower-case names).
pub fn custom(
    objects: &ObjectCache,
    nn: &NamespacedName,
    allowed: &[String],
) -> Result<Vec<(String, String)>, String> {
    let headers = all_or_none(objects, nn)?;
    match headers.iter().find(|(name, _)| !allowed.contains(name)) {
        Some((name, _)) => Err(format!(
            "ConfigMap {}/{}: header {name:?} is not in the controller ConfigMap's \
             global-allowed-response-headers",
            nn.namespace, nn.name
        )),
        None => Ok(headers),
    }
}

/// One entry as a header.
fn entry(name: &str, value: &str) -> Result<(String, String), String> {
    let name = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a header name".to_string())?;
    if REFUSED.contains(&name.as_str()) {
        return Err("set by the proxy itself".into());
    }
    let value = value.trim();
    if value.contains('$') {
        return Err(format!(
            "{value:?} holds an nginx variable; only literal values are supported"
        ));
    }
    http::HeaderValue::from_str(value).map_err(|_| format!("{value:?} is not a header value"))?;
    Ok((name.as_str().to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{source::Object, translate::testutil::mk_configmap};

    #[test]
    fn references_default_to_the_controller_namespace() {
        let nn = |ns: &str, name: &str| NamespacedName {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(reference("ingress", "ingress/h"), Ok(nn("ingress", "h")));
        assert_eq!(reference("ingress", "h"), Ok(nn("ingress", "h")));
        assert_eq!(reference("ingress", "other/h"), Ok(nn("other", "h")));
        assert!(reference("ingress", "").is_err());
        assert!(reference("ingress", "a/b/c").is_err());
    }

    #[test]
    fn entries_are_checked_one_by_one() {
        let mut objects = ObjectCache::default();
        objects.apply(Object::ConfigMap(mk_configmap(
            "ingress",
            "h",
            &[
                ("X-Frame-Options", " DENY "),
                ("Server", ""),
                ("Host", "evil.example"),
                ("Bad Name", "x"),
                ("X-Var", "$remote_addr"),
                ("X-Ctl", "a\u{1}b"),
            ],
        )));
        let nn = reference("ingress", "h").expect("reference");
        let set = read(&objects, &nn).expect("found");
        assert_eq!(
            set.headers,
            [
                ("server".to_string(), String::new()),
                ("x-frame-options".to_string(), "DENY".to_string()),
            ]
        );
        assert_eq!(set.problems.len(), 4, "{:?}", set.problems);
        assert!(set.problems.iter().any(|p| p.contains("nginx variable")));
        let missing = reference("ingress", "none").expect("reference");
        assert!(read(&objects, &missing).is_err());
    }
}
