//! `proxy-ssl-secret` (a Secret with `ca.crt` and/or `tls.crt` + `tls.key`), `proxy-ssl-verify`
//! (`on`/`off`), `proxy-ssl-verify-depth`, `proxy-ssl-name`, `proxy-ssl-server-name`,
//! `proxy-ssl-protocols` and `proxy-ssl-ciphers`: TLS towards HTTPS and GRPCS upstreams. The
//! Secret is resolved by the translator; see [`from_secret`].
use k8s_openapi::api::core::v1::Secret;
use rustls::{sign::CertifiedKey, RootCertStore};
use rustls_pki_types::CertificateDer;

use super::{auth::parse_secret_ref, AnnotationError, Annotations, Reader};
use crate::{config::NamespacedName, snapshot::TlsVersions, translate::hosts::validate_dns_name};

/// What the `proxy-ssl-*` annotations ask for, before the Secret is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySslRef {
    pub secret: NamespacedName,
    pub verify: bool,
    pub depth: u8,
    pub name: Option<String>,
    pub sni: bool,
    pub versions: TlsVersions,
    pub tls12_suites: Option<Vec<rustls::CipherSuite>>,
}

pub(super) fn parse(r: &Reader<'_>, a: &mut Annotations) -> Result<(), AnnotationError> {
    let namespace = r.namespace().to_owned();
    let secret = r.get("proxy-ssl-secret", |v| parse_secret_ref(&namespace, v))?;
    let verify = r.get("proxy-ssl-verify", parse_on_off)?.unwrap_or(false);
    // 0 means the default, as ingress-nginx reads it.
    let depth = r
        .get("proxy-ssl-verify-depth", |v| {
            super::parse_in_range(v, 0u8..=10)
        })?
        .filter(|d| *d > 0)
        .unwrap_or(1);
    let name = r.get("proxy-ssl-name", |v| {
        let v = v.to_ascii_lowercase();
        validate_dns_name(&v).map_err(str::to_string)?;
        Ok(v)
    })?;
    let sni = r
        .get("proxy-ssl-server-name", parse_on_off)?
        .unwrap_or(false);
    let versions = r
        .get("proxy-ssl-protocols", parse_protocols)?
        .unwrap_or_default();
    let tls12_suites = r.get("proxy-ssl-ciphers", parse_ciphers)?.flatten();
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
        versions,
        tls12_suites,
    });
    Ok(())
}

/// nginx's `proxy_ssl_protocols` list (and `ssl_protocols`). Versions before 1.2 are
/// accepted in the list (it is ingress-nginx's default) but never offered: rustls has none
/// of them.
pub(crate) fn parse_protocols(v: &str) -> Result<TlsVersions, String> {
    let mut out = TlsVersions {
        tls12: false,
        tls13: false,
    };
    for p in v.split_whitespace() {
        match p {
            "TLSv1" | "TLSv1.1" => {}
            "TLSv1.2" => out.tls12 = true,
            "TLSv1.3" => out.tls13 = true,
            _ => return Err(format!("unknown protocol {p:?} (TLSv1.2, TLSv1.3)")),
        }
    }
    if !out.tls12 && !out.tls13 {
        return Err("needs TLSv1.2 or TLSv1.3 (older versions are not available)".into());
    }
    Ok(out)
}

/// The TLS 1.2 suites rustls has, by their OpenSSL names (as nginx's cipher lists use them).
const OPENSSL_SUITES: [(&str, rustls::CipherSuite); 6] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// nginx's `proxy_ssl_ciphers` and `ssl_ciphers` (OpenSSL's cipher list; TLS 1.2 only, as in
/// nginx). Suites
/// named in it are offered, in its order; `!name` removes one. Keywords (`DEFAULT`, `HIGH`,
/// `!aNULL`, `!MD5`, ...) only ever exclude suites rustls does not have, so they leave its
/// suites as they are. `None`: all of them. Names of suites rustls lacks are skipped, but a
/// list that names suites and leaves none is refused.
pub(crate) fn parse_ciphers(v: &str) -> Result<Option<Vec<rustls::CipherSuite>>, String> {
    let lookup = |name: &str| {
        OPENSSL_SUITES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    };
    let mut named = false;
    let mut chosen: Vec<rustls::CipherSuite> = Vec::new();
    let mut removed: Vec<rustls::CipherSuite> = Vec::new();
    for token in v.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+!@=.".contains(&b))
        {
            return Err(format!("unexpected characters in {token:?}"));
        }
        let (negated, name) = match token.strip_prefix(['!', '-']) {
            Some(rest) => (true, rest),
            None => (false, token.trim_start_matches('+')),
        };
        // A suite name has a key exchange and a cipher joined by dashes; keywords do not.
        if !name.contains('-') {
            continue;
        }
        match (negated, lookup(name)) {
            (true, Some(s)) => removed.push(s),
            (false, Some(s)) => {
                named = true;
                if !chosen.contains(&s) {
                    chosen.push(s);
                }
            }
            (false, None) => named = true,
            (true, None) => {}
        }
    }
    if !named {
        if removed.is_empty() {
            return Ok(None);
        }
        chosen = OPENSSL_SUITES.iter().map(|(_, s)| *s).collect();
    }
    chosen.retain(|s| !removed.contains(s));
    if chosen.is_empty() {
        return Err(
            "leaves no TLS 1.2 suite that is available (ECDHE with AES-GCM or ChaCha20)".into(),
        );
    }
    Ok(Some(chosen))
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
    use rustls::CipherSuite as C;

    #[test]
    fn protocols_and_ciphers() {
        let both = TlsVersions {
            tls12: true,
            tls13: true,
        };
        assert_eq!(parse_protocols("TLSv1.2 TLSv1.3"), Ok(both));
        // ingress-nginx's default lists the old versions too: they are never offered.
        assert_eq!(parse_protocols("TLSv1 TLSv1.1 TLSv1.2 TLSv1.3"), Ok(both));
        assert_eq!(
            parse_protocols("TLSv1.3"),
            Ok(TlsVersions {
                tls12: false,
                tls13: true
            })
        );
        assert!(parse_protocols("TLSv1 TLSv1.1").is_err());
        assert!(parse_protocols("SSLv3 TLSv1.2").is_err());
        assert!(parse_protocols("").is_err());

        // Keywords alone: rustls's suites as they are.
        assert_eq!(parse_ciphers("DEFAULT"), Ok(None));
        assert_eq!(parse_ciphers("HIGH:!aNULL:!MD5"), Ok(None));
        assert_eq!(
            parse_ciphers("ECDHE-RSA-AES256-GCM-SHA384:AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256"),
            Ok(Some(vec![
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]))
        );
        let all_but_one = parse_ciphers("HIGH:!ECDHE-RSA-CHACHA20-POLY1305")
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(all_but_one.len(), 5);
        assert!(!all_but_one.contains(&C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256));
        // Names only of suites rustls lacks: nothing left to offer.
        assert!(parse_ciphers("AES128-SHA:DES-CBC3-SHA").is_err());
        assert!(parse_ciphers("HIGH;rm").is_err());
    }

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
        let p = nginx(&[
            ("proxy-ssl-secret", "upstream"),
            ("proxy-ssl-verify-depth", "0"),
        ])
        .expect("0 is the default")
        .proxy_ssl
        .expect("proxy ssl");
        assert_eq!(p.depth, 1);
    }

    #[test]
    fn invalid_values_reject_the_ingress() {
        for (name, bad) in [
            ("proxy-ssl-verify", "true"),
            ("proxy-ssl-verify-depth", "11"),
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
