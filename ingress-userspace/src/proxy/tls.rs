//! TLS termination: certificate choice by SNI from the live configuration (hot-swapped with it),
//! the default certificate, the server config (TLS 1.2/1.3, ALPN h2 + http/1.1), the handshake,
//! and the client configs used towards TLS upstreams.
use std::{borrow::Cow, collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::snapshot::{HostMatch, TlsConfig, TlsVersions};

use super::{metrics::ProxyMetrics, ActiveConfig};

/// Setting up TLS failed (certificate generation or config building).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("generating the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider used everywhere (aws-lc-rs, rustls' default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Certificates of one snapshot, indexed by SNI.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `--default-ssl-certificate`, over the proxy's own default.
    default: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    /// Indexes `tls.certs`; the first certificate naming a host wins (the snapshot is ordered).
    pub fn compile(tls: &TlsConfig) -> Self {
        let mut table = CertTable {
            default: tls.default.as_ref().map(|c| c.key.clone()),
            ..CertTable::default()
        };
        for cert in &tls.certs {
            for host in &cert.hosts {
                let (map, name) = match host {
                    HostMatch::Exact(h) => (&mut table.exact, h),
                    HostMatch::Wildcard(s) => (&mut table.wildcard, s),
                    HostMatch::Any => continue,
                };
                map.entry(name.to_ascii_lowercase().into())
                    .or_insert_with(|| cert.key.clone());
            }
        }
        table
    }

    /// Adds names served for another host (see `RouteTable::borrowed_names`): each gets
    /// that host's certificate, unless it has one of its own.
    pub fn borrow(&mut self, names: &[(HostMatch, HostMatch)]) {
        for (name, owner) in names {
            let key = match owner {
                HostMatch::Exact(h) => self.exact.get(h.to_ascii_lowercase().as_str()),
                HostMatch::Wildcard(s) => self.wildcard.get(s.to_ascii_lowercase().as_str()),
                HostMatch::Any => None,
            };
            let Some(key) = key.cloned() else {
                continue;
            };
            let (map, n) = match name {
                HostMatch::Exact(h) => (&mut self.exact, h),
                HostMatch::Wildcard(s) => (&mut self.wildcard, s),
                HostMatch::Any => continue,
            };
            map.entry(n.to_ascii_lowercase().into()).or_insert(key);
        }
    }

    /// The certificate for a lower-case server name: exact first, then a one-label wildcard.
    pub fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            let (label, suffix) = name.split_once('.')?;
            if label.is_empty() {
                return None;
            }
            self.wildcard.get(suffix)
        })
    }

    /// Number of names indexed.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no certificate is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Picks the certificate by SNI from whatever configuration is live at handshake time.
#[derive(Debug)]
pub struct CertResolver {
    config: Arc<ArcSwap<ActiveConfig>>,
    default: Arc<CertifiedKey>,
}

impl CertResolver {
    pub(crate) fn new(config: Arc<ArcSwap<ActiveConfig>>, default: Arc<CertifiedKey>) -> Self {
        CertResolver { config, default }
    }

    /// The certificate for names no host has one for: `--default-ssl-certificate`'s while
    /// its Secret is usable, else the one the proxy started with.
    fn fallback(&self, config: &ActiveConfig) -> Arc<CertifiedKey> {
        config
            .certs
            .default
            .as_ref()
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    /// `None` (the handshake fails with an alert) only under `ssl-reject-handshake`, as
    /// nginx's `ssl_reject_handshake` in the default server: for a missing SNI, or one no host
    /// serves. A host without a certificate of its own still gets the default one.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            let config = self.config.load();
            if config.global.ssl_reject_handshake {
                return None;
            }
            return Some(self.fallback(&config));
        };
        let sni: Cow<'_, str> = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            sni.to_ascii_lowercase().into()
        } else {
            sni.into()
        };
        let sni = sni.trim_end_matches('.');
        let config = self.config.load();
        if let Some(cert) = config.certs.lookup(sni) {
            return Some(cert.clone());
        }
        if config.global.ssl_reject_handshake && !config.routes.serves_name(sni) {
            return None;
        }
        Some(self.fallback(&config))
    }
}

