//! Lists written as nginx `map` sources (`block-user-agents`, `block-referers`,
//! `skip-access-log-urls`), compiled once per snapshot: exact strings in a hash set, every
//! regex in one `RegexSet`, so a request costs one lookup and at most one automaton run.
use std::collections::HashSet;

use regex::bytes::RegexSet;

use crate::snapshot::MapSource;

/// Whether a value is in a list of exact strings and regexes.
#[derive(Debug)]
pub struct ValueMatcher {
    exact: HashSet<Box<[u8]>>,
    regexes: Option<RegexSet>,
}

impl ValueMatcher {
    /// The list compiled; `None` when it is empty. The translator built the same set; should
    /// it still not build, its regexes are dropped with an error log and the exact strings
    /// still match.
    pub fn compile(sources: &[MapSource]) -> Option<Self> {
        if sources.is_empty() {
            return None;
        }
        let exact = sources
            .iter()
            .filter_map(|s| match s {
                MapSource::Exact(v) => Some(v.as_bytes().into()),
                MapSource::Regex { .. } => None,
            })
            .collect();
        let regexes = MapSource::regex_set(sources)
            .map_err(|e| tracing::error!(error = %e, "value patterns dropped"))
            .ok()
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
