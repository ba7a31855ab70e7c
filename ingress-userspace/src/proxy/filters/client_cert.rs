//! Client certificates (`auth-tls-*`): the chain a client sent in the handshake judged
//! against the host's CA bundle, the answer nginx gives when it does not do, and the
//! `ssl-client-*` headers ingress-nginx sends upstream.
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::{
    proxy::{body::ResponseBody, errors},
    snapshot::{ClientAuth, VerifyClient},
};

/// `ssl-client-verify`: `SUCCESS`, `NONE` or `FAILED:<reason>`.
pub const VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
/// `ssl-client-subject-dn`: the client certificate's subject, RFC 4514 (as nginx's
/// `$ssl_client_s_dn`).
pub const SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
/// `ssl-client-issuer-dn`: its issuer, the same way.
pub const ISSUER_DN: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
/// `ssl-client-cert`: the client certificate in PEM, URL-escaped (nginx's
/// `$ssl_client_escaped_cert`), with `auth-tls-pass-certificate-to-upstream`.
pub const CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// What the client's certificate came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// It chains to the CA bundle within the allowed depth.
    Success,
    /// The client sent none.
    None,
    /// It does not verify.
    Failed(Failure),
}

/// Why a certificate does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// OpenSSL's words for it where it has them, as nginx's `$ssl_client_verify` says it.
    pub reason: String,
    /// Nothing is wrong with it but an unknown issuer: what `optional_no_ca` lets pass.
    pub issuer_only: bool,
}

/// The judgement on one connection's certificate against one host's settings.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub status: Status,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// The leaf certificate as URL-escaped PEM.
    pub escaped_pem: Option<String>,
}

/// Judges `chain` (leaf first, as sent) against `auth` at `now`.
pub fn verify(
    auth: &ClientAuth,
    chain: Option<&[CertificateDer<'static>]>,
    now: UnixTime,
) -> Verdict {
    let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
        return Verdict {
            status: Status::None,
            subject: None,
            issuer: None,
            escaped_pem: None,
        };
    };
    let (subject, issuer) = names(leaf).unzip();
    let escaped_pem = Some(escaped_pem(leaf));
    let status = match chain_status(auth, leaf, intermediates, now) {
        Ok(()) => Status::Success,
        Err(e) => Status::Failed(failure(&e, leaf, intermediates)),
    };
    Verdict {
        status,
        subject,
        issuer,
        escaped_pem,
    }
}

fn chain_status(
    auth: &ClientAuth,
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<(), webpki::Error> {
    // With `ca.crl`, as nginx's `ssl_crl` (OpenSSL's CRL_CHECK_ALL): every certificate of
    // the chain below the trust anchor needs a current list from its issuer, and is refused
    // when it is revoked, its issuer has no list, or the list has expired.
    let lists: Vec<&webpki::CertRevocationList<'static>> = auth.crls.parsed.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&lists).ok().map(|b| {
        b.with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build()
    });
    crate::proxy::tls::verify_chain(
        &auth.roots,
        leaf,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        auth.depth,
        revocation,
    )
}

