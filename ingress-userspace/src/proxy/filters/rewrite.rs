//! `rewrite-target`: with a regex path the whole path becomes the target with `$n` expanded
//! from the path's capture groups (nginx `rewrite ... break`); with a prefix path the matched
//! prefix is replaced by the target and the rest kept; an exact path becomes the target.
//! The query string is kept; a target with its own (`/new?a=1`) goes first, as nginx's
//! `rewrite` puts new arguments before the request's, and a target ending in `?` drops them.
use crate::snapshot::PathMatch;

/// The upstream path and query for `path` (with the request's `query`) matched by
/// `route_path`, rewritten to `target`. The target's own query, if any, is expanded like its
/// path (capture groups) and goes before the request's; an empty one drops the request's.
pub fn rewrite(
    route_path: &PathMatch,
    target: &str,
    path: &str,
    query: Option<&str>,
) -> (String, Option<String>) {
    let (target_path, target_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let new_path = rewrite_path(route_path, target_path, path);
    let new_query = match target_query {
        None => query.map(str::to_string),
        Some("") => None,
        Some(args) => {
            let args = expand(route_path, args, path);
            Some(match query {
                Some(q) if !q.is_empty() => format!("{args}&{q}"),
                _ => args,
            })
        }
    };
    (new_path, new_query)
}

/// `template` with `$n` expanded from a regex path's capture groups (as is, otherwise).
fn expand(route_path: &PathMatch, template: &str, path: &str) -> String {
    match route_path {
        PathMatch::Regex(r) => match r.regex.captures(path) {
            Some(caps) if caps.get(0).is_some_and(|m| m.start() == 0) => {
                let mut out = String::with_capacity(template.len() + path.len());
                expand_nginx(&caps, template, &mut out);
                out
            }
            _ => template.to_string(),
        },
        _ => template.to_string(),
    }
}

/// Appends `template` to `out` with capture references expanded as nginx does: `$1`..`$9` are
/// one digit each (`$1a` is group 1 then `a`, `$10` group 1 then `0`), where the regex
/// crate would read a group named `1a` or group 10. Named groups (`$name`, `${name}`) and
/// `${n}` keep the regex crate's reading.
fn expand_nginx(caps: &regex::Captures<'_>, template: &str, out: &mut String) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let len = match rest.as_bytes().first() {
            Some(d) if d.is_ascii_digit() => {
                if let Some(m) = caps.get(usize::from(d - b'0')) {
                    out.push_str(m.as_str());
                }
                rest = &rest[1..];
                continue;
            }
            Some(b'{') => rest.find('}').map_or(0, |end| end + 1),
            _ => rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count(),
        };
        if len == 0 {
            out.push('$');
            continue;
        }
        caps.expand(&format!("${}", &rest[..len]), out);
        rest = &rest[len..];
    }
    out.push_str(rest);
}

/// The upstream path for `path` matched by `route_path`, rewritten to `target`.
pub fn rewrite_path(route_path: &PathMatch, target: &str, path: &str) -> String {
    match route_path {
        PathMatch::Regex(_) => ensure_slash(expand(route_path, target, path)),
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
    fn capture_references_are_one_digit_as_in_nginx() {
        let re = regex("/f/(?<name>[a-z]+)(/|$)(.*)");
        let to = |target: &str| rewrite_path(&re, target, "/f/report/x");
        assert_eq!(to("/files/$1_v2"), "/files/report_v2");
        assert_eq!(to("/files/$1a"), "/files/reporta");
        assert_eq!(to("/$10"), "/report0");
        assert_eq!(to("/$3/${1}x"), "/x/reportx");
        assert_eq!(to("/n/$name/${name}"), "/n/report/report");
        assert_eq!(to("/cost$/$"), "/cost$/$");
        assert_eq!(to("/$9"), "/");
    }

    #[test]
    fn a_target_with_a_query_goes_before_the_request_s_and_a_trailing_question_mark_drops_it() {
        let p = PathMatch::Prefix("/old".into());
        let q = |target, path, query| rewrite(&p, target, path, query);
        assert_eq!(
            q("/new", "/old", Some("b=2")),
            ("/new".into(), Some("b=2".into()))
        );
        assert_eq!(q("/new", "/old", None), ("/new".into(), None));
        assert_eq!(
            q("/new?a=1", "/old", Some("b=2")),
            ("/new".into(), Some("a=1&b=2".into()))
        );
        assert_eq!(
            q("/new?a=1", "/old", None),
            ("/new".into(), Some("a=1".into()))
        );
        assert_eq!(q("/new?", "/old", Some("b=2")), ("/new".into(), None));
        let re = regex("/old/(.*)");
        assert_eq!(
            rewrite(&re, "/new?id=$1", "/old/42", None),
            ("/new".into(), Some("id=42".into()))
        );
        // A `?` of the (decoded) request path is path, not a query.
        assert_eq!(
            rewrite(&re, "/new/$1", "/old/x?y", Some("q=1")),
            ("/new/x?y".into(), Some("q=1".into()))
        );
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
