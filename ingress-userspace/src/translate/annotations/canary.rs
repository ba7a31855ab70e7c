//! `canary`, `canary-weight`, `canary-weight-total`, `canary-by-header`,
//! `canary-by-header-value`, `canary-by-header-pattern`, `canary-by-cookie`,
//! `affinity-canary-behavior`.
use super::{parse_in_range, parse_token, AnnotationError, Annotations, CanaryConfig, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if r.flag("canary")? != Some(true) {
        return Ok(());
    }
    // As ingress-nginx's balancer: a total below 100 is read as 100 (the annotation can only
    // make the weights finer).
    let weight_total = r
        .get("canary-weight-total", |v| {
            parse_in_range(v, 1u32..=1_000_000)
        })?
        .unwrap_or(100)
        .max(100);
    let weight = r
        .get("canary-weight", |v| parse_in_range(v, 0u32..=weight_total))?
        .unwrap_or(0);
    let header = r.get("canary-by-header", |v| parse_token(v, "header name"))?;
    let header_value = r.get("canary-by-header-value", |v| {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(v.to_owned())
        } else {
            Err("must be visible ASCII without spaces".to_string())
        }
    })?;
    // nginx's `ngx.re.match`: unanchored, case-sensitive.
    let header_pattern = r.get("canary-by-header-pattern", super::compile_pattern)?;
    let cookie = r.get("canary-by-cookie", |v| parse_token(v, "cookie name"))?;
    let sticky = r
        .get("affinity-canary-behavior", |v| match v {
            "sticky" => Ok(true),
            "legacy" => Ok(false),
            _ => Err("expected sticky or legacy".to_string()),
        })?
        .unwrap_or(true);
    a.canary = Some(CanaryConfig {
        weight,
        weight_total,
        header,
        header_value,
        header_pattern,
        cookie,
        sticky,
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
            Some(CanaryConfig::selecting_nothing())
        );
        let a = nginx(&[
            ("canary", "true"),
            ("canary-weight", "25"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes-please"),
            ("canary-by-cookie", "use_canary"),
            ("affinity-canary-behavior", "legacy"),
        ])
        .expect("valid");
        assert_eq!(
            a.canary,
            Some(CanaryConfig {
                weight: 25,
                weight_total: 100,
                header: Some("X-Canary".into()),
                header_value: Some("yes-please".into()),
                header_pattern: None,
                cookie: Some("use_canary".into()),
                sticky: false,
            })
        );
        let a = nginx(&[
            ("canary", "true"),
            ("canary-weight", "150"),
            ("canary-weight-total", "1000"),
        ])
        .expect("valid");
        let c = a.canary.expect("canary");
        assert_eq!((c.weight, c.weight_total), (150, 1000));
        // The weight is out of the total, not out of 100.
        let e = nginx(&[
            ("canary", "true"),
            ("canary-weight", "1001"),
            ("canary-weight-total", "1000"),
        ])
        .expect_err("over the total");
        assert!(e.key.ends_with("canary-weight"), "{e}");
        // A total below 100 counts as 100, as in ingress-nginx: 5 of 10 is 5%, not half.
        let c = nginx(&[
            ("canary", "true"),
            ("canary-weight", "5"),
            ("canary-weight-total", "10"),
        ])
        .expect("valid")
        .canary
        .expect("canary");
        assert_eq!((c.weight, c.weight_total), (5, 100));
        assert_rejects("canary", &["sometimes"]);
        let e = nginx(&[("canary", "true"), ("affinity-canary-behavior", "Sticky")])
            .expect_err("case matters, as in ingress-nginx");
        assert!(e.key.ends_with("affinity-canary-behavior"), "{e}");
        for (name, bad) in [
            ("canary-weight", "101"),
            ("canary-weight", "-1"),
            ("canary-weight", "10%"),
            ("canary-weight-total", "0"),
            ("canary-by-header", "X Canary"),
            ("canary-by-header-value", "a b"),
            ("canary-by-cookie", "a;b"),
            ("canary-by-header-pattern", ""),
            ("canary-by-header-pattern", "(unclosed"),
            // PCRE look-around has no equivalent here: refused, not silently changed.
            ("canary-by-header-pattern", "^(?!beta)"),
        ] {
            let e = nginx(&[("canary", "true"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }

    #[test]
    fn header_pattern_is_compiled_unanchored_and_case_sensitive() {
        let a = nginx(&[
            ("canary", "true"),
            ("canary-by-header", "X-Region"),
            ("canary-by-header-pattern", "eu-(west|north)"),
        ])
        .expect("valid");
        let p = a.canary.and_then(|c| c.header_pattern).expect("pattern");
        assert_eq!(p.source, "eu-(west|north)");
        assert!(p.regex.is_match("dc-eu-west-1"));
        assert!(!p.regex.is_match("EU-WEST"));
        // A pattern large enough to blow the compile limit is refused.
        let huge = format!("({})", vec!["[a-z]{50}"; 400].join("|"));
        let e = nginx(&[("canary", "true"), ("canary-by-header-pattern", &huge)])
            .expect_err("over the size limit");
        assert!(e.key.ends_with("canary-by-header-pattern"), "{e}");
    }
}
