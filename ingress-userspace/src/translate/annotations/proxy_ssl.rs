//! `proxy-ssl-secret` (a Secret with `ca.crt` and/or `tls.crt` + `tls.key`), `proxy-ssl-verify`
//! (`on`/`off`), `proxy-ssl-verify-depth`, `proxy-ssl-name` and `proxy-ssl-server-name`: TLS
//! towards HTTPS and GRPCS upstreams. The Secret is resolved by the translator; see
//! [`from_secret`]. `proxy-ssl-protocols` and `proxy-ssl-ciphers` are not read.
use k8s_openapi::api::core::v1::Secret;
use rustls::{sign::CertifiedKey, RootCertStore};
use rustls_pki_types::CertificateDer;

use super::{auth::parse_secret_ref, AnnotationError, Annotations, Reader};
use crate::{config::NamespacedName, translate::hosts::validate_dns_name};

/// What the `proxy-ssl-*` annotations ask for, before the Secret is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySslRef {
    pub secret: NamespacedName,
    pub verify: bool,
    pub depth: u8,
    pub name: Option<String>,
    pub sni: bool,
}

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let namespace = r.namespace().to_owned();
    let secret = r.get("proxy-ssl-secret", |v| parse_secret_ref(&namespace, v))?;
    let verify = r.get("proxy-ssl-verify", parse_on_off)?.unwrap_or(false);
    let depth = r
        .get("proxy-ssl-verify-depth", |v| {
            super::parse_in_range(v, 1u8..=10)
        })?
        .unwrap_or(1);
    let name = r.get("proxy-ssl-name", |v| {
        let v = v.to_ascii_lowercase();
        validate_dns_name(&v).map_err(str::to_string)?;
        Ok(v)
    })?;
    let sni = r
        .get("proxy-ssl-server-name", parse_on_off)?
        .unwrap_or(false);
    let Some(secret) = secret else {
        if verify {
            // Verifying against nothing would refuse every upstream: say why instead.
            return Err(r.error(
                "proxy-ssl-verify",
                "needs proxy-ssl-secret naming a Secret with ca.crt",
            ));
        }
        return Ok(());
    };
    a.proxy_ssl = Some(ProxySslRef {
        secret,
        verify,
        depth,
        name,
        sni,
    });
    Ok(())
}

fn parse_on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// The CAs (`ca.crt`, required when `verify`) and the client certificate (`tls.crt` and
/// `tls.key`, optional, both or neither) of a `proxy-ssl-secret`.
#[allow(clippy::type_complexity)]
pub fn from_secret(
    secret: &Secret,
    verify: bool,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        RootCertStore,
        Option<CertifiedKey>,
    ),
    String,
> {
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let (ca, roots) = match get("ca.crt") {
        Some(pem) => super::client_cert::ca_bundle(pem)?,
        None if verify => return Err("no key ca.crt (proxy-ssl-verify is on)".into()),
        None => (Vec::new(), RootCertStore::empty()),
    };
    let client = match (get("tls.crt"), get("tls.key")) {
        (Some(chain), Some(key)) => {
            Some(crate::translate::tls::certified_key_from_pem(chain, key)?)
        }
        (None, None) => None,
        _ => return Err("tls.crt and tls.key go together".into()),
    };
    Ok((ca, roots, client))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn settings() {
        assert_eq!(nginx(&[]).expect("empty").proxy_ssl, None);
        let a = nginx(&[
            ("proxy-ssl-secret", "certs/upstream"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-verify-depth", "2"),
            ("proxy-ssl-name", "API.internal"),
            ("proxy-ssl-server-name", "on"),
        ])
        .expect("valid");
        let p = a.proxy_ssl.expect("proxy ssl");
        assert_eq!(p.secret.namespace, "certs");
        assert_eq!(
            (p.verify, p.depth, p.name.as_deref(), p.sni),
            (true, 2, Some("api.internal"), true)
        );
        let p = ok("proxy-ssl-secret", "upstream")
            .proxy_ssl
            .expect("defaults");
        assert_eq!((p.verify, p.depth, p.name, p.sni), (false, 1, None, false));
    }

    #[test]
    fn invalid_values_reject_the_ingress() {
        for (name, bad) in [
            ("proxy-ssl-verify", "true"),
            ("proxy-ssl-verify-depth", "0"),
            ("proxy-ssl-name", "not a name"),
            ("proxy-ssl-name", "$host"),
            ("proxy-ssl-server-name", "yes"),
        ] {
            let e = nginx(&[("proxy-ssl-secret", "s"), (name, bad)]).expect_err(bad);
            assert!(e.key.ends_with(name) && e.value == bad, "{e}");
        }
        let e = nginx(&[("proxy-ssl-verify", "on")]).expect_err("no secret");
        assert!(e.key.ends_with("proxy-ssl-verify"), "{e}");
    }

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        (
                            (*k).to_owned(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn secret_contents() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).expect("cert");
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let (ca, roots, client) =
            from_secret(&secret(&[("ca.crt", &cert)]), true).expect("ca only");
        assert_eq!((ca.len(), roots.len(), client.is_none()), (1, 1, true));
        let (_, _, client) =
            from_secret(&secret(&[("tls.crt", &cert), ("tls.key", &key)]), false).expect("cert");
        assert!(client.is_some());
        let e = from_secret(&secret(&[("tls.crt", &cert)]), false).expect_err("half a pair");
        assert!(e.contains("go together"), "{e}");
        let e = from_secret(&secret(&[("tls.crt", &cert), ("tls.key", &key)]), true)
            .expect_err("verify without ca.crt");
        assert!(e.contains("ca.crt"), "{e}");
        assert!(from_secret(&secret(&[("ca.crt", "junk")]), true).is_err());
    }
}