/// `e` in OpenSSL's words (`X509_verify_cert_error_string`), which upstreams behind nginx
/// read in `ssl-client-verify`, and whether `optional_no_ca` passes it: nginx lets only the
/// errors of an unknown issuer through (`ngx_ssl_verify_error_optional`), so an expired or
/// revoked certificate is refused in that mode too.
fn failure(
    e: &webpki::Error,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Failure {
    use webpki::Error as E;
    // `openssl req -x509` marks a self-signed certificate as a CA, which OpenSSL does not
    // mind in a leaf and webpki refuses before looking for an issuer. A signature that a
    // CA of the bundle with the issuer's name did not make is another issuer's: OpenSSL
    // skips such a CA by its key identifier, webpki tries it and reports the signature.
    let issuer_only = match e {
        E::UnknownIssuer | E::InvalidSignatureForPublicKey => true,
        E::CaUsedAsEndEntity => self_issued(leaf),
        _ => false,
    };
    let reason = match e {
        E::UnknownIssuer | E::CaUsedAsEndEntity if self_issued(leaf) => "self-signed certificate",
        _ if issuer_only && intermediates.iter().any(|c| self_issued(c)) => {
            "self-signed certificate in certificate chain"
        }
        _ if issuer_only => "unable to get local issuer certificate",
        E::CertExpired { .. } => "certificate has expired",
        E::CertNotValidYet { .. } => "certificate is not yet valid",
        E::CertRevoked => "certificate revoked",
        E::UnknownRevocationStatus => "unable to get certificate CRL",
        E::CrlExpired { .. } => "CRL has expired",
        E::MaximumPathDepthExceeded => "certificate chain too long",
        E::RequiredEkuNotFoundContext(_) => "unsupported certificate purpose",
        other => {
            return Failure {
                reason: format!("{other:?}"),
                issuer_only: false,
            }
        }
    };
    Failure {
        reason: reason.to_owned(),
        issuer_only,
    }
}

/// Whether a certificate names itself as its issuer.
fn self_issued(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref())
        .is_ok_and(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
}

/// Subject and issuer of a certificate, RFC 4514 (last RDN first), as nginx prints them.
fn names(der: &CertificateDer<'_>) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some((rfc4514(cert.subject()), rfc4514(cert.issuer())))
}

fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<&x509_parser::x509::RelativeDistinguishedName<'_>> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(v) => escape_value(v, &mut out),
                // Not a string type: the DER value in hex, as RFC 4514 says.
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().data.iter() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// RFC 4514 escaping, plus control characters as `\XX` so the name fits in a header.
fn escape_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

/// The certificate as PEM, percent-encoded except for unreserved characters.
fn escaped_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    super::external_auth::escape(&pem)
}

/// Removes what a client sent under the names the proxy sets, so an upstream never sees a
/// forged verification result.
pub fn strip(headers: &mut HeaderMap) {
    for name in [VERIFY, SUBJECT_DN, ISSUER_DN, CERT] {
        headers.remove(name);
    }
}

