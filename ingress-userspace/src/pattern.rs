//! Regular expressions from Ingresses (`use-regex` paths, annotation patterns), which are
//! written for nginx's PCRE.
//!
//! A pattern is compiled by the `regex` crate, whose matching time is linear in the input,
//! whenever its syntax allows. Only a pattern that needs PCRE-only syntax (look-around such
//! as `/(?!api)`, backreferences, atomic groups, possessive quantifiers) falls back to
//! `fancy-regex`, a backtracking engine like PCRE. Its matches are bounded to
//! [`BACKTRACK_LIMIT`] steps: a request that would take more counts as not matching, so a
//! hostile path cannot hold a core (nginx bounds PCRE the same way, with `pcre_jit` stack
//! and match limits).
use std::sync::Arc;

/// Backtracking steps one match may take before it counts as no match. A step is a few
/// nanoseconds: this bounds a request's cost per pattern to about a millisecond.
pub const BACKTRACK_LIMIT: usize = 100_000;

/// A compiled pattern, by the engine that runs it.
#[derive(Clone, Debug)]
pub enum Regex {
    /// The `regex` crate: linear time.
    Linear(regex::Regex),
    /// `fancy-regex`, for PCRE-only syntax: backtracking, bounded.
    Backtracking(Arc<fancy_regex::Regex>),
}

impl From<regex::Regex> for Regex {
    fn from(r: regex::Regex) -> Self {
        Regex::Linear(r)
    }
}

impl Regex {
    /// Compiles `pattern`, with the linear engine if it can, else the backtracking one.
    /// `size_limit` bounds the compiled program of either. The error is the linear
    /// engine's when neither accepts the pattern.
    pub fn new(pattern: &str, case_insensitive: bool, size_limit: usize) -> Result<Regex, String> {
        let linear = regex::RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .size_limit(size_limit)
            .build();
        let error = match linear {
            Ok(r) => return Ok(Regex::Linear(r)),
            // Too big is too big for either engine: fancy-regex delegates to the same one.
            Err(regex::Error::Syntax(e)) => e,
            Err(e) => return Err(e.to_string()),
        };
        fancy_regex::RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .delegate_size_limit(size_limit)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map(|r| Regex::Backtracking(Arc::new(r)))
            .map_err(|_| error)
    }

    /// Whether the backtracking engine runs it.
    pub fn is_backtracking(&self) -> bool {
        matches!(self, Regex::Backtracking(_))
    }

    /// Whether it matches anywhere in `s`.
    pub fn is_match(&self, s: &str) -> bool {
        match self {
            Regex::Linear(r) => r.is_match(s),
            Regex::Backtracking(r) => r.is_match(s).unwrap_or(false),
        }
    }

    /// Whether its leftmost match in `s` starts at the start of `s`.
    pub fn matches_at_start(&self, s: &str) -> bool {
        match self {
            Regex::Linear(r) => r.find(s).is_some_and(|m| m.start() == 0),
            Regex::Backtracking(r) => r.find(s).ok().flatten().is_some_and(|m| m.start() == 0),
        }
    }

    /// `template` with `$n` and `${name}` replaced by the groups of its match at the start
    /// of `s`, appended to `out`; false (and `out` untouched) when there is none.
    pub fn expand_at_start(&self, s: &str, template: &str, out: &mut String) -> bool {
        match self {
            Regex::Linear(r) => match r.captures(s) {
                Some(caps) if caps.get(0).is_some_and(|m| m.start() == 0) => {
                    caps.expand(template, out);
                    true
                }
                _ => false,
            },
            Regex::Backtracking(r) => match r.captures(s) {
                Ok(Some(caps)) if caps.get(0).is_some_and(|m| m.start() == 0) => {
                    caps.expand(template, out);
                    true
                }
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn plain_syntax_stays_linear_and_pcre_syntax_backtracks() {
        let plain = Regex::new("^/api/v[0-9]+(/|$)(.*)", true, LIMIT).expect("compiles");
        assert!(!plain.is_backtracking());
        let mut out = String::new();
        assert!(plain.expand_at_start("/API/v2/users", "/$2", &mut out));
        assert_eq!(out, "/users");

        // Everything but /api and what is under it: look-ahead, as ingress-nginx users write.
        let not_api = Regex::new("^(?:/(?!api(?:/|$))(.*))", true, LIMIT).expect("compiles");
        assert!(not_api.is_backtracking());
        assert!(not_api.matches_at_start("/web/index.html"));
        assert!(not_api.matches_at_start("/apis"));
        assert!(!not_api.matches_at_start("/api"));
        assert!(
            !not_api.matches_at_start("/API/v1"),
            "case-insensitive as asked"
        );
        let mut out = String::new();
        assert!(not_api.expand_at_start("/web/x", "/static/$1", &mut out));
        assert_eq!(out, "/static/web/x");
        let mut out = String::new();
        assert!(!not_api.expand_at_start("/api/x", "/static/$1", &mut out));
        assert!(out.is_empty());

        // A backreference; unanchored, case-sensitive.
        let twice = Regex::new(r"(ab)\1", false, LIMIT).expect("compiles");
        assert!(twice.is_backtracking());
        assert!(twice.is_match("xxabab"));
        assert!(!twice.is_match("xxabAB"));
        assert!(!twice.matches_at_start("xxabab"));
    }

    #[test]
    fn a_bad_pattern_names_the_linear_engine_s_error_and_a_huge_one_stays_refused() {
        let e = Regex::new("/(unclosed", true, LIMIT).expect_err("refused");
        assert!(e.contains("unclosed"), "{e}");
        let e = Regex::new("(?!x)(", true, LIMIT).expect_err("refused by both");
        assert!(e.contains("look-around"), "{e}");
        // Too big for the linear engine: not handed to the other one.
        let e = Regex::new("(?:a{1000}){1000}", false, 1 << 16).expect_err("too big");
        assert!(e.contains("size limit"), "{e}");
    }

    #[test]
    fn long_paths_within_a_request_head_match_without_reaching_the_bound() {
        // The largest request head the proxy accepts is well under this.
        let rest = "a/".repeat(32 * 1024);
        let not_api = Regex::new("^(?:/(?!api(?:/|$))(.*))", true, LIMIT).expect("compiles");
        let path = format!("/{rest}");
        assert!(not_api.matches_at_start(&path));
        let mut out = String::new();
        assert!(not_api.expand_at_start(&path, "$1", &mut out));
        assert_eq!(out, rest);
        assert!(!not_api.matches_at_start(&format!("/api/{rest}")));
        let back = Regex::new(r"^(?:/(\w+)/\1/(.*))", false, LIMIT).expect("compiles");
        assert!(back.is_backtracking());
        assert!(back.matches_at_start(&format!("/ab/ab/{rest}")));
        assert!(!back.matches_at_start(&format!("/ab/ba/{rest}")));
    }

    #[test]
    fn a_match_past_the_backtracking_bound_counts_as_no_match() {
        // Catastrophic backtracking: nested quantifiers and a look-ahead that never holds.
        let evil = Regex::new("^(?:(a+)+(?=b))", false, LIMIT).expect("compiles");
        assert!(evil.is_backtracking());
        assert!(evil.is_match("aaab"));
        let hostile = "a".repeat(64);
        let started = std::time::Instant::now();
        assert!(!evil.is_match(&hostile));
        assert!(!evil.matches_at_start(&hostile));
        let mut out = String::new();
        assert!(!evil.expand_at_start(&hostile, "$1", &mut out));
        // Without the bound this input takes 2^64 steps; with it, well under a second even
        // on a loaded machine.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
