//! `affinity: cookie` with `session-cookie-name`, `session-cookie-path`,
//! `session-cookie-max-age`, `session-cookie-expires`, `session-cookie-samesite`,
//! `session-cookie-secure`, `session-cookie-change-on-failure` and `affinity-mode`. The
//! `session-cookie-*` annotations are read only with `affinity: cookie`.
use super::{no_space_or_control, parse_token, AnnotationError, Annotations, Reader};
use crate::snapshot::{AffinityMode, CookieAffinity};

/// ingress-nginx's default cookie name.
pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let Some(()) = r.get("affinity", |v| match v {
        "cookie" => Ok(()),
        _ => Err("only \"cookie\" is supported".to_string()),
    })?
    else {
        return Ok(());
    };
    let name = r
        .get("session-cookie-name", |v| parse_token(v, "cookie name"))?
        .unwrap_or_else(|| DEFAULT_COOKIE.to_owned());
    let path = r.get("session-cookie-path", |v| {
        no_space_or_control(v)?;
        if v.starts_with('/') && !v.contains(';') {
            Ok(v.to_owned())
        } else {
            Err("must be a path starting with / and without ;".to_string())
        }
    })?;
    let seconds = |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_COOKIE_SECONDS)
            .ok_or_else(|| format!("expected a number of seconds up to {MAX_COOKIE_SECONDS}"))
    };
    let max_age = r.get("session-cookie-max-age", seconds)?;
    let expires = r.get("session-cookie-expires", seconds)?;
    let change_on_failure = r.flag("session-cookie-change-on-failure")?.unwrap_or(false);
    let same_site = r.get("session-cookie-samesite", |v| {
        ["Strict", "Lax", "None"]
            .into_iter()
            .find(|s| s.eq_ignore_ascii_case(v))
            .ok_or_else(|| "expected Strict, Lax or None".to_string())
    })?;
    let secure = r
        .get("session-cookie-secure", |v| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected \"true\" or \"false\"".to_string()),
        })?
        .unwrap_or(false);
    let mode = r
        .get("affinity-mode", |v| match v {
            "balanced" => Ok(AffinityMode::Balanced),
            "persistent" => Ok(AffinityMode::Persistent),
            _ => Err("expected balanced or persistent".to_string()),
        })?
        .unwrap_or_default();
    a.policy.affinity = Some(CookieAffinity {
        name,
        path,
        max_age,
        expires,
        same_site,
        secure,
        change_on_failure,
        mode,
    });
    Ok(())
}

/// About 100 years: beyond it an `Expires` date would not fit every client's date type.
const MAX_COOKIE_SECONDS: u64 = 100 * 365 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::snapshot::{AffinityMode, CookieAffinity};

    #[test]
    fn cookie_affinity() {
        assert_eq!(
            ok("affinity", "cookie").policy.affinity,
            Some(CookieAffinity {
                name: "INGRESSCOOKIE".into(),
                path: None,
                max_age: None,
                expires: None,
                same_site: None,
                secure: false,
                change_on_failure: false,
                mode: AffinityMode::Balanced,
            })
        );
        let a = nginx(&[
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-path", "/app"),
            ("session-cookie-max-age", "3600"),
            ("session-cookie-samesite", "lax"),
            ("session-cookie-secure", "true"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-change-on-failure", "true"),
            ("affinity-mode", "persistent"),
        ])
        .expect("valid");
        assert_eq!(
            a.policy.affinity,
            Some(CookieAffinity {
                name: "route".into(),
                path: Some("/app".into()),
                max_age: Some(3600),
                expires: Some(172_800),
                same_site: Some("Lax"),
                secure: true,
                change_on_failure: true,
                mode: AffinityMode::Persistent,
            })
        );
        // Without affinity the cookie settings are inert.
        assert_eq!(ok("session-cookie-name", "x y").policy.affinity, None);
        assert_rejects("affinity", &["ip", "Cookie"]);
        for (name, bad) in [
            ("session-cookie-name", "a b"),
            ("session-cookie-name", "a;b"),
            ("session-cookie-path", "app"),
            ("session-cookie-path", "/a;Domain=x"),
            ("session-cookie-max-age", "-1"),
            ("session-cookie-max-age", "1h"),
            ("session-cookie-samesite", "Sometimes"),
            ("session-cookie-secure", "yes"),
            ("session-cookie-expires", "tomorrow"),
            ("session-cookie-expires", "99999999999"),
            ("session-cookie-change-on-failure", "sometimes"),
            ("affinity-mode", "sticky"),
            ("affinity-mode", "Balanced"),
        ] {
            let e = nginx(&[("affinity", "cookie"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }
}
