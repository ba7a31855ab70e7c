//! `custom-http-errors`: comma-separated status codes (300..=599).
use super::{parse_in_range, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(codes) = r.get("custom-http-errors", parse_codes)? {
        a.policy.custom_http_errors = codes;
    }
    Ok(())
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
    }
}
