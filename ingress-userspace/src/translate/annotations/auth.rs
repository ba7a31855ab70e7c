//! `auth-type: basic` with `auth-secret` (`name` or `namespace/name`), `auth-secret-type`
//! (`auth-file`: htpasswd lines under key `auth`, the default; `auth-map`: one key per user)
//! and `auth-realm`. The Secret itself is resolved by the translator; see [`users_from_secret`].
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{AnnotationError, Annotations, AuthRef, Reader};
use crate::config::NamespacedName;

/// Realm shown by browsers when `auth-realm` is not set.
pub const DEFAULT_REALM: &str = "Authentication Required";

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    a.policy.satisfy_any = r
        .get("satisfy", |v| match v {
            "any" => Ok(true),
            "all" => Ok(false),
            _ => Err("expected any or all".to_string()),
        })?
        .unwrap_or(false);
    let Some(()) = r.get("auth-type", |v| match v {
        "basic" => Ok(()),
        "digest" => Err("digest authentication is not supported".to_string()),
        _ => Err("only \"basic\" is supported".to_string()),
    })?
    else {
        return Ok(());
    };
    let namespace = r.namespace().to_owned();
    let secret = r
        .get("auth-secret", |v| parse_secret_ref(&namespace, v))?
        .ok_or_else(|| AnnotationError {
            key: format!("{}auth-secret", super::NGINX_PREFIX),
            value: String::new(),
            reason: "required with auth-type: basic".into(),
        })?;
    let map = r
        .get("auth-secret-type", |v| match v {
            "auth-file" => Ok(false),
            "auth-map" => Ok(true),
            _ => Err("expected auth-file or auth-map".to_string()),
        })?
        .unwrap_or(false);
    let realm = r
        .get("auth-realm", |v| {
            if v.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                Err("must not contain quotes, backslashes or control characters".to_string())
            } else {
                Ok(v.to_owned())
            }
        })?
        .unwrap_or_else(|| DEFAULT_REALM.to_owned());
    a.auth = Some(AuthRef { secret, realm, map });
    Ok(())
}

pub(super) fn parse_secret_ref(namespace: &str, v: &str) -> Result<NamespacedName, String> {
    let (ns, name) = match v.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (namespace, v),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if valid(ns) && valid(name) {
        Ok(NamespacedName {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        })
    } else {
        Err("expected a Secret name or namespace/name".into())
    }
}

/// Users and password hashes from the Secret named by `auth-secret`.
pub fn users_from_secret(secret: &Secret, map: bool) -> Result<BTreeMap<String, String>, String> {
    let data = secret.data.as_ref();
    if map {
        let users: BTreeMap<String, String> = data
            .into_iter()
            .flatten()
            .map(|(user, hash)| {
                let hash = std::str::from_utf8(&hash.0)
                    .map_err(|_| format!("user {user:?}: hash is not UTF-8"))?;
                Ok((user.clone(), hash.trim().to_owned()))
            })
            .collect::<Result<_, String>>()?;
        if users.is_empty() {
            return Err("the Secret lists no user".into());
        }
        return Ok(users);
    }
    let file = data
        .and_then(|d| d.get("auth"))
        .ok_or("the Secret has no key \"auth\"")?;
    let text = std::str::from_utf8(&file.0).map_err(|_| "key \"auth\" is not UTF-8".to_string())?;
    parse_htpasswd(text)
}

/// Parses htpasswd lines `user:hash`; blank lines and `#` comments are skipped.
pub fn parse_htpasswd(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if !user.is_empty() && !hash.is_empty() => {
                users.insert(user.to_owned(), hash.to_owned());
            }
            _ => return Err(format!("line {}: expected user:hash", i + 1)),
        }
    }
    if users.is_empty() {
        return Err("the htpasswd file lists no user".into());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn basic_auth_annotations() {
        assert_eq!(nginx(&[]).expect("empty").auth, None);
        let a = nginx(&[("auth-type", "basic"), ("auth-secret", "users")]).expect("valid");
        assert_eq!(
            a.auth,
            Some(AuthRef {
                secret: NamespacedName {
                    namespace: "ns".into(),
                    name: "users".into()
                },
                realm: DEFAULT_REALM.into(),
                map: false,
            })
        );
        let a = nginx(&[
            ("auth-type", "basic"),
            ("auth-secret", "other/users"),
            ("auth-secret-type", "auth-map"),
            ("auth-realm", "Staff only"),
        ])
        .expect("valid");
        assert_eq!(
            a.auth,
            Some(AuthRef {
                secret: NamespacedName {
                    namespace: "other".into(),
                    name: "users".into()
                },
                realm: "Staff only".into(),
                map: true,
            })
        );
    }

    #[test]
    fn basic_auth_invalid_values() {
        assert_rejects("auth-type", &["digest", "oauth", "Basic"]);
        let e = nginx(&[("auth-type", "basic")]).expect_err("secret required");
        assert!(e.to_string().contains("auth-secret"), "{e}");
        for (name, bad) in [
            ("auth-secret", "a/b/c"),
            ("auth-secret", "Users"),
            ("auth-secret", "/x"),
            ("auth-secret-type", "file"),
            ("auth-realm", "say \"hi\""),
        ] {
            let mut pairs = vec![("auth-type", "basic"), (name, bad)];
            if name != "auth-secret" {
                pairs.push(("auth-secret", "users"));
            }
            let e = nginx(&pairs).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }

    #[test]
    fn htpasswd() {
        let users = parse_htpasswd("# staff\nalice:$apr1$x$y\n\nbob:{SHA}abc=\n").expect("valid");
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], "$apr1$x$y");
        assert!(parse_htpasswd("alice").is_err());
        assert!(parse_htpasswd(":hash").is_err());
        assert!(parse_htpasswd("\n# nothing\n").is_err());
    }

    #[test]
    fn users_from_secrets() {
        use k8s_openapi::ByteString;
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let users = users_from_secret(&secret(&[("auth", "u:h")]), false).expect("file");
        assert_eq!(users["u"], "h");
        assert!(users_from_secret(&secret(&[("other", "u:h")]), false).is_err());
        let users = users_from_secret(&secret(&[("u1", "h1"), ("u2", "h2\n")]), true).expect("map");
        assert_eq!(users["u2"], "h2");
        assert!(users_from_secret(&Secret::default(), true).is_err());
    }

    #[test]
    fn satisfy() {
        use super::super::test_support::*;
        assert!(ok("satisfy", "any").policy.satisfy_any);
        assert!(!ok("satisfy", "all").policy.satisfy_any);
        assert!(!nginx(&[]).expect("empty").policy.satisfy_any);
        assert_rejects("satisfy", &["either", "ANY"]);
    }
}
