//! L7 test harness: snapshot builders, a proxy on ephemeral loopback ports, and clients.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ingress::{
    apply::proxy::ProxyApplier,
    proxy::{Proxy, ProxyOptions},
    snapshot::{
        BackendProtocol, ClientAuth, Global, HostMatch, HttpConfig, ObjectRef, PathMatch, Pattern,
        Route, RoutePolicy, RouteTarget, Snapshot, TlsCert, TlsConfig, Upstream, VerifyClient,
        VirtualHost,
    },
};
use rustls::ClientConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Bound on every network wait in the L7 tests.
pub const WAIT: Duration = Duration::from_secs(10);

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// An upstream named `ns/name:80` over `endpoints`, plain HTTP.
pub fn upstream(name: &str, endpoints: &[SocketAddr]) -> Arc<Upstream> {
    upstream_with(name, endpoints, BackendProtocol::Http)
}

/// An upstream with a backend protocol.
pub fn upstream_with(
    name: &str,
    endpoints: &[SocketAddr],
    protocol: BackendProtocol,
) -> Arc<Upstream> {
    Arc::new(Upstream {
        name: format!("default/{name}:80"),
        endpoints: endpoints.to_vec(),
        missing: false,
        protocol,
        tls: None,
    })
}

/// A target of Ingress `default/<ingress>` with the default policy.
pub fn target(ingress: &str, upstream: Arc<Upstream>) -> Arc<RouteTarget> {
    target_with(ingress, upstream, test_policy())
}

/// A target with a given policy.
pub fn target_with(
    ingress: &str,
    upstream: Arc<Upstream>,
    policy: RoutePolicy,
) -> Arc<RouteTarget> {
    Arc::new(RouteTarget {
        origin: ingress_ref(ingress),
        upstream,
        policy,
        canary: None,
        default_backend: None,
    })
}

/// `Ingress default/<name>`.
pub fn ingress_ref(name: &str) -> ObjectRef {
    ObjectRef {
        kind: "Ingress",
        namespace: "default".into(),
        name: name.into(),
    }
}

/// The default policy with test-sized timeouts.
pub fn test_policy() -> RoutePolicy {
    let mut p = RoutePolicy::default();
    p.timeouts.connect = Duration::from_secs(2);
    p.timeouts.read = Duration::from_secs(5);
    p.timeouts.send = Duration::from_secs(5);
    p
}

/// A `Prefix` route.
pub fn prefix(path: &str, target: &Arc<RouteTarget>) -> Route {
    Route {
        path: PathMatch::Prefix(path.into()),
        target: target.clone(),
    }
}

/// An `Exact` route.
pub fn exact(path: &str, target: &Arc<RouteTarget>) -> Route {
    Route {
        path: PathMatch::Exact(path.into()),
        target: target.clone(),
    }
}

/// A `use-regex` route (anchored at the start, case-insensitive).
pub fn regex(source: &str, target: &Arc<RouteTarget>) -> Route {
    let regex = regex::RegexBuilder::new(&format!("^{source}"))
        .case_insensitive(true)
        .build()
        .unwrap_or_else(|e| panic!("bad test regex {source}: {e}"));
    Route {
        path: PathMatch::Regex(Pattern {
            source: source.into(),
            regex,
        }),
        target: target.clone(),
    }
}

/// A host matcher: `*.x` is a wildcard, empty is the catch-all.
pub fn host_match(host: &str) -> HostMatch {
    match host {
        "" => HostMatch::Any,
        h if h.starts_with("*.") => HostMatch::Wildcard(h[2..].to_string()),
        h => HostMatch::Exact(h.to_string()),
    }
}

/// A virtual host without TLS or fallback.
pub fn vhost(host: &str, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        host: host_match(host),
        routes,
        fallback: None,
        tls: false,
        client_auth: None,
        aliases: Vec::new(),
        www_redirect: false,
        app_root: None,
    }
}

/// Client certificate settings trusting `ca`, in `mode`, depth 1, nothing else set.
pub fn client_auth(ca: &crate::certs::TestCa, mode: VerifyClient) -> anyhow::Result<ClientAuth> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der())?;
    Ok(ClientAuth {
        origin: ingress_ref("mtls"),
        secret: "default/client-ca".into(),
        ca: vec![ca.cert_der()],
        roots: Arc::new(roots),
        crls: Default::default(),
        mode,
        depth: 1,
        error_page: None,
        pass_certificate: false,
        match_cn: None,
        denied: false,
    })
}

/// Sets `--default-backend-service`'s target, as the translator does without a catch-all
/// Ingress: it answers unknown hosts, named hosts' unmatched paths and custom error pages.
pub fn set_default_service(snap: &mut Snapshot, target: Option<Arc<RouteTarget>>) {
    snap.http.default_backend.clone_from(&target);
    snap.http.service_default = target;
}