/// A self-signed certificate for unknown or missing SNI, made at start.
pub fn generate_default_certificate() -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Ingress Controller Fake Certificate",
    );
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = provider().key_provider.load_private_key(der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// The server's provider: the AES-128-GCM suites first, the rest in the default order.
///
/// Clients list AES-256-GCM-SHA384 first, and a TLS 1.3 handshake hashes its transcript and
/// derives its keys with the suite's hash. aws-lc runs SHA-384 on its portable code on CPUs
/// where it does not pick the vector code (AMD, for instance): there it took ~13% of a full
/// handshake (bench_l7), while SHA-256 uses the SHA extensions. AES-128-GCM is the mandatory
/// TLS 1.3 suite; every client offers it.
pub fn server_provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as C;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

/// The server config: TLS 1.3 and 1.2 only, the server's suite order
/// ([`server_provider`]), ALPN h2 then http/1.1, session tickets on.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut config = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// `base` offering only the versions, TLS 1.2 suites and key exchange groups of `tls`
/// (`ssl-protocols`, `ssl-ciphers`, `ssl-ecdh-curve`), and only HTTP/1.1 with `use-http2: "false"`;
/// certificates are `base`'s, and so are tickets and the session cache unless the `ssl-session-*`
/// keys change them (then sessions made under `base` are not resumed under this config).
pub fn server_config_narrowed(
    base: &ServerConfig,
    tls: &crate::snapshot::ServerTls,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut provider = match &tls.tls12_suites {
        Some(allowed) => Arc::new(narrowed(base.crypto_provider(), allowed)),
        None => base.crypto_provider().clone(),
    };
    if let Some(groups) = &tls.kx_groups {
        // The operator's order; the translator kept only groups rustls has.
        let mut p = (*provider).clone();
        p.kx_groups = groups
            .iter()
            .filter_map(|g| {
                rustls::crypto::aws_lc_rs::ALL_KX_GROUPS
                    .iter()
                    .find(|k| k.name() == *g)
                    .copied()
            })
            .collect();
        provider = Arc::new(p);
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions(tls.versions))?
        .with_no_client_auth()
        .with_cert_resolver(base.cert_resolver.clone());
    let mut config = inherit(config, base);
    if tls.sessions != crate::snapshot::TlsSessions::default() {
        config.ticketer = super::tls_sessions::ticketer(&tls.sessions)?;
        config.session_storage = super::tls_sessions::storage(&tls.sessions);
    }
    if tls.http1_only {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Arc::new(config))
}

/// `config` with `base`'s suite order, ALPN, tickets and session cache, so a session made
/// under one resumes under the other.
fn inherit(mut config: ServerConfig, base: &ServerConfig) -> ServerConfig {
    config.ignore_client_order = base.ignore_client_order;
    config.alpn_protocols = base.alpn_protocols.clone();
    config.ticketer = base.ticketer.clone();
    config.session_storage = base.session_storage.clone();
    config
}

/// rustls's versions for `v`, newest first.
pub(crate) fn versions(v: TlsVersions) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut out: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if v.tls13 {
        out.push(&rustls::version::TLS13);
    }
    if v.tls12 {
        out.push(&rustls::version::TLS12);
    }
    out
}

/// `provider` with its TLS 1.2 suites narrowed to `allowed`, in that order; TLS 1.3's are
/// kept (they are not OpenSSL cipher-list material, as in nginx).
fn narrowed(provider: &CryptoProvider, allowed: &[rustls::CipherSuite]) -> CryptoProvider {
    let mut p = provider.clone();
    let all = std::mem::take(&mut p.cipher_suites);
    p.cipher_suites = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .cloned()
        .collect();
    for want in allowed {
        if let Some(s) = all.iter().find(|s| s.suite() == *want) {
            p.cipher_suites.push(*s);
        }
    }
    p
}

/// `base` asking clients for a certificate issued by one of `roots` (the names are sent as
/// hints). The chain is not judged in the handshake but on each request, as nginx does with
/// `ssl_verify_client`: a client without a certificate, or with one that does not verify,
/// completes the handshake and gets a 400 (or the `auth-tls-error-page`), and
/// `optional_no_ca` can pass any certificate on. The handshake still proves the client holds
/// the key of the certificate it sent. Tickets are shared with `base`; rustls resumes a
/// session only under the SNI it was made for, and a resumed session brings back the
/// certificate it was made with, which is judged on each request like a fresh one.
pub fn client_auth_server_config(
    base: &ServerConfig,
    base_versions: TlsVersions,
    roots: &rustls::RootCertStore,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let verifier = Arc::new(RequestClientCert {
        provider: base.crypto_provider().clone(),
        hints: roots.subjects(),
    });
    let config = ServerConfig::builder_with_provider(base.crypto_provider().clone())
        .with_protocol_versions(&versions(base_versions))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(base.cert_resolver.clone());
    Ok(Arc::new(inherit(config, base)))
}

