//! Regular expressions from Ingresses (`use-regex` paths, annotation patterns), which are
//! written for nginx's PCRE.
//!
//! A pattern is compiled by the `regex` crate, whose matching time is linear in the input,
//! whenever its syntax allows. Only a pattern that needs PCRE-only syntax (look-around such
//! as `/(?!api)`, backreferences, atomic groups, possessive quantifiers) falls back to
//! `fancy-regex`, a backtracking engine like PCRE. Its matches are bounded to
//! [`BACKTRACK_LIMIT`] backtracks: a match that would take more is [`Undecided`], which a
//! path rule answers with a 500 as nginx does when PCRE reaches its match limit, so a
//! hostile input cannot hold a core nor slip past a rule to a less guarded one. Each
//! backtrack may rescan part of the input, so the bound is in backtracks times input length,
//! not in time.
use std::sync::Arc;

/// Backtracks one match may take before it is [`Undecided`].
pub const BACKTRACK_LIMIT: usize = 100_000;

/// Instructions of the backtracking program of one pattern, at most.
const MAX_PROG_SIZE: usize = 10_000;

/// The backtracking engine gave up on a match: its bound was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Undecided;

/// The lazy DFA cache of one pattern, at most: the `regex` crate's default, shared out like
/// the size limit.
const DFA_SIZE_LIMIT: usize = 2 << 20;

/// A compiled pattern, by the engine that runs it.
#[derive(Clone, Debug)]
pub enum Regex {
    /// The `regex` crate: linear time.
    Linear(regex::Regex),
    /// `fancy-regex`, for PCRE-only syntax: backtracking, bounded.
    Backtracking(Arc<fancy_regex::Regex>),
}

/// Why the backtracking engine is not given `pattern`, though it parses: a look-around or
/// back-reference inside a repetition runs again on every iteration, and recursion has no
/// bound of its own. `None` for a pattern that does not parse (the builder says why).
fn costly(pattern: &str) -> Option<&'static str> {
    use fancy_regex::Expr;
    let tree = Expr::parse_tree(pattern).ok()?;
    if tree.contains_subroutines {
        return Some("recursion is refused");
    }
    let fancy = |e: &Expr| {
        matches!(
            e,
            Expr::LookAround(..)
                | Expr::Backref { .. }
                | Expr::BackrefWithRelativeRecursionLevel { .. }
        )
    };
    let repeated = |e: &Expr| match e {
        Expr::Repeat { child, hi, .. } => *hi > 1 && child.has_descendant_or_self(fancy),
        _ => false,
    };
    tree.expr
        .has_descendant_or_self(repeated)
        .then_some("a look-around or back-reference inside a repetition is refused")
}

/// Inputs longer than this are [`Undecided`] on the backtracking engine, which bounds its
/// work per match to about this squared. nginx's default request line (and header line) is
/// at most 8 KiB (`large-client-header-buffers`), so real paths and header values fit.
pub const MAX_BACKTRACKING_INPUT: usize = 8 * 1024;

impl From<regex::Regex> for Regex {
    fn from(r: regex::Regex) -> Self {
        Regex::Linear(r)
    }
}

