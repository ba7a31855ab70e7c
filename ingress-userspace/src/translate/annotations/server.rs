//! Settings of the virtual host rather than of a route: `server-alias` (more names for the
//! host, comma-separated) and `from-to-www-redirect` (`www.` + host redirects to the host,
//! or the other way round).
use super::{AnnotationError, Annotations, Reader};
use crate::{snapshot::HostMatch, translate::hosts::parse_host};

/// More aliases than any real server block uses; bounds the router's tables.
const MAX_ALIASES: usize = 32;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    a.server_aliases = r.get("server-alias", parse_aliases)?.unwrap_or_default();
    a.www_redirect = r.flag("from-to-www-redirect")?.unwrap_or(false);
    Ok(())
}

/// Host names (`*.` wildcards allowed), separated by commas and/or spaces, as nginx's
/// `server_name` takes them.
fn parse_aliases(v: &str) -> Result<Vec<HostMatch>, String> {
    let mut out: Vec<HostMatch> = Vec::new();
    for name in v.split([',', ' ']).filter(|s| !s.is_empty()) {
        let host = parse_host(name)?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    if out.is_empty() {
        return Err("expected one or more host names".into());
    }
    if out.len() > MAX_ALIASES {
        return Err(format!("at most {MAX_ALIASES} aliases"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::snapshot::HostMatch;

    #[test]
    fn aliases_and_www_redirect() {
        let a = ok(
            "server-alias",
            "Alias.Example.com, *.alt.example.com,alias.example.com",
        );
        assert_eq!(
            a.server_aliases,
            vec![
                HostMatch::Exact("alias.example.com".into()),
                HostMatch::Wildcard("alt.example.com".into()),
            ]
        );
        assert!(!a.www_redirect);
        assert!(ok("from-to-www-redirect", "true").www_redirect);
        assert_rejects(
            "server-alias",
            &["", ",", "bad_name.example", "10.0.0.1", "a..b"],
        );
        assert_rejects("from-to-www-redirect", &["yes"]);
        let many = (0..33)
            .map(|i| format!("h{i}.example"))
            .collect::<Vec<_>>()
            .join(",");
        assert_rejects("server-alias", &[many.as_str()]);
    }
}
