//! `proxy-cookie-path` and `proxy-cookie-domain`: nginx's `proxy_cookie_path` and
//! `proxy_cookie_domain`, each `from to` or `off`. nginx's regex forms (`~`) are refused.
use super::{AnnotationError, Annotations, Reader};
use crate::snapshot::CookieRewrite;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let path = r
        .get("proxy-cookie-path", |v| {
            pair(v, |p| {
                p.starts_with('/')
                    .then_some(())
                    .ok_or_else(|| format!("{p:?} is not a path starting with /"))
            })
        })?
        .flatten();
    let domain = r
        .get("proxy-cookie-domain", |v| {
            pair(v, |d| {
                let bare = d.strip_prefix('.').unwrap_or(d);
                let ok = !bare.is_empty()
                    && bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                ok.then_some(())
                    .ok_or_else(|| format!("{d:?} is not a domain"))
            })
        })?
        .flatten();
    if path.is_some() || domain.is_some() {
        a.policy.cookie_rewrite = Some(CookieRewrite { path, domain });
    }
    Ok(())
}

/// `from to` (each checked by `valid`), or `off`.
fn pair(
    v: &str,
    valid: impl Fn(&str) -> Result<(), String>,
) -> Result<Option<(String, String)>, String> {
    if v == "off" {
        return Ok(None);
    }
    let words: Vec<&str> = v.split_ascii_whitespace().collect();
    let [from, to] = words[..] else {
        return Err("expected \"<from> <to>\" or off".into());
    };
    if from.starts_with('~') {
        return Err("regular expressions are not supported".into());
    }
    if to.contains(['$', ';', ',']) {
        return Err("the replacement must be literal (no variables, ; or ,)".into());
    }
    valid(from)?;
    valid(to)?;
    Ok(Some((from.to_owned(), to.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::snapshot::CookieRewrite;

    #[test]
    fn path_and_domain() {
        assert_eq!(nginx(&[]).expect("empty").policy.cookie_rewrite, None);
        let a = nginx(&[
            ("proxy-cookie-path", "/two/ /"),
            ("proxy-cookie-domain", "localhost  example.org"),
        ])
        .expect("valid");
        assert_eq!(
            a.policy.cookie_rewrite,
            Some(CookieRewrite {
                path: Some(("/two/".into(), "/".into())),
                domain: Some(("localhost".into(), "example.org".into())),
            })
        );
        let only_domain = ok("proxy-cookie-domain", ".internal .example.com");
        assert_eq!(
            only_domain.policy.cookie_rewrite.and_then(|c| c.domain),
            Some((".internal".into(), ".example.com".into()))
        );
        assert_eq!(ok("proxy-cookie-path", "off").policy.cookie_rewrite, None);
        assert_rejects(
            "proxy-cookie-path",
            &[
                "/a",
                "/a /b /c",
                "a /b",
                "~^/(.+)$ /$1",
                "/a /$host",
                "/a /b;x",
            ],
        );
        assert_rejects(
            "proxy-cookie-domain",
            &["x", "a b c", "~internal$ example.com", "a b/c", "a ."],
        );
    }
}
