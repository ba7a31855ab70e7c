//! `auth-tls-secret` (`namespace/name` or `name` of a Secret with a PEM `ca.crt`),
//! `auth-tls-verify-client` (`on`, `off`, `optional`, `optional_no_ca`),
//! `auth-tls-verify-depth`, `auth-tls-error-page`, `auth-tls-pass-certificate-to-upstream`
//! and `auth-tls-match-cn`. The Secret is resolved by the translator; see [`ca_from_secret`].
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::RootCertStore;
use rustls_pki_types::{pem::PemObject, CertificateDer};

use super::{auth::parse_secret_ref, no_space_or_control, AnnotationError, Annotations, Reader};
use crate::{
    config::NamespacedName,
    snapshot::{Pattern, VerifyClient},
};

/// What the `auth-tls-*` annotations ask for, before the Secret is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertRef {
    pub secret: NamespacedName,
    pub mode: VerifyClient,
    pub depth: u8,
    pub error_page: Option<String>,
    pub pass_certificate: bool,
    pub match_cn: Option<Pattern>,
}

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let namespace = r.namespace().to_owned();
    let Some(secret) = r.get("auth-tls-secret", |v| parse_secret_ref(&namespace, v))? else {
        return Ok(());
    };
    let mode = r
        .get("auth-tls-verify-client", |v| match v {
            "on" => Ok(Some(VerifyClient::On)),
            "off" => Ok(None),
            "optional" => Ok(Some(VerifyClient::Optional)),
            "optional_no_ca" => Ok(Some(VerifyClient::OptionalNoCa)),
            _ => Err("expected on, off, optional or optional_no_ca".to_string()),
        })?
        .unwrap_or(Some(VerifyClient::On));
    let Some(mode) = mode else {
        return Ok(());
    };
    let depth = r
        .get("auth-tls-verify-depth", |v| {
            super::parse_in_range(v, 1u8..=10)
        })?
        .unwrap_or(1);
    let error_page = r.get("auth-tls-error-page", parse_error_page)?;
    let pass_certificate = r
        .flag("auth-tls-pass-certificate-to-upstream")?
        .unwrap_or(false);
    let match_cn = r.get("auth-tls-match-cn", parse_match_cn)?;
    a.client_cert = Some(ClientCertRef {
        secret,
        mode,
        depth,
        error_page,
        pass_certificate,
        match_cn,
    });
    Ok(())
}

/// An absolute `http(s)://` URL or a path on the same host; no nginx variables.
fn parse_error_page(v: &str) -> Result<String, String> {
    no_space_or_control(v)?;
    if v.contains('$') {
        return Err("variables are not supported here".into());
    }
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    match rest {
        Some(rest) => {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            if authority.is_empty() || authority.contains('@') {
                return Err("expected http(s)://host[:port]/path".into());
            }
        }
        None if v.starts_with('/') && !v.starts_with("//") => {}
        None => return Err("expected an http(s):// URL or a path starting with /".into()),
    }
    Ok(v.to_owned())
}

/// A regex on the subject DN, which ingress-nginx requires to start with `CN=`.
fn parse_match_cn(v: &str) -> Result<Pattern, String> {
    if !v.starts_with("CN=") {
        return Err("must start with CN=".into());
    }
    super::compile_pattern(v)
}

/// The CA certificates under `ca.crt` of the Secret named by `auth-tls-secret`, and the
/// trust anchors made from them.
pub fn ca_from_secret(
    secret: &Secret,
) -> Result<(Vec<CertificateDer<'static>>, Arc<RootCertStore>), String> {
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .ok_or("no key ca.crt")?;
    let (certs, roots) = ca_bundle(&pem.0)?;
    Ok((certs, Arc::new(roots)))
}