/// Asks for a client certificate and checks the handshake signature made with its key;
/// the chain itself is judged per request (see [`client_auth_server_config`]).
#[derive(Debug)]
struct RequestClientCert {
    provider: Arc<CryptoProvider>,
    hints: Vec<rustls::DistinguishedName>,
}

impl rustls::server::danger::ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}

/// Picks the server config for a handshake by its SNI, and says whether it asks for a client
/// certificate; `None`: the acceptor's own.
pub(crate) type ChooseConfig<'a> =
    &'a (dyn Fn(Option<&str>) -> Option<(Arc<ServerConfig>, bool)> + Sync);

/// Terminates TLS on `stream` within `timeout`, counting the outcome. With `choose`, the
/// ClientHello is read first and its SNI picks the config (hosts that ask for client
/// certificates, `ssl-protocols`); without, the acceptor's config is used straight away. The
/// flag says whether the handshake asked the client for a certificate.
pub(crate) async fn accept<S>(
    acceptor: &TlsAcceptor,
    choose: Option<ChooseConfig<'_>>,
    stream: S,
    timeout: Duration,
    metrics: &ProxyMetrics,
) -> Option<(TlsStream<S>, bool)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        let Some(choose) = choose else {
            return acceptor.accept(stream).await.map(|s| (s, false));
        };
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let config = {
            let hello = start.client_hello();
            let sni = hello.server_name().map(|n| {
                let n = n.trim_end_matches('.');
                if n.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(n.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(n)
                }
            });
            choose(sni.as_deref())
        };
        let (config, asked) = config.unwrap_or_else(|| (acceptor.config().clone(), false));
        start.into_stream(config).await.map(|s| (s, asked))
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => {
            metrics.tls_handshake(true);
            Some(tls)
        }
        Ok(Err(e)) => {
            metrics.tls_handshake(false);
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.tls_handshake(false);
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Whether `leaf` (with the `intermediates` its peer sent) chains to `roots` for `usage` with
/// at most `depth` intermediates between it and the anchor (nginx's `*_verify_depth`, which is
/// OpenSSL's: depth 1 takes a leaf issued by an intermediate of a trusted root).
pub(crate) fn verify_chain(
    roots: &rustls::RootCertStore,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
    depth: u8,
    revocation: Option<webpki::RevocationOptions<'_>>,
) -> Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(leaf)?;
    let algorithms =
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let allowed = usize::from(depth);
    let depth_ok = |path: &webpki::VerifiedPath<'_>| {
        if path.intermediate_certificates().count() <= allowed {
            Ok(())
        } else {
            Err(webpki::Error::MaximumPathDepthExceeded)
        }
    };
    cert.verify_for_usage(
        algorithms.all,
        &roots.roots,
        intermediates,
        now,
        usage,
        revocation,
        Some(&depth_ok),
    )
    .map(|_| ())
}

/// TLS towards one upstream with `proxy-ssl-*`: its client configs (as
/// [`upstream_client_configs`]) and the name it is checked against.
#[derive(Debug)]
pub struct UpstreamTlsClients {
    pub spec: Arc<crate::snapshot::UpstreamTls>,
    /// (HTTPS, GRPCS, upgrades), as [`upstream_client_configs`].
    pub configs: [Arc<ClientConfig>; 3],
    /// Checked in the certificate; sent as SNI only with `proxy-ssl-server-name: on`.
    pub server_name: ServerName<'static>,
}

