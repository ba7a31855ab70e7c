//! Ingress paths: validation into [`PathMatch`] and route precedence.
//!
//! `pathType` semantics (Kubernetes Ingress v1):
//! - `Exact`: the whole path, case-sensitive.
//! - `Prefix`: element-wise on `/`-separated segments: `/foo` matches `/foo`, `/foo/` and
//!   `/foo/bar` but not `/foobar`; a trailing slash in the rule is ignored.
//! - `ImplementationSpecific`: treated exactly as `Prefix` by this controller.
//!
//! With `use-regex` (or `rewrite-target`) every path of the Ingress is a case-insensitive
//! regular expression anchored at the start of the request path, whatever its `pathType`, as
//! in ingress-nginx. A missing or empty path means `/`.
use std::cmp::Ordering;

use crate::snapshot::{PathMatch, Pattern};

/// Compiled-size cap for one path regex, so an Ingress cannot make the proxy slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses one `spec.rules[].http.paths[]` entry.
pub fn parse_path(
    raw: Option<&str>,
    path_type: &str,
    use_regex: bool,
) -> Result<PathMatch, String> {
    let path = match raw {
        None | Some("") => "/",
        Some(p) => p,
    };
    if !path.starts_with('/') {
        return Err(format!("invalid path {path:?}: must start with /"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("invalid path {path:?}: control characters"));
    }
    if use_regex {
        let regex = regex::RegexBuilder::new(&format!("^(?:{path})"))
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid path regex {path:?}: {e}"))?;
        return Ok(PathMatch::Regex(Pattern {
            source: path.to_owned(),
            regex,
        }));
    }
    match path_type {
        "Exact" => Ok(PathMatch::Exact(path.to_owned())),
        "Prefix" | "ImplementationSpecific" => {
            let trimmed = path.trim_end_matches('/');
            Ok(PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            }))
        }
        other => Err(format!(
            "invalid pathType {other:?}: expected Exact, Prefix or ImplementationSpecific"
        )),
    }
}

/// Rank of a path kind at equal length: Exact before Prefix before Regex.
fn kind_rank(p: &PathMatch) -> u8 {
    match p {
        PathMatch::Exact(_) => 0,
        PathMatch::Prefix(_) => 1,
        PathMatch::Regex(_) => 2,
    }
}

/// Route precedence as a total order, highest precedence first (`Less`): longer path text
/// first; at equal length `Exact` before `Prefix` before `Regex`; then in reverse byte order,
/// as ingress-nginx sorts its locations (only regex paths of equal length can both match).
#[derive(Clone, Copy, Debug)]
pub struct Precedence<'a>(pub &'a PathMatch);

impl Ord for Precedence<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.0, other.0);
        b.as_str()
            .len()
            .cmp(&a.as_str().len())
            .then_with(|| kind_rank(a).cmp(&kind_rank(b)))
            .then_with(|| b.as_str().cmp(a.as_str()))
    }
}

impl PartialOrd for Precedence<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Precedence<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Precedence<'_> {}