/// A PEM `ca.crt` bundle: its certificates, in order, and the trust anchors made from them.
pub(crate) fn ca_bundle(
    pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, RootCertStore), String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca.crt: {e}"))?;
    if certs.is_empty() {
        return Err("ca.crt: no certificate".into());
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("ca.crt: certificate {}: {e}", i + 1))?;
    }
    Ok((certs, roots))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::super::test_support::*;
    use super::*;

    #[test]
    fn defaults_and_values() {
        assert_eq!(ok("auth-tls-verify-client", "on").client_cert, None);
        let a = nginx(&[("auth-tls-secret", "certs/ca")]).expect("valid");
        let c = a.client_cert.expect("client cert");
        assert_eq!(
            (c.secret.namespace.as_str(), c.secret.name.as_str()),
            ("certs", "ca")
        );
        assert_eq!(
            (c.mode, c.depth, c.pass_certificate),
            (VerifyClient::On, 1, false)
        );
        let a = nginx(&[
            ("auth-tls-secret", "ca"),
            ("auth-tls-verify-client", "optional_no_ca"),
            ("auth-tls-verify-depth", "3"),
            (
                "auth-tls-error-page",
                "https://errors.example.com/cert.html",
            ),
            ("auth-tls-pass-certificate-to-upstream", "true"),
            ("auth-tls-match-cn", "CN=(alice|bob)$"),
        ])
        .expect("valid");
        let c = a.client_cert.expect("client cert");
        assert_eq!(c.secret.name, "ca");
        assert_eq!(
            (c.mode, c.depth, c.pass_certificate),
            (VerifyClient::OptionalNoCa, 3, true)
        );
        assert_eq!(
            c.error_page.as_deref(),
            Some("https://errors.example.com/cert.html")
        );
        assert!(c.match_cn.is_some_and(|p| p.regex.is_match("CN=bob")));
        // `off` turns the whole family off, Secret included.
        let a =
            nginx(&[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")]).expect("valid");
        assert_eq!(a.client_cert, None);
        assert!(nginx(&[
            ("auth-tls-secret", "ca"),
            ("auth-tls-error-page", "/cert-error")
        ])
        .expect("a path")
        .client_cert
        .is_some());
    }

    #[test]
    fn invalid_values_reject_the_ingress() {
        for (name, bad) in [
            ("auth-tls-secret", "Not/A/Name"),
            ("auth-tls-verify-client", "required"),
            ("auth-tls-verify-depth", "0"),
            ("auth-tls-verify-depth", "11"),
            ("auth-tls-error-page", "errors.example.com"),
            ("auth-tls-error-page", "//evil.example.com/x"),
            ("auth-tls-error-page", "https://$host/x"),
            ("auth-tls-error-page", "https:///x"),
            ("auth-tls-pass-certificate-to-upstream", "yes"),
            ("auth-tls-match-cn", "alice"),
            ("auth-tls-match-cn", "CN=(alice"),
        ] {
            let pairs = if name == "auth-tls-secret" {
                vec![(name, bad)]
            } else {
                vec![("auth-tls-secret", "ca"), (name, bad)]
            };
            let e = nginx(&pairs).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
    }

    fn secret(ca: Option<&[u8]>) -> Secret {
        let mut data = BTreeMap::new();
        if let Some(ca) = ca {
            data.insert("ca.crt".to_string(), ByteString(ca.to_vec()));
        }
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn ca_bundle_from_the_secret() {
        let make = || {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&key).expect("cert").pem()
        };
        let bundle = format!("{}{}", make(), make());
        let (certs, roots) = ca_from_secret(&secret(Some(bundle.as_bytes()))).expect("valid");
        assert_eq!((certs.len(), roots.len()), (2, 2));
        let e = ca_from_secret(&secret(None)).expect_err("no key");
        assert!(e.contains("ca.crt"), "{e}");
        let e = ca_from_secret(&secret(Some(b"not pem"))).expect_err("no cert");
        assert!(e.contains("no certificate"), "{e}");
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ca_from_secret(&secret(Some(broken))).is_err());
    }
}