/// Whether the request may go on, and with which headers; else the answer. nginx's
/// texts: 400 "No required SSL certificate was sent" and "The SSL certificate error" (or a
/// redirect to `auth-tls-error-page`), 403 when `auth-tls-match-cn` does not match.
pub fn decide(
    auth: &ClientAuth,
    verdict: &Verdict,
) -> Result<Vec<(HeaderName, HeaderValue)>, Box<Response<ResponseBody>>> {
    if auth.denied {
        return Err(Box::new(errors::status_response(
            StatusCode::SERVICE_UNAVAILABLE,
        )));
    }
    let refusal = match (&verdict.status, auth.mode) {
        (Status::Success, _)
        | (Status::None, VerifyClient::Optional | VerifyClient::OptionalNoCa) => None,
        (Status::Failed(f), VerifyClient::OptionalNoCa) if f.issuer_only => None,
        (Status::None, VerifyClient::On) => Some("400 No required SSL certificate was sent\n"),
        (Status::Failed(_), _) => Some("400 The SSL certificate error\n"),
    };
    if let Some(text) = refusal {
        return Err(Box::new(match &auth.error_page {
            Some(page) => errors::redirect(StatusCode::FOUND, page),
            None => {
                errors::text_response(StatusCode::BAD_REQUEST, Bytes::from_static(text.as_bytes()))
            }
        }));
    }
    if let Some(cn) = &auth.match_cn {
        if !verdict
            .subject
            .as_deref()
            .is_some_and(|s| cn.regex.is_match(s))
        {
            return Err(Box::new(errors::text_response(
                StatusCode::FORBIDDEN,
                Bytes::from_static(b"403 client certificate unauthorized\n"),
            )));
        }
    }
    let mut out = Vec::with_capacity(4);
    let verify = match &verdict.status {
        Status::Success => "SUCCESS".to_owned(),
        Status::None => "NONE".to_owned(),
        Status::Failed(f) => format!("FAILED:{}", f.reason),
    };
    let mut push = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
            out.push((name, v));
        }
    };
    push(VERIFY, &verify);
    if let Some(s) = &verdict.subject {
        push(SUBJECT_DN, s);
    }
    if let Some(s) = &verdict.issuer {
        push(ISSUER_DN, s);
    }
    if auth.pass_certificate {
        if let Some(pem) = &verdict.escaped_pem {
            push(CERT, pem);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

    use super::*;
    use crate::snapshot::{ObjectRef, Pattern};

    type Ca = CertifiedIssuer<'static, KeyPair>;

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        match parent {
            None => CertifiedIssuer::self_signed(p, key),
            Some(parent) => CertifiedIssuer::signed_by(p, key, parent),
        }
        .expect("CA")
    }

    fn client(cn: &str, issuer: &Ca) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        // rcgen starts every name with a CN of its own; DER order here: O, then CN.
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "Example, Inc.");
        p.distinguished_name.push(DnType::CommonName, cn);
        signed_client(p, issuer)
    }

    /// A client certificate made from `p`, signed by `issuer`.
    fn signed_client(mut p: CertificateParams, issuer: &Ca) -> CertificateDer<'static> {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        p.signed_by(&key, issuer)
            .expect("client cert")
            .der()
            .clone()
    }

    fn expired_client(cn: &str, issuer: &Ca) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        signed_client(p, issuer)
    }

    fn auth(roots: &[&Ca], mode: VerifyClient, depth: u8) -> ClientAuth {
        let ca: Vec<CertificateDer<'static>> = roots.iter().map(|c| c.der().clone()).collect();
        let mut store = rustls::RootCertStore::empty();
        for c in &ca {
            store.add(c.clone()).expect("anchor");
        }
        ClientAuth {
            origin: ObjectRef::default(),
            secret: "ns/ca".into(),
            ca,
            roots: Arc::new(store),
            crls: Default::default(),
            mode,
            depth,
            error_page: None,
            pass_certificate: false,
            match_cn: None,
            denied: false,
        }
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    fn client_with_serial(cn: &str, issuer: &Ca, serial: u64) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(serial.into());
        signed_client(p, issuer)
    }

    /// A CRL from `issuer` revoking `serials`, current until `until` (a year).
    fn crl(issuer: &Ca, serials: &[u64], until: i32) -> webpki::CertRevocationList<'static> {
        let p = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(until, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: (*s).into(),
                    revocation_time: rcgen::date_time_ymd(2020, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let der = p.signed_by(issuer).expect("CRL").der().clone();
        webpki::OwnedCertRevocationList::from_der(der.as_ref())
            .expect("parses")
            .into()
    }

    fn with_crls(mut a: ClientAuth, lists: Vec<webpki::CertRevocationList<'static>>) -> ClientAuth {
        a.crls.parsed = Arc::new(lists);
        a
    }

    #[test]
    fn a_revoked_client_fails_and_the_others_pass() {
        let root = ca("Test Root", None);
        let a = with_crls(
            auth(&[&root], VerifyClient::On, 1),
            vec![crl(&root, &[2], 2099)],
        );
        let alice = client_with_serial("alice", &root, 1);
        assert_eq!(verify(&a, Some(&[alice]), now()).status, Status::Success);
        let bob = client_with_serial("bob", &root, 2);
        let v = verify(&a, Some(&[bob]), now());
        assert!(
            matches!(&v.status, Status::Failed(f) if f.reason == "certificate revoked"),
            "{v:?}"
        );
    }

    #[test]
    fn every_ca_of_the_chain_needs_a_current_list() {
        let root = ca("Test Root", None);
        let mid = ca("Test Intermediate", Some(&root));
        let chain = [client_with_serial("carol", &mid, 7), mid.der().clone()];
        let base = || auth(&[&root], VerifyClient::On, 2);
        // The root's list alone says nothing about carol: refused, as nginx's CRL_CHECK_ALL.
        let a = with_crls(base(), vec![crl(&root, &[], 2099)]);
        let v = verify(&a, Some(&chain), now());
        assert!(
            matches!(&v.status, Status::Failed(f) if f.reason == "unable to get certificate CRL"),
            "{v:?}"
        );
        let a = with_crls(base(), vec![crl(&root, &[], 2099), crl(&mid, &[8], 2099)]);
        assert_eq!(verify(&a, Some(&chain), now()).status, Status::Success);
        // A list past its next update no longer counts.
        let a = with_crls(base(), vec![crl(&root, &[], 2099), crl(&mid, &[], 2021)]);
        let v = verify(&a, Some(&chain), now());
        assert!(
            matches!(&v.status, Status::Failed(f) if f.reason == "CRL has expired"),
            "{v:?}"
        );
    }

    #[test]
    fn a_chain_to_the_bundle_verifies_and_names_are_rfc4514() {
        let root = ca("Test Root", None);
        let leaf = client("alice", &root);
        let v = verify(&auth(&[&root], VerifyClient::On, 1), Some(&[leaf]), now());
        assert_eq!(v.status, Status::Success);
        // Last RDN first, and the comma inside the organisation escaped.
        assert_eq!(v.subject.as_deref(), Some("CN=alice,O=Example\\, Inc."));
        assert_eq!(v.issuer.as_deref(), Some("CN=Test Root"));
        let pem = v.escaped_pem.expect("pem");
        assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
        assert!(pem.bytes().all(|b| b.is_ascii_graphic()), "{pem}");
    }

    #[test]
    fn other_cas_missing_chains_and_garbage_do_not_verify() {
        let root = ca("Test Root", None);
        let other = ca("Other Root", None);
        let a = auth(&[&root], VerifyClient::On, 3);
        let v = verify(&a, Some(&[client("mallory", &other)]), now());
        assert!(matches!(v.status, Status::Failed(_)), "{v:?}");
        // Its names are still reported, as nginx's variables are.
        assert_eq!(v.subject.as_deref(), Some("CN=mallory,O=Example\\, Inc."));
        assert_eq!(verify(&a, None, now()).status, Status::None);
        assert_eq!(verify(&a, Some(&[]), now()).status, Status::None);
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03]);
        let v = verify(&a, Some(&[garbage]), now());
        assert!(matches!(v.status, Status::Failed(_)) && v.subject.is_none());
        // Outside its validity (rcgen's certificates start in 1975).
        let v = verify(
            &a,
            Some(&[client("alice", &root)]),
            UnixTime::since_unix_epoch(Duration::from_secs(86_400)),
        );
        assert!(
            matches!(&v.status, Status::Failed(f) if f.reason == "certificate is not yet valid"),
            "{v:?}"
        );
    }

    #[test]
    fn depth_counts_the_intermediates_as_openssl_does() {
        let root = ca("Test Root", None);
        let mid = ca("Test Intermediate", Some(&root));
        let chain = [client("bob", &mid), mid.der().clone()];
        let v = verify(&auth(&[&root], VerifyClient::On, 0), Some(&chain), now());
        assert!(
            matches!(&v.status, Status::Failed(f) if f.reason == "certificate chain too long"),
            "{v:?}"
        );
        // The default depth 1 takes a client certificate from an issuing CA under the root
        // in `ca.crt`, as nginx does.
        let v = verify(&auth(&[&root], VerifyClient::On, 1), Some(&chain), now());
        assert_eq!(v.status, Status::Success);
        // Without the intermediate the chain is incomplete at any depth.
        let v = verify(
            &auth(&[&root], VerifyClient::On, 5),
            Some(&chain[..1]),
            now(),
        );
        assert!(matches!(v.status, Status::Failed(_)));
    }

    fn refused_with(r: Result<Vec<(HeaderName, HeaderValue)>, Box<Response<ResponseBody>>>) -> u16 {
        match r {
            Ok(h) => panic!("allowed with {h:?}"),
            Err(resp) => resp.status().as_u16(),
        }
    }

    fn allowed(
        r: Result<Vec<(HeaderName, HeaderValue)>, Box<Response<ResponseBody>>>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        match r {
            Ok(h) => h,
            Err(resp) => panic!("refused with {}", resp.status()),
        }
    }

    fn header<'a>(set: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        set.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn decisions_by_mode() {
        let root = ca("Test Root", None);
        let other = ca("Other Root", None);
        let good = [client("alice", &root)];
        let bad = [client("mallory", &other)];
        let on = auth(&[&root], VerifyClient::On, 1);
        let set = allowed(decide(&on, &verify(&on, Some(&good), now())));
        assert_eq!(header(&set, &VERIFY), Some("SUCCESS"));
        assert_eq!(
            header(&set, &SUBJECT_DN),
            Some("CN=alice,O=Example\\, Inc.")
        );
        assert_eq!(header(&set, &CERT), None, "not passed unless asked");
        assert_eq!(refused_with(decide(&on, &verify(&on, None, now()))), 400);
        assert_eq!(
            refused_with(decide(&on, &verify(&on, Some(&bad), now()))),
            400
        );

        let optional = auth(&[&root], VerifyClient::Optional, 1);
        let set = allowed(decide(&optional, &verify(&optional, None, now())));
        assert_eq!(header(&set, &VERIFY), Some("NONE"));
        assert_eq!(
            refused_with(decide(&optional, &verify(&optional, Some(&bad), now()))),
            400
        );

        let mut no_ca = auth(&[&root], VerifyClient::OptionalNoCa, 1);
        no_ca.pass_certificate = true;
        let set = allowed(decide(&no_ca, &verify(&no_ca, Some(&bad), now())));
        assert!(header(&set, &VERIFY).is_some_and(|v| v.starts_with("FAILED:")));
        assert!(header(&set, &CERT).is_some_and(|v| v.contains("BEGIN%20CERTIFICATE")));

        // `optional_no_ca` passes an unknown issuer only, as nginx's
        // `ngx_ssl_verify_error_optional`: an expired certificate is refused.
        let plain_self_signed = {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name.push(DnType::CommonName, "Self");
            p.self_signed(&KeyPair::generate().expect("key"))
                .expect("self-signed")
                .der()
                .clone()
        };
        // The second is a CA, as `openssl req -x509` makes them.
        for leaf in [plain_self_signed, ca("Self", None).der().clone()] {
            let v = verify(&no_ca, Some(&[leaf]), now());
            assert_eq!(
                header(&allowed(decide(&no_ca, &v)), &VERIFY),
                Some("FAILED:self-signed certificate")
            );
        }
        let with_root = [client("mallory", &other), other.der().clone()];
        let v = verify(&no_ca, Some(&with_root), now());
        assert_eq!(
            header(&allowed(decide(&no_ca, &v)), &VERIFY),
            Some("FAILED:self-signed certificate in certificate chain")
        );
        let v = verify(&no_ca, Some(&bad), now());
        assert_eq!(
            header(&allowed(decide(&no_ca, &v)), &VERIFY),
            Some("FAILED:unable to get local issuer certificate")
        );
        for issuer in [&root, &other] {
            let expired = [expired_client("old", issuer)];
            let v = verify(&no_ca, Some(&expired), now());
            assert!(
                matches!(&v.status, Status::Failed(f) if f.reason == "certificate has expired"),
                "{v:?}"
            );
            assert_eq!(refused_with(decide(&no_ca, &v)), 400);
        }

        let mut paged = auth(&[&root], VerifyClient::On, 1);
        paged.error_page = Some("https://errors.example/cert.html".into());
        match decide(&paged, &verify(&paged, None, now())) {
            Err(r) => {
                assert_eq!(r.status(), StatusCode::FOUND);
                assert_eq!(
                    r.headers()
                        .get(http::header::LOCATION)
                        .and_then(|v| v.to_str().ok()),
                    Some("https://errors.example/cert.html")
                );
            }
            Ok(h) => panic!("allowed with {h:?}"),
        }

        let mut cn = auth(&[&root], VerifyClient::Optional, 1);
        cn.match_cn = Some(Pattern {
            source: "CN=alice".into(),
            regex: regex::Regex::new("CN=alice").expect("regex"),
        });
        allowed(decide(&cn, &verify(&cn, Some(&good), now())));
        let carol = [client("carol", &root)];
        assert_eq!(
            refused_with(decide(&cn, &verify(&cn, Some(&carol), now()))),
            403
        );
        assert_eq!(refused_with(decide(&cn, &verify(&cn, None, now()))), 403);

        let mut denied = auth(&[], VerifyClient::On, 1);
        denied.denied = true;
        assert_eq!(
            refused_with(decide(&denied, &verify(&denied, Some(&good), now()))),
            503
        );
    }

    #[test]
    fn values_are_escaped_for_names_and_headers() {
        let mut out = String::new();
        escape_value(" a+b;c\"d\\e<f>g, \u{1}#", &mut out);
        assert_eq!(out, "\\ a\\+b\\;c\\\"d\\\\e\\<f\\>g\\, \\01#");
        let mut out = String::new();
        escape_value("#x ", &mut out);
        assert_eq!(out, "\\#x\\ ");
        let mut h = HeaderMap::new();
        h.insert(VERIFY, HeaderValue::from_static("SUCCESS"));
        h.insert(CERT, HeaderValue::from_static("forged"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        strip(&mut h);
        assert_eq!(h.len(), 1);
    }
}
