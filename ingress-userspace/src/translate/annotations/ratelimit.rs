//! `limit-rps`: requests per second per client address; `0` disables the limit.
use super::{parse_in_range, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    if let Some(n) = r.get("limit-rps", |v| parse_in_range(v, 0u32..=1_000_000))? {
        a.policy.limit_rps = (n != 0).then_some(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn limit_rps() {
        assert_eq!(ok("limit-rps", "10").policy.limit_rps, Some(10));
        assert_eq!(ok("limit-rps", "0").policy.limit_rps, None);
        assert_eq!(nginx(&[]).expect("empty").policy.limit_rps, None);
        assert_rejects("limit-rps", &["-1", "ten", "1.5", "2000000"]);
    }
}
