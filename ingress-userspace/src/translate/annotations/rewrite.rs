//! `rewrite-target` and `use-regex`. As in ingress-nginx, `rewrite-target` turns the Ingress's
//! paths into regular expressions (so `$1`.. can refer to their groups).
use super::{no_space_or_control, AnnotationError, Annotations, Reader};

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    a.policy.rewrite_target = r.get("rewrite-target", parse_target)?;
    let use_regex = r.flag("use-regex")?.unwrap_or(false);
    a.use_regex = use_regex || a.policy.rewrite_target.is_some();
    Ok(())
}

fn parse_target(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    if !(v.starts_with('/') || v.starts_with('$')) || v.starts_with("//") {
        return Err("must be a path starting with / (or a $N group reference)".into());
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn rewrite_target_implies_regex() {
        let a = ok("rewrite-target", "/$2");
        assert_eq!(a.policy.rewrite_target.as_deref(), Some("/$2"));
        assert!(a.use_regex);
        assert_eq!(
            ok("rewrite-target", "$1").policy.rewrite_target.as_deref(),
            Some("$1")
        );
        assert_rejects("rewrite-target", &["", "x/$1", "/a b", "//evil"]);
    }

    #[test]
    fn use_regex() {
        assert!(ok("use-regex", "true").use_regex);
        assert!(!ok("use-regex", "false").use_regex);
        assert!(!nginx(&[]).expect("empty").use_regex);
        assert_rejects("use-regex", &["regex"]);
    }
}
