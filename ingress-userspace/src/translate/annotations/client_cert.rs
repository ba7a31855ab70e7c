//! `auth-tls-secret` (`namespace/name` or `name` of a Secret with a PEM `ca.crt`),
//! `auth-tls-verify-client` (`on`, `off`, `optional`, `optional_no_ca`),
//! `auth-tls-verify-depth`, `auth-tls-error-page`, `auth-tls-pass-certificate-to-upstream`
//! and `auth-tls-match-cn`. The Secret is resolved by the translator; see [`ca_from_secret`].
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::RootCertStore;
use rustls_pki_types::{pem::PemObject, CertificateDer, CertificateRevocationListDer};

use super::{auth::parse_secret_ref, no_space_or_control, AnnotationError, Annotations, Reader};
use crate::{
    config::NamespacedName,
    snapshot::{Crls, Pattern, VerifyClient},
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
        a.policy.client_cert_off = true;
        return Ok(());
    };
    // 0 means the default, as ingress-nginx reads it.
    let depth = r
        .get("auth-tls-verify-depth", |v| {
            super::parse_in_range(v, 0u8..=10)
        })?
        .filter(|d| *d > 0)
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

/// The CAs of the Secret named by `auth-tls-secret`: the certificates under `ca.crt`, the
/// trust anchors made from them, and the revocation lists under `ca.crl` if there is one.
pub fn ca_from_secret(secret: &Secret) -> Result<ClientCa, String> {
    let data = secret.data.as_ref();
    let pem = data.and_then(|d| d.get("ca.crt")).ok_or("no key ca.crt")?;
    let (certs, roots) = ca_bundle(&pem.0)?;
    let crls = match data.and_then(|d| d.get("ca.crl")) {
        Some(pem) => crl_bundle(&pem.0)?,
        None => Crls::default(),
    };
    Ok(ClientCa {
        certs,
        roots: Arc::new(roots),
        crls,
    })
}

/// What a client CA Secret holds.
#[derive(Debug)]
pub struct ClientCa {
    pub certs: Vec<CertificateDer<'static>>,
    pub roots: Arc<RootCertStore>,
    pub crls: Crls,
}

/// A PEM `ca.crl`: one or more X.509 v2 CRLs, each signed by a CA it covers. Refused whole
/// when any list is unreadable: checking fewer lists than the operator gave would let a
/// revoked certificate in.
fn crl_bundle(pem: &[u8]) -> Result<Crls, String> {
    let der = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca.crl: {e}"))?;
    if der.is_empty() {
        return Err("ca.crl: no X509 CRL".into());
    }
    let parsed = der
        .iter()
        .enumerate()
        .map(|(i, d)| {
            webpki::OwnedCertRevocationList::from_der(d.as_ref())
                .map(webpki::CertRevocationList::from)
                .map_err(|e| format!("ca.crl: list {}: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Crls {
        der,
        parsed: Arc::new(parsed),
    })
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
        // 0 is ingress-nginx's way of asking for the default.
        let a = nginx(&[("auth-tls-secret", "ca"), ("auth-tls-verify-depth", "0")]).expect("valid");
        assert_eq!(a.client_cert.expect("client cert").depth, 1);
        // `off` turns the whole family off, Secret included.
        let a =
            nginx(&[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")]).expect("valid");
        assert_eq!(a.client_cert, None);
        assert!(
            a.policy.client_cert_off,
            "forged ssl-client-* headers are replaced"
        );
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
        let ca = ca_from_secret(&secret(Some(bundle.as_bytes()))).expect("valid");
        assert_eq!((ca.certs.len(), ca.roots.len()), (2, 2));
        assert!(ca.crls.der.is_empty() && ca.crls.parsed.is_empty());
        let e = ca_from_secret(&secret(None)).expect_err("no key");
        assert!(e.contains("ca.crt"), "{e}");
        let e = ca_from_secret(&secret(Some(b"not pem"))).expect_err("no cert");
        assert!(e.contains("no certificate"), "{e}");
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ca_from_secret(&secret(Some(broken))).is_err());
    }

    #[test]
    fn revocation_lists_from_the_secret() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .expect("CRL")
        .pem()
        .expect("PEM");
        let with_crl = |crl: &[u8]| {
            let mut s = secret(Some(ca.pem().as_bytes()));
            if let Some(d) = s.data.as_mut() {
                d.insert("ca.crl".to_string(), ByteString(crl.to_vec()));
            }
            ca_from_secret(&s)
        };
        let two = format!("{crl}{crl}");
        let read = with_crl(two.as_bytes()).expect("two lists");
        assert_eq!((read.crls.der.len(), read.crls.parsed.len()), (2, 2));
        // A key that holds no list, or a list that does not parse, refuses the whole Secret:
        // checking fewer lists than given would let revoked certificates in.
        let e = with_crl(b"").expect_err("empty");
        assert!(e.contains("ca.crl"), "{e}");
        let e = with_crl(ca.pem().as_bytes()).expect_err("a certificate, not a CRL");
        assert!(e.contains("no X509 CRL"), "{e}");
        let junk = b"-----BEGIN X509 CRL-----\nMAMCAQA=\n-----END X509 CRL-----\n";
        let e = with_crl(&[crl.as_bytes(), &junk[..]].concat()).expect_err("junk list");
        assert!(e.contains("list 2"), "{e}");
    }
}