impl Regex {
    /// Compiles `pattern`, with the linear engine if it can, else the backtracking one.
    /// `size_limit` bounds the compiled program of either: the backtracking engine hands
    /// each run of plain syntax to a linear regex of its own, so the budget is shared out
    /// between as many runs as the pattern can have.
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
        // Runs of plain syntax are separated by a group, an escape or a possessive `+`:
        // there are at most one more than those.
        let runs = 1 + pattern
            .chars()
            .filter(|c| matches!(c, '(' | '\\' | '+'))
            .count();
        if let Some(why) = costly(pattern) {
            return Err(format!(
                "{why}: its cost grows faster than its input, which the backtracking bound \
                 does not count"
            ));
        }
        fancy_regex::RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .delegate_size_limit(size_limit / runs)
            .delegate_dfa_size_limit((DFA_SIZE_LIMIT / runs).max(1))
            .max_prog_size(MAX_PROG_SIZE)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map(|r| Regex::Backtracking(Arc::new(r)))
            .map_err(|fancy| match error.contains("not supported") {
                // Syntax the linear engine lacks: the other one's complaint is the real one.
                true => format!("the backtracking engine this syntax needs refused it: {fancy}"),
                false => error,
            })
    }

    /// Whether the backtracking engine runs it.
    pub fn is_backtracking(&self) -> bool {
        matches!(self, Regex::Backtracking(_))
    }

    /// Whether it matches anywhere in `s`; an undecided match counts as none (a canary
    /// header then leaves the request to the main backend, a client certificate's name is
    /// refused).
    pub fn is_match(&self, s: &str) -> bool {
        match self {
            Regex::Linear(r) => r.is_match(s),
            Regex::Backtracking(_) if s.len() > MAX_BACKTRACKING_INPUT => false,
            Regex::Backtracking(r) => r.is_match(s).unwrap_or(false),
        }
    }

    /// Whether its leftmost match in `s` starts at the start of `s`.
    pub fn matches_at_start(&self, s: &str) -> Result<bool, Undecided> {
        match self {
            Regex::Linear(r) => Ok(r.find(s).is_some_and(|m| m.start() == 0)),
            Regex::Backtracking(_) if s.len() > MAX_BACKTRACKING_INPUT => Err(Undecided),
            Regex::Backtracking(r) => match r.find(s) {
                Ok(m) => Ok(m.is_some_and(|m| m.start() == 0)),
                Err(_) => Err(Undecided),
            },
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
            Regex::Backtracking(_) if s.len() > MAX_BACKTRACKING_INPUT => false,
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
        assert_eq!(not_api.matches_at_start("/web/index.html"), Ok(true));
        assert_eq!(not_api.matches_at_start("/apis"), Ok(true));
        assert_eq!(not_api.matches_at_start("/api"), Ok(false));
        assert_eq!(
            not_api.matches_at_start("/API/v1"),
            Ok(false),
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
        assert_eq!(twice.matches_at_start("xxabab"), Ok(false));
    }

    #[test]
    fn a_bad_pattern_names_the_linear_engine_s_error_and_a_huge_one_stays_refused() {
        let e = Regex::new("/(unclosed", true, LIMIT).expect_err("refused");
        assert!(e.contains("unclosed"), "{e}");
        // Refused by both: the backtracking engine's complaint names the real problem.
        let e = Regex::new("(?!x)(", true, LIMIT).expect_err("refused by both");
        assert!(e.contains("parenthesis"), "{e}");
        // Too big for the linear engine: not handed to the other one.
        let e = Regex::new("(?:a{1000}){1000}", false, 1 << 16).expect_err("too big");
        assert!(e.contains("size limit"), "{e}");
    }

    #[test]
    fn paths_up_to_the_input_cap_match_and_longer_ones_are_undecided() {
        let not_api = Regex::new("^(?:/(?!api(?:/|$))(.*))", true, LIMIT).expect("compiles");
        let rest = "a/".repeat(MAX_BACKTRACKING_INPUT / 2 - 1);
        let path = format!("/{rest}");
        assert!(path.len() < MAX_BACKTRACKING_INPUT);
        assert_eq!(not_api.matches_at_start(&path), Ok(true));
        let mut out = String::new();
        assert!(not_api.expand_at_start(&path, "$1", &mut out));
        assert_eq!(out, rest);
        assert_eq!(
            not_api.matches_at_start(&format!("/api/{}", &rest[8..])),
            Ok(false)
        );
        let back = Regex::new(r"^(?:/(\w+)/\1/(.*))", false, LIMIT).expect("compiles");
        assert!(back.is_backtracking());
        assert_eq!(
            back.matches_at_start(&format!("/ab/ab/{}", &rest[8..])),
            Ok(true)
        );
        assert_eq!(
            back.matches_at_start(&format!("/ab/ba/{}", &rest[8..])),
            Ok(false)
        );
        // Past the cap: undecided, whatever the pattern would say.
        let long = format!("/{rest}{rest}");
        assert_eq!(not_api.matches_at_start(&long), Err(Undecided));
        assert!(!not_api.is_match(&long));
        assert!(!not_api.expand_at_start(&long, "$1", &mut String::new()));
        // The linear engine has no cap.
        let plain = Regex::new("^(?:/(.*))", true, LIMIT).expect("compiles");
        assert_eq!(plain.matches_at_start(&long), Ok(true));
    }

    #[test]
    fn look_around_or_back_references_inside_a_repetition_are_refused() {
        for refused in [
            "^(?:(?:(?=a)(a+))+b)",
            r"^(a)(?:x\1)+",
            "(?:.(?=.*a))*y",
            "^(?:(?!x).)*$",
        ] {
            let e = Regex::new(refused, false, LIMIT).expect_err(refused);
            assert!(e.contains("inside a repetition"), "{refused}: {e}");
        }
        // Once, anywhere else, they are fine.
        for taken in ["^(?:/(?!api)(.*))", r"^(\w+)-\1", "^(?=.*x)(?:a|x)+"] {
            let r = Regex::new(taken, false, LIMIT).expect(taken);
            assert!(r.is_backtracking(), "{taken}");
        }
    }

    #[test]
    fn a_match_past_the_backtracking_bound_is_undecided_not_a_match_nor_a_miss() {
        // The second branch matches, but only after the first has backtracked through
        // every way of splitting the a's into a's and aa's, far past the bound. (The
        // back-reference keeps the repetition in the backtracking engine.)
        let evil = Regex::new(r"^(?:((?:a|aa)+)\1b|a+c)", false, LIMIT).expect("compiles");
        assert!(evil.is_backtracking());
        assert_eq!(evil.matches_at_start("aaac"), Ok(true), "short: decided");
        assert_eq!(evil.matches_at_start("aaaab"), Ok(true));
        let hostile = format!("{}c", "a".repeat(40));
        let started = std::time::Instant::now();
        assert_eq!(evil.matches_at_start(&hostile), Err(Undecided));
        // Where only yes or no can be answered, undecided is no.
        assert!(!evil.is_match(&hostile));
        let mut out = String::new();
        assert!(!evil.expand_at_start(&hostile, "$1", &mut out));
        // Unbounded, this would run for hours.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn many_runs_of_plain_syntax_share_one_size_budget() {
        // Each run alone fits in the budget; 64 of them, split by look-aheads, do not.
        let run = r"\w{3}(?=x)";
        Regex::new(run, false, LIMIT).expect("one run fits");
        let e = Regex::new(&run.repeat(64), false, LIMIT).expect_err("over the budget");
        assert!(e.contains("backtracking engine"), "{e}");
    }
}