impl UpstreamTlsClients {
    /// Builds the configs of `spec`.
    pub fn new(spec: Arc<crate::snapshot::UpstreamTls>) -> Result<Self, TlsSetupError> {
        let server_name = ServerName::try_from(spec.name.clone())
            .map_err(|_| rustls::Error::General(format!("bad proxy-ssl-name {:?}", spec.name)))?;
        // `proxy-ssl-ciphers` narrows the TLS 1.2 suites (TLS 1.3's are not OpenSSL cipher
        // list material, as in nginx); `proxy-ssl-protocols` the versions.
        let p = match &spec.tls12_suites {
            None => provider(),
            Some(allowed) => Arc::new(narrowed(&provider(), allowed)),
        };
        let versions = versions(spec.versions);
        let build = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, TlsSetupError> {
            let p = p.clone();
            let verifier: Arc<dyn ServerCertVerifier> = match &spec.verify {
                Some(roots) => Arc::new(UpstreamCertCheck {
                    roots: roots.clone(),
                    depth: spec.depth,
                    provider: p.clone(),
                }),
                None => Arc::new(NoCertificateCheck(p.clone())),
            };
            let builder = ClientConfig::builder_with_provider(p)
                .with_protocol_versions(&versions)?
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            let mut c = match &spec.client_cert {
                Some(key) => builder.with_client_cert_resolver(Arc::new(PresentCert(key.clone()))),
                None => builder.with_no_client_auth(),
            };
            c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            c.enable_sni = spec.sni;
            Ok(Arc::new(c))
        };
        Ok(UpstreamTlsClients {
            configs: [
                build(&[b"h2", b"http/1.1"])?,
                build(&[b"h2"])?,
                build(&[b"http/1.1"])?,
            ],
            server_name,
            spec,
        })
    }
}

/// `proxy-ssl-verify: on`: the upstream's chain against `ca.crt` and the name rustls is given
/// (`proxy-ssl-name`).
#[derive(Debug)]
struct UpstreamCertCheck {
    roots: Arc<rustls::RootCertStore>,
    depth: u8,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UpstreamCertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(
            &self.roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            self.depth,
            None,
        )
        .map_err(|e| rustls::Error::General(format!("upstream certificate: {e:?}")))?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("upstream certificate: {e:?}")))?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| rustls::Error::General(format!("upstream certificate name: {e:?}")))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}

/// The `proxy-ssl-secret`'s certificate, presented whenever an upstream asks.
#[derive(Debug)]
struct PresentCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for PresentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The handshake-signature checks every verifier here makes the same way, with the
/// provider's algorithms: whatever a verifier decides about the chain, the peer must prove
/// it holds the certificate's key.
mod signatures {
    use rustls::{
        client::danger::HandshakeSignatureValid, crypto::CryptoProvider, DigitallySignedStruct,
        SignatureScheme,
    };
    use rustls_pki_types::CertificateDer;

    pub(super) fn tls12(
        p: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &p.signature_verification_algorithms,
        )
    }

    pub(super) fn tls13(
        p: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &p.signature_verification_algorithms,
        )
    }

    pub(super) fn schemes(p: &CryptoProvider) -> Vec<SignatureScheme> {
        p.signature_verification_algorithms.supported_schemes()
    }
}

/// Client configs towards TLS upstreams: (HTTPS: h2+http/1.1, GRPCS: h2, upgrades: http/1.1).
pub fn upstream_client_configs() -> Result<[Arc<ClientConfig>; 3], TlsSetupError> {
    let build = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, TlsSetupError> {
        let p = provider();
        let mut c = ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(p)))
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    };
    Ok([
        build(&[b"h2", b"http/1.1"])?,
        build(&[b"h2"])?,
        build(&[b"http/1.1"])?,
    ])
}