/// Identity of a rule for conflict detection: the same kind and text on the same host.
pub fn rule_identity(p: &PathMatch) -> (u8, &str) {
    (kind_rank(p), p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }
    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.into())
    }

    #[test]
    fn path_parsing_table() {
        let table: &[(Option<&str>, &str, Option<PathMatch>)] = &[
            (Some("/foo"), "Prefix", Some(prefix("/foo"))),
            (Some("/foo/"), "Prefix", Some(prefix("/foo"))),
            (Some("/foo//"), "Prefix", Some(prefix("/foo"))),
            (Some("/"), "Prefix", Some(prefix("/"))),
            (None, "Prefix", Some(prefix("/"))),
            (Some(""), "ImplementationSpecific", Some(prefix("/"))),
            (
                Some("/foo/"),
                "ImplementationSpecific",
                Some(prefix("/foo")),
            ),
            (Some("/foo/"), "Exact", Some(exact("/foo/"))),
            (Some("/foo"), "Exact", Some(exact("/foo"))),
            (Some("foo"), "Prefix", None),
            (Some("foo"), "Exact", None),
            (Some("/foo"), "Regex", None),
            (Some("/foo"), "", None),
            (Some("/a\nb"), "Prefix", None),
        ];
        for (raw, ty, want) in table {
            assert_eq!(parse_path(*raw, ty, false).ok(), *want, "{raw:?} {ty}");
        }
    }

    #[test]
    fn prefix_segment_matching_table() {
        let table = [
            ("/foo", "/foo", true),
            ("/foo", "/foo/", true),
            ("/foo", "/foo/bar", true),
            ("/foo", "/foobar", false),
            ("/foo", "/fo", false),
            ("/foo/", "/foo", true),
            ("/foo/bar", "/foo/bar/baz", true),
            ("/foo/bar", "/foo/barbaz", false),
            ("/foo/bar", "/foo", false),
            ("/", "/", true),
            ("/", "/anything/at/all", true),
            ("/FOO", "/foo", false),
        ];
        for (rule, req, want) in table {
            let p = parse_path(Some(rule), "Prefix", false).expect("valid");
            assert_eq!(p.matches(req), want, "rule {rule} request {req}");
        }
    }

    #[test]
    fn exact_matching_table() {
        let table = [
            ("/foo", "/foo", true),
            ("/foo", "/foo/", false),
            ("/foo/", "/foo", false),
            ("/foo", "/FOO", false),
        ];
        for (rule, req, want) in table {
            let p = parse_path(Some(rule), "Exact", false).expect("valid");
            assert_eq!(p.matches(req), want, "rule {rule} request {req}");
        }
    }

    #[test]
    fn regex_paths_are_anchored_and_case_insensitive() {
        let p = parse_path(Some("/api/v[0-9]+(/|$)(.*)"), "Prefix", true).expect("valid");
        assert!(matches!(p, PathMatch::Regex(_)));
        assert!(p.matches("/api/v1/users"));
        assert!(p.matches("/API/V2"));
        assert!(!p.matches("/x/api/v1/"));
        let PathMatch::Regex(r) = &p else {
            unreachable!()
        };
        let caps = r.regex.captures("/api/v1/users").expect("captures");
        assert_eq!(caps.get(2).map(|m| m.as_str()), Some("users"));
        // The type is irrelevant with use-regex; the path must still be absolute.
        assert!(matches!(
            parse_path(Some("/x"), "Exact", true),
            Ok(PathMatch::Regex(_))
        ));
        assert!(parse_path(Some("/(unclosed"), "Prefix", true).is_err());
        assert!(parse_path(Some("x.*"), "Prefix", true).is_err());
    }

    #[test]
    fn precedence_table() {
        let regex = |s: &str| parse_path(Some(s), "Prefix", true).expect("regex");
        let mut routes = vec![
            prefix("/"),
            prefix("/foo"),
            exact("/foo"),
            regex("/foo"),
            prefix("/foo/bar"),
            exact("/a"),
            regex("/foo/.*"),
            prefix("/zzz"),
            exact("/foo/bar/baz"),
            regex("/(.*)/bar"),
            regex("/foo/(.*)"),
        ];
        routes.sort_by(|a, b| Precedence(a).cmp(&Precedence(b)));
        let got: Vec<(u8, &str)> = routes.iter().map(rule_identity).collect();
        assert_eq!(
            got,
            vec![
                (0, "/foo/bar/baz"),
                // Equal length: reverse byte order, so `/foo/bar` goes to `/foo/(.*)` as
                // in ingress-nginx.
                (2, "/foo/(.*)"),
                (2, "/(.*)/bar"),
                (1, "/foo/bar"),
                (2, "/foo/.*"),
                (0, "/foo"),
                (1, "/zzz"),
                (1, "/foo"),
                (2, "/foo"),
                (0, "/a"),
                (1, "/"),
            ]
        );
    }

    #[test]
    fn first_match_in_precedence_order_is_longest_match() {
        // (rules, request, index of the rule that must win)
        type Rules<'a> = &'a [(&'a str, &'a str)];
        let table: &[(Rules, &str, usize)] = &[
            (&[("/", "Prefix"), ("/foo", "Prefix")], "/foo/x", 1),
            (&[("/foo", "Prefix"), ("/foo", "Exact")], "/foo", 1),
            (&[("/foo", "Prefix"), ("/foo", "Exact")], "/foo/", 0),
            (&[("/foo", "Exact"), ("/foo/bar", "Prefix")], "/foo/bar", 1),
            (&[("/", "Prefix"), ("/foo", "Prefix")], "/foobar", 0),
        ];
        for (rules, req, want) in table {
            let parsed: Vec<(usize, PathMatch)> = rules
                .iter()
                .enumerate()
                .map(|(i, (p, t))| (i, parse_path(Some(p), t, false).expect("valid")))
                .collect();
            let mut ordered = parsed.clone();
            ordered.sort_by(|a, b| Precedence(&a.1).cmp(&Precedence(&b.1)));
            let winner = ordered
                .iter()
                .find(|(_, p)| p.matches(req))
                .map(|(i, _)| *i);
            assert_eq!(winner, Some(*want), "{rules:?} {req}");
        }
    }
}
