//! `rewrite-target`: with a regex path the whole path becomes the target with `$n` expanded
//! from the path's capture groups (nginx `rewrite ... break`); with a prefix path the matched
//! prefix is replaced by the target and the rest kept; an exact path becomes the target.
//! The query string is kept; a target with its own (`/new?a=1`) goes first, as nginx's
//! `rewrite` puts new arguments before the request's, and a target ending in `?` drops them.
use crate::snapshot::PathMatch;

/// Splits a rewritten target into its path and the query the upstream gets, given the
/// request's own query.
pub fn with_query<'a>(rewritten: &'a str, query: Option<&'a str>) -> (&'a str, Option<String>) {
    match rewritten.split_once('?') {
        None => (rewritten, query.map(str::to_string)),
        Some((path, "")) => (path, None),
        Some((path, args)) => (
            path,
            Some(match query {
                Some(q) if !q.is_empty() => format!("{args}&{q}"),
                _ => args.to_string(),
            }),
        ),
    }
}

/// The upstream path for `path` matched by `route_path`, rewritten to `target`.
pub fn rewrite_path(route_path: &PathMatch, target: &str, path: &str) -> String {
    match route_path {
        PathMatch::Regex(r) => match r.regex.captures(path) {
            Some(caps) if caps.get(0).is_some_and(|m| m.start() == 0) => {
                let mut out = String::with_capacity(target.len() + path.len());
                caps.expand(target, &mut out);
                ensure_slash(out)
            }
            _ => ensure_slash(target.to_string()),
        },
        PathMatch::Prefix(p) => {
            let rest = if p == "/" {
                path.strip_prefix('/').unwrap_or(path)
            } else {
                path.strip_prefix(p.as_str()).unwrap_or("")
            };
            let base = target.trim_end_matches('/');
            let out = if rest.is_empty() {
                target.to_string()
            } else if rest.starts_with('/') {
                format!("{base}{rest}")
            } else {
                format!("{base}/{rest}")
            };
            ensure_slash(out)
        }
        PathMatch::Exact(_) => ensure_slash(target.to_string()),
    }
}

fn ensure_slash(s: String) -> String {
    if s.starts_with('/') {
        s
    } else {
        format!("/{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Pattern;

    fn regex(src: &str) -> PathMatch {
        let regex = regex::RegexBuilder::new(&format!("^{src}"))
            .case_insensitive(true)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        PathMatch::Regex(Pattern {
            source: src.into(),
            regex,
        })
    }

    #[test]
    fn a_target_with_a_query_goes_before_the_request_s_and_a_trailing_question_mark_drops_it() {
        assert_eq!(
            with_query("/new", Some("b=2")),
            ("/new", Some("b=2".into()))
        );
        assert_eq!(with_query("/new", None), ("/new", None));
        assert_eq!(
            with_query("/new?a=1", Some("b=2")),
            ("/new", Some("a=1&b=2".into()))
        );
        assert_eq!(with_query("/new?a=1", None), ("/new", Some("a=1".into())));
        assert_eq!(with_query("/new?", Some("b=2")), ("/new", None));
        let p = regex("/old/(.*)");
        let rewritten = rewrite_path(&p, "/new?id=$1", "/old/42");
        assert_eq!(with_query(&rewritten, None), ("/new", Some("id=42".into())));
    }

    #[test]
    fn regex_captures() {
        let p = regex("/something(/|$)(.*)");
        assert_eq!(rewrite_path(&p, "/$2", "/something/new"), "/new");
        assert_eq!(rewrite_path(&p, "/$2", "/something"), "/");
        assert_eq!(rewrite_path(&p, "/x/${2}", "/something/a/b"), "/x/a/b");
    }

    #[test]
    fn prefix_replacement() {
        let p = PathMatch::Prefix("/app".into());
        assert_eq!(rewrite_path(&p, "/", "/app/x/y"), "/x/y");
        assert_eq!(rewrite_path(&p, "/", "/app"), "/");
        assert_eq!(rewrite_path(&p, "/v2", "/app/x"), "/v2/x");
        let root = PathMatch::Prefix("/".into());
        assert_eq!(rewrite_path(&root, "/base", "/x"), "/base/x");
        assert_eq!(
            rewrite_path(&PathMatch::Exact("/a".into()), "/b", "/a"),
            "/b"
        );
    }
}
