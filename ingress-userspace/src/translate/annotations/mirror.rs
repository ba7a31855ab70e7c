//! `mirror-target`, `mirror-host`, `mirror-request-body`: a copy of each request goes to
//! another URL (nginx's `mirror`). The companions are read only with a target.
use std::sync::Arc;

use super::{AnnotationError, Annotations, Reader};
use crate::snapshot::Mirror;

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let Some(target) = r.get("mirror-target", super::external_auth::parse_url)? else {
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
