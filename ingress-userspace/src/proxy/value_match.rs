//! Lists written as nginx `map` sources (`block-user-agents`, `block-referers`,
//! `skip-access-log-urls`), compiled once per snapshot: exact strings in a hash set, every
//! regex in one `RegexSet`, so a request costs one lookup and at most one automaton run.
use std::collections::HashSet;

use regex::bytes::{RegexSet, RegexSetBuilder};

use crate::snapshot::MapSource;

/// Bounds the compiled set, as for `use-regex` paths: a ConfigMap must not be able to make
/// every request run a huge automaton.
const SET_SIZE_LIMIT: usize = 4 << 20;

/// Whether a value is in a list of exact strings and regexes.
#[derive(Debug)]
pub struct ValueMatcher {
    exact: HashSet<Box<[u8]>>,
    regexes: Option<RegexSet>,
}

impl ValueMatcher {
    /// The list compiled; `None` when it is empty. The translator checked every regex alone;
    /// should the set still not build (over the size bound together), its regexes are
    /// dropped with an error log and the exact strings still match.
    pub fn compile(sources: &[MapSource]) -> Option<Self> {
        if sources.is_empty() {
            return None;
        }
        let mut exact = HashSet::new();
        let mut patterns = Vec::new();
        for s in sources {
            match s {
                MapSource::Exact(v) => {
                    exact.insert(v.as_bytes().into());
                }
                MapSource::Regex {
                    pattern,
                    ignore_case,
                } => patterns.push(if *ignore_case {
                    format!("(?i:{pattern})")
                } else {
                    format!("(?:{pattern})")
                }),
            }
        }
        let regexes = (!patterns.is_empty())
            .then(|| {
                RegexSetBuilder::new(&patterns)
                    .size_limit(SET_SIZE_LIMIT)
                    .build()
                    .map_err(|e| tracing::error!(error = %e, "value patterns dropped"))
                    .ok()
            })
            .flatten();
        Some(ValueMatcher { exact, regexes })
    }

    /// Whether `value` equals one of the strings or contains a match of one of the regexes.
    pub fn matches(&self, value: &[u8]) -> bool {
        self.exact.contains(value) || self.regexes.as_ref().is_some_and(|r| r.is_match(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(v: &str) -> MapSource {
        MapSource::Exact(v.into())
    }

    fn re(p: &str, ignore_case: bool) -> MapSource {
        MapSource::Regex {
            pattern: p.into(),
            ignore_case,
        }
    }

    #[test]
    fn exact_strings_and_regexes() {
        assert!(ValueMatcher::compile(&[]).is_none());
        let m =
            ValueMatcher::compile(&[exact("/healthz"), re("^/metrics", false), re("curl/", true)])
                .expect("not empty");
        assert!(m.matches(b"/healthz"));
        assert!(!m.matches(b"/healthz?x=1"), "exact means the whole value");
        assert!(m.matches(b"/metrics/x"));
        assert!(!m.matches(b"/METRICS"), "~ keeps case");
        assert!(
            m.matches(b"Mozilla CURL/8.0"),
            "~* ignores case, matches anywhere"
        );
        assert!(!m.matches(b""));
        assert!(
            m.matches(b"\xffcurl/"),
            "bytes that are not UTF-8 are still searched"
        );
    }

    #[test]
    fn alternations_stay_inside_their_own_pattern() {
        let m = ValueMatcher::compile(&[re("a|b", false), exact("c")]).expect("not empty");
        assert!(m.matches(b"xbx") && m.matches(b"c") && !m.matches(b"x"));
    }
}
