//! `custom-headers`: a ConfigMap in the Ingress's own namespace (`name` or `namespace/name`)
//! whose entries are set on every answer of its routes. The ConfigMap is read by the
//! translator ([`crate::translate::header_sets::custom`]), which also checks each header
//! against the controller ConfigMap's `global-allowed-response-headers`.
use super::{auth::parse_secret_ref, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let namespace = r.namespace().to_owned();
    a.custom_headers = r.get("custom-headers", |v| {
        let nn = parse_secret_ref(&namespace, v)
            .map_err(|_| "expected a ConfigMap name or namespace/name".to_string())?;
        if nn.namespace != namespace {
            return Err(format!(
                "the ConfigMap must be in the Ingress's namespace {namespace}"
            ));
        }
        Ok(nn)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::translate::annotations::{parse as parse_all, Defaults, NGINX_PREFIX};

    fn custom(v: &str) -> Result<Option<String>, String> {
        let map = BTreeMap::from([(format!("{NGINX_PREFIX}custom-headers"), v.to_owned())]);
        parse_all("web", Some(&map), &Defaults::default())
            .result
            .map(|a| {
                a.custom_headers
                    .map(|nn| format!("{}/{}", nn.namespace, nn.name))
            })
            .map_err(|e| e.reason)
    }

    #[test]
    fn the_configmap_is_in_the_ingress_namespace() {
        assert_eq!(custom("hdrs"), Ok(Some("web/hdrs".into())));
        assert_eq!(custom("web/hdrs"), Ok(Some("web/hdrs".into())));
        assert!(custom("kube-system/hdrs").is_err_and(|e| e.contains("namespace web")));
        assert!(custom("Bad Name").is_err());
        assert!(custom("").is_err());
    }
}