/// Accepts any upstream certificate (pod endpoints are not named by certificates) but still
/// checks the handshake signatures, so the connection is at least bound to the presented key.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ObjectRef, TlsCert};

    /// A CA certificate signed by `issuer` (self-signed when `None`).
    fn ca(
        name: &str,
        issuer: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
    ) -> (
        CertificateDer<'static>,
        rcgen::Issuer<'static, rcgen::KeyPair>,
    ) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = match issuer {
            Some(i) => params.signed_by(&key, i),
            None => params.self_signed(&key),
        }
        .expect("cert");
        let der = cert.der().clone();
        (der, rcgen::Issuer::new(params, key))
    }

    /// nginx's `ssl_verify_depth` is OpenSSL's: depth N takes N intermediates between the
    /// leaf and the trusted root. At the default 1, a Let's Encrypt style chain (leaf, one
    /// intermediate, root trusted) passes; two intermediates need 2.
    #[test]
    fn verify_depth_counts_intermediates_as_openssl_does() {
        let (root_der, root) = ca("root", None);
        let (mid1_der, mid1) = ca("intermediate 1", Some(&root));
        let (mid2_der, mid2) = ca("intermediate 2", Some(&mid1));
        let leaf = |issuer: &rcgen::Issuer<'static, rcgen::KeyPair>| {
            let params =
                rcgen::CertificateParams::new(vec!["api.internal".to_string()]).expect("params");
            let key = rcgen::KeyPair::generate().expect("key");
            params.signed_by(&key, issuer).expect("leaf").der().clone()
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root_der).expect("root");
        let now = UnixTime::now();
        let check = |leaf: &CertificateDer<'_>, chain: &[CertificateDer<'_>], depth| {
            verify_chain(
                &roots,
                leaf,
                chain,
                now,
                webpki::KeyUsage::server_auth(),
                depth,
                None,
            )
        };
        let direct = leaf(&root);
        assert!(check(&direct, &[], 0).is_ok(), "no intermediate at depth 0");
        let one = leaf(&mid1);
        let chain1 = [mid1_der.clone()];
        assert!(check(&one, &chain1, 0).is_err());
        assert!(
            check(&one, &chain1, 1).is_ok(),
            "one intermediate at depth 1"
        );
        let two = leaf(&mid2);
        let chain2 = [mid2_der, mid1_der];
        assert!(check(&two, &chain2, 1).is_err());
        assert!(
            check(&two, &chain2, 2).is_ok(),
            "two intermediates at depth 2"
        );
    }

    #[test]
    fn aes_128_gcm_suites_come_first_in_each_version() {
        let p = server_provider();
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256", "{names:?}");
        let first_tls12 = names
            .iter()
            .position(|n| n.starts_with("TLS_ECDHE"))
            .unwrap_or(0);
        assert!(names[first_tls12].contains("AES_128_GCM"), "{names:?}");
        assert_eq!(
            names.len(),
            rustls::crypto::aws_lc_rs::default_provider()
                .cipher_suites
                .len()
        );
    }

    #[test]
    fn server_picks_aes_128_gcm_over_a_client_preferring_aes_256() -> Result<(), TlsSetupError> {
        let config = Arc::new(ArcSwap::from_pointee(ActiveConfig::default()));
        let resolver = Arc::new(CertResolver::new(config, generate_default_certificate()?));
        let server_cfg = server_config(resolver)?;
        let p = provider();
        assert_eq!(
            format!("{:?}", p.cipher_suites[0].suite()),
            "TLS13_AES_256_GCM_SHA384",
            "the client prefers AES-256"
        );
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client_cfg = ClientConfig::builder_with_provider(p.clone())
                .with_protocol_versions(&[version])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(p.clone())))
                .with_no_client_auth();
            let name = ServerName::try_from("ingress.local").unwrap_or_else(|e| panic!("{e}"));
            let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name)?;
            let mut server = rustls::ServerConnection::new(server_cfg.clone())?;
            for _ in 0..10 {
                if !client.is_handshaking() && !server.is_handshaking() {
                    break;
                }
                let mut buf = Vec::new();
                client.write_tls(&mut buf).unwrap_or_else(|e| panic!("{e}"));
                server
                    .read_tls(&mut buf.as_slice())
                    .unwrap_or_else(|e| panic!("{e}"));
                server.process_new_packets()?;
                let mut buf = Vec::new();
                server.write_tls(&mut buf).unwrap_or_else(|e| panic!("{e}"));
                client
                    .read_tls(&mut buf.as_slice())
                    .unwrap_or_else(|e| panic!("{e}"));
                client.process_new_packets()?;
            }
            assert!(!client.is_handshaking());
            let suite = client.negotiated_cipher_suite().map(|s| s.suite());
            assert!(
                format!("{suite:?}").contains("AES_128_GCM"),
                "{version:?}: {suite:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn exact_wins_over_wildcard_and_wildcard_is_one_label() -> Result<(), TlsSetupError> {
        let a = generate_default_certificate()?;
        let b = generate_default_certificate()?;
        let tls = TlsConfig {
            certs: vec![
                TlsCert {
                    origin: ObjectRef::default(),
                    secret: ObjectRef::default(),
                    hosts: vec![HostMatch::Exact("a.example.com".into())],
                    key: a.clone(),
                },
                TlsCert {
                    origin: ObjectRef::default(),
                    secret: ObjectRef::default(),
                    hosts: vec![HostMatch::Wildcard("example.com".into())],
                    key: b.clone(),
                },
            ],
            default: None,
        };
        let t = CertTable::compile(&tls);
        assert!(t
            .lookup("a.example.com")
            .is_some_and(|k| Arc::ptr_eq(k, &a)));
        assert!(t
            .lookup("z.example.com")
            .is_some_and(|k| Arc::ptr_eq(k, &b)));
        assert!(t.lookup("x.z.example.com").is_none());
        assert!(t.lookup("example.com").is_none());
        assert!(t.lookup(".example.com").is_none());
        Ok(())
    }
}
