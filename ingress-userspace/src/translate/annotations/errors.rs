//! `custom-http-errors`: comma-separated status codes (300..=599); `default-backend`: a
//! Service of the Ingress's namespace (its first port) for the Ingress's routes while their
//! own has no endpoint, and for their error pages.
use super::{parse_in_range, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(codes) = r.get("custom-http-errors", parse_codes)? {
        a.policy.custom_http_errors = codes;
    }
    a.default_backend = r.get("default-backend", parse_service_name)?;
    Ok(())
}

/// A Service name (an RFC 1035 label), in the Ingress's namespace.
fn parse_service_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && !v.ends_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(v.to_owned())
    } else {
        Err("expected the name of a Service in the Ingress's namespace".into())
    }
}

fn parse_codes(v: &str) -> Result<Vec<u16>, String> {
    let mut codes = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_in_range(s, 300u16..=599).map_err(|e| format!("{s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn custom_http_errors() {
        assert_eq!(
            ok("custom-http-errors", "503, 404,404")
                .policy
                .custom_http_errors,
            vec![404, 503]
        );
        assert!(nginx(&[])
            .expect("empty")
            .policy
            .custom_http_errors
            .is_empty());
        assert_rejects("custom-http-errors", &["200", "404;500", "abc", "600"]);
        assert_eq!(
            ok("default-backend", "errors-svc")
                .default_backend
                .as_deref(),
            Some("errors-svc")
        );
        assert_rejects(
            "default-backend",
            &["other/errors", "Errors", "1abc", "a-", "a.b"],
        );
    }
}
