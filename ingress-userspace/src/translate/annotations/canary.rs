//! `canary`, `canary-weight`, `canary-by-header`, `canary-by-header-value`,
//! `canary-by-cookie`.
use super::{is_token, parse_in_range, AnnotationError, Annotations, CanaryConfig, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if r.flag("canary")? != Some(true) {
        return Ok(());
    }
    let weight = r
        .get("canary-weight", |v| parse_in_range(v, 0u32..=100))?
        .unwrap_or(0);
    let header = r.get("canary-by-header", |v| {
        if is_token(v) {
            Ok(v.to_owned())
        } else {
            Err("not a valid header name".to_string())
        }
    })?;
    let header_value = r.get("canary-by-header-value", |v| {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(v.to_owned())
        } else {
            Err("must be visible ASCII without spaces".to_string())
        }
    })?;
    let cookie = r.get("canary-by-cookie", |v| {
        if is_token(v) {
            Ok(v.to_owned())
        } else {
            Err("not a valid cookie name".to_string())
        }
    })?;
    a.canary = Some(CanaryConfig {
        weight,
        header,
        header_value,
        cookie,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{test_support::*, CanaryConfig};

    #[test]
    fn canary() {
        assert_eq!(ok("canary", "false").canary, None);
        assert_eq!(ok("canary-weight", "50").canary, None);
        assert_eq!(
            ok("canary", "true").canary,
            Some(CanaryConfig {
                weight: 0,
                header: None,
                header_value: None,
                cookie: None,
            })
        );
        let a = nginx(&[
            ("canary", "true"),
            ("canary-weight", "25"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes-please"),
            ("canary-by-cookie", "use_canary"),
        ])
        .expect("valid");
        assert_eq!(
            a.canary,
            Some(CanaryConfig {
                weight: 25,
                header: Some("X-Canary".into()),
                header_value: Some("yes-please".into()),
                cookie: Some("use_canary".into()),
            })
        );
        assert_rejects("canary", &["sometimes"]);
        for (name, bad) in [
            ("canary-weight", "101"),
            ("canary-weight", "-1"),
            ("canary-weight", "10%"),
            ("canary-by-header", "X Canary"),
            ("canary-by-header-value", "a b"),
            ("canary-by-cookie", "a;b"),
        ] {
            let e = nginx(&[("canary", "true"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }
}
