//! A test certificate authority (rcgen) issuing server certificates as rustls `CertifiedKey`s,
//! and client configs that trust it.
use std::sync::Arc;

use rustls::{sign::CertifiedKey, ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider used by the tests (the same as the proxy's).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A throwaway CA.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ingress test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards allowed), signed by the CA.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<Arc<CertifiedKey>> {
        self.issue_until(names, (4096, 1, 1))
    }

    /// Like [`TestCa::issue`], valid until midnight UTC at the start of `(year, month, day)`.
    pub fn issue_until(
        &self,
        names: &[&str],
        (year, month, day): (i32, u8, u8),
    ) -> anyhow::Result<Arc<CertifiedKey>> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.not_after = rcgen::date_time_ymd(year, month, day);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("test"),
        );
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = provider().key_provider.load_private_key(der)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der()],
            signing,
        )))
    }

    /// Like [`TestCa::issue`], as PEM files would hold it: (chain with the CA, PKCS#8 key).
    pub fn issue_pem(&self, names: &[&str]) -> anyhow::Result<(String, String)> {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            format!("{}{}", cert.pem(), self.issuer.pem()),
            key.serialize_pem(),
        ))
    }

    /// A client certificate for `common_name` signed by the CA, with its key: (chain leaf
    /// first, then the CA; key).
    pub fn issue_client(
        &self,
        common_name: &str,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        self.client_cert(common_name, None, None)
    }

    /// Like [`TestCa::issue_client`], valid only until the start of `(year, month, day)`.
    pub fn issue_client_until(
        &self,
        common_name: &str,
        (year, month, day): (i32, u8, u8),
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        self.client_cert(common_name, None, Some((year, month, day)))
    }

    /// Like [`TestCa::issue_client`], with the serial number `serial` (to revoke it).
    pub fn issue_client_serial(
        &self,
        common_name: &str,
        serial: u64,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        self.client_cert(common_name, Some(serial), None)
    }

    fn client_cert(
        &self,
        common_name: &str,
        serial: Option<u64>,
        not_after: Option<(i32, u8, u8)>,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        if let Some((year, month, day)) = not_after {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, month, day);
        }
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.serial_number = serial.map(Into::into);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            vec![cert.der().clone(), self.cert_der()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ))
    }

    /// A PEM CRL (`ca.crl`) from this CA revoking `serials`, current until 2099.
    pub fn crl_pem(&self, serials: &[u64]) -> anyhow::Result<String> {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: (*s).into(),
                    revocation_time: rcgen::date_time_ymd(2020, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// The CA certificate as PEM, as a `ca.crt` Secret key holds it.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A client config trusting only this CA, offering `alpn`, that presents `identity`
    /// when the server asks and counts how often it was asked.
    pub fn client_config_with_cert(
        &self,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        alpn: &[&[u8]],
    ) -> anyhow::Result<(Arc<ClientConfig>, Arc<AskedFor>)> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der())?;
        let key = match identity {
            Some((chain, key)) => Some(Arc::new(CertifiedKey::new(
                chain,
                provider().key_provider.load_private_key(key)?,
            ))),
            None => None,
        };
        let asked = Arc::new(AskedFor {
            key,
            times: std::sync::atomic::AtomicUsize::new(0),
        });
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_cert_resolver(asked.clone());
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok((Arc::new(c), asked))
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der())?;
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    }
}

/// A client config that accepts any certificate (to look at the proxy's default one).
pub fn insecure_client_config(alpn: &[&[u8]]) -> anyhow::Result<Arc<ClientConfig>> {
    let p = provider();
    let mut c = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(c))
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server config presenting `key` for every name, offering `alpn`.
pub fn server_config(
    key: Arc<CertifiedKey>,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Always(key)));
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(c))
}

#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Always {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A client's certificate, and how many times servers asked for one.
#[derive(Debug)]
pub struct AskedFor {
    key: Option<Arc<CertifiedKey>>,
    times: std::sync::atomic::AtomicUsize,
}

impl AskedFor {
    /// How many handshakes asked for a client certificate.
    pub fn times(&self) -> usize {
        self.times.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rustls::client::ResolvesClientCert for AskedFor {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.times.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}
