//! `mirror-target`, `mirror-host`, `mirror-request-body`: a copy of each request goes to
//! another URL (nginx's `mirror`). The companions are read only with a target.
use std::sync::Arc;

use super::{no_space_or_control, AnnotationError, Annotations, Reader};
use crate::snapshot::Mirror;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let Some(target) = r.get("mirror-target", parse_target)? else {
        return Ok(());
    };
    let host = r.get("mirror-host", super::upstream::parse_vhost)?;
    let body = r
        .get("mirror-request-body", |v| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err("expected on or off".to_string()),
        })?
        .unwrap_or(true);
    a.policy.mirror = Some(Arc::new(Mirror { target, host, body }));
    Ok(())
}

/// The variables a target may hold.
const VARIABLES: [&str; 3] = ["$request_uri", "$host", "$scheme"];

/// An absolute `http(s)://` URL with a host, `$request_uri`, `$host` and `$scheme` allowed.
fn parse_target(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    // Checked with the variables given sample values; any other `$` is refused.
    let sample = v
        .replace("$request_uri", "/sample?x=1")
        .replace("$host", "sample.example")
        .replace("$scheme", "http");
    if sample.contains('$') {
        return Err(format!(
            "unsupported variable (supported: {})",
            VARIABLES.join(", ")
        ));
    }
    let uri: http::Uri = sample.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::snapshot::Mirror;

    #[test]
    fn mirror_target_and_companions() {
        assert_eq!(nginx(&[]).expect("empty").policy.mirror, None);
        let m = ok("mirror-target", "https://shadow.example.com$request_uri")
            .policy
            .mirror
            .map(|m| (*m).clone());
        assert_eq!(
            m,
            Some(Mirror {
                target: "https://shadow.example.com$request_uri".into(),
                host: None,
                body: true,
            })
        );
        let a = nginx(&[
            ("mirror-target", "http://10.0.0.9:8080/copy"),
            ("mirror-host", "shadow.internal"),
            ("mirror-request-body", "off"),
        ])
        .expect("valid");
        let m = a.policy.mirror.expect("mirror");
        assert_eq!(m.host.as_deref(), Some("shadow.internal"));
        assert!(!m.body);
        // Without a target the companions have no effect.
        assert_eq!(ok("mirror-host", "x.example").policy.mirror, None);
        assert_rejects(
            "mirror-target",
            &[
                "shadow.example.com",
                "ftp://x.example/",
                "http://x.example$uri",
                "http://x.example/ a",
                "http://",
            ],
        );
        for (name, bad) in [("mirror-request-body", "yes"), ("mirror-host", "a b")] {
            let e = nginx(&[("mirror-target", "http://x.example"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }
}