/// A snapshot with `hosts` (in the given order) and a fresh generation.
pub fn snapshot(hosts: Vec<VirtualHost>) -> Snapshot {
    Snapshot {
        generation: GENERATION.fetch_add(1, SeqCst),
        http: HttpConfig {
            hosts,
            default_backend: None,
            service_default: None,
        },
        // Quiet unless a test is about the access log (`with_access_log`).
        global: Global {
            access_log: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The snapshot with the access log on.
pub fn with_access_log(mut snap: Snapshot) -> Snapshot {
    snap.global.access_log = true;
    snap
}

/// Adds a certificate for `hosts` to a snapshot.
pub fn with_cert(
    mut snap: Snapshot,
    hosts: &[&str],
    key: Arc<rustls::sign::CertifiedKey>,
) -> Snapshot {
    snap.tls.certs.push(TlsCert {
        origin: ingress_ref("tls"),
        secret: ObjectRef {
            kind: "Secret",
            namespace: "default".into(),
            name: "tls".into(),
        },
        hosts: hosts.iter().map(|h| host_match(h)).collect(),
        key,
    });
    snap
}

/// An empty TLS config.
pub fn no_tls() -> TlsConfig {
    TlsConfig::default()
}

/// A proxy listening on 127.0.0.1 ephemeral ports.
pub struct L7 {
    pub proxy: Proxy,
    pub applier: ProxyApplier,
    pub http: SocketAddr,
    pub https: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for L7 {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl L7 {
    /// Starts with default limits.
    pub async fn start(snap: Snapshot) -> anyhow::Result<L7> {
        Self::start_with(ProxyOptions::default(), snap).await
    }

    /// Starts with `options` (the https port is set from the bound listener).
    pub async fn start_with(mut options: ProxyOptions, snap: Snapshot) -> anyhow::Result<L7> {
        let http_l = TcpListener::bind("127.0.0.1:0").await?;
        let https_l = TcpListener::bind("127.0.0.1:0").await?;
        let (http, https) = (http_l.local_addr()?, https_l.local_addr()?);
        options.https_port = https.port();
        let proxy = Proxy::new(options)?;
        let applier = ProxyApplier::new(proxy.clone());
        applier.apply(&Arc::new(snap));
        let tasks = vec![
            tokio::spawn(proxy.serve_http(http_l)),
            tokio::spawn(proxy.serve_https(https_l)),
        ];
        Ok(L7 {
            proxy,
            applier,
            http,
            https,
            tasks,
        })
    }

    /// Applies a new snapshot.
    pub fn apply(&self, snap: Snapshot) {
        self.applier.apply(&Arc::new(snap));
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The body as JSON (the echo server's description of the request).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which echo upstream answered (`x-upstream`).
    pub fn upstream(&self) -> Option<&str> {
        self.header("x-upstream")
    }

    /// A header the upstream saw (from the echo JSON).
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

async fn read_reply<B>(resp: Response<B>) -> anyhow::Result<Reply>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(WAIT, body.collect())
        .await?
        .map_err(|e| anyhow::anyhow!(e.into()))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Sends one HTTP/1.1 request on a new connection to `addr`.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    read_reply(resp).await
}

/// `GET path` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
    send(addr, build(http::Method::GET, host, path, Bytes::new())).await
}

/// A request with a Host header and a body.
pub fn build(method: http::Method, host: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(body))
        .unwrap_or_else(|e| panic!("bad test request: {e}"))
}

/// A keep-alive HTTP/1.1 client connection.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<H1> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(H1 { sender })
    }

    /// Sends a request on this connection.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        tokio::time::timeout(WAIT, self.sender.ready()).await??;
        let resp = tokio::time::timeout(WAIT, self.sender.send_request(req)).await??;
        read_reply(resp).await
    }
}

/// A TLS connection to `addr` with SNI `sni` (none when empty, by using an IP name).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    let name = if sni.is_empty() {
        rustls_pki_types::ServerName::IpAddress(addr.ip().into())
    } else {
        rustls_pki_types::ServerName::try_from(sni.to_string())?
    };
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await??;
    Ok(tls)
}

/// The leaf certificate the server presented.
pub fn peer_leaf(
    tls: &tokio_rustls::client::TlsStream<TcpStream>,
) -> Option<rustls_pki_types::CertificateDer<'static>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

/// An HTTP/1.1 request over an established TLS stream.
pub async fn h1_over(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(Reply, hyper::client::conn::http1::SendRequest<Full<Bytes>>)> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    Ok((read_reply(resp).await?, sender))
}

/// Sends one more request on an HTTP/1.1 sender.
pub async fn again(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<Reply> {
    tokio::time::timeout(WAIT, sender.ready()).await??;
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await??;
    read_reply(resp).await
}

/// An HTTP/2 client connection with prior knowledge (h2c) to `addr`; the task drives it and
/// ends when the connection does.
pub async fn h2c(
    addr: SocketAddr,
) -> anyhow::Result<(
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)> {
    h2c_with(
        addr,
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()),
    )
    .await
}

/// Like [`h2c`], with the client settings of `builder` (flow-control windows, ...).
pub async fn h2c_with(
    addr: SocketAddr,
    builder: hyper::client::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
) -> anyhow::Result<(
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    let (sender, conn) = builder.handshake(TokioIo::new(tcp)).await?;
    Ok((sender, tokio::spawn(conn)))
}

/// A POST promising 100 body bytes that sends 10 and stalls (the connection stays open):
/// the status of the answer, and how long it took to come.
pub async fn stalled_upload(
    addr: SocketAddr,
) -> anyhow::Result<(Option<u16>, std::time::Duration)> {
    let started = std::time::Instant::now();
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await??;
    Ok((
        raw_status(&String::from_utf8_lossy(&buf[..n])),
        started.elapsed(),
    ))
}

/// Writes raw bytes and reads until the server closes (or `WAIT`).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    s.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Status code of the first response in raw HTTP/1 output.
pub fn raw_status(out: &str) -> Option<u16> {
    out.split_whitespace().nth(1)?.parse().ok()
}
