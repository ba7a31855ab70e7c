//! TLS passthrough harness: a test CA, TLS echo backends holding their own certificates, the
//! HTTPS front running `Passthrough` (with a stand-in TLS terminator), and clients that can
//! fragment their ClientHello over TCP segments.
use std::{
    collections::HashSet,
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use ingress::{
    passthrough::Passthrough,
    proxy_protocol::{v2 as proxy_v2, Origin},
    snapshot::{
        BackendProtocol, HostMatch, LoadBalance, ObjectRef, PassthroughRoute, Snapshot, Upstream,
    },
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{
    crypto::CryptoProvider, pki_types::ServerName, ClientConfig, RootCertStore, ServerConfig,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
    time::{timeout, Sleep},
};

/// Every await in these tests is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

/// The crypto provider of the tests (aws-lc-rs: X25519MLKEM768 first, a ~1.2 KB key share).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A test certificate authority.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        Pki { ca }
    }

    /// A server config with a leaf for `names`, signed by the CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().expect("leaf key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.ca).expect("leaf cert");
        let key_der =
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca.der().clone()], key_der)
            .expect("server config");
        Arc::new(cfg)
    }

    /// A client config trusting only the CA, adjusted by `f`.
    pub fn client_config_with(&self, f: impl FnOnce(&mut ClientConfig)) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("root");
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        f(&mut cfg);
        Arc::new(cfg)
    }

    /// A client config trusting only the CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_with(|_| {})
    }
}

/// The first flight a rustls client sends (its ClientHello records), captured without a
/// network.
pub fn capture_client_hello(cfg: Arc<ClientConfig>, sni: &str) -> Vec<u8> {
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(cfg, name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// What a backend saw on one connection.
#[derive(Debug)]
pub struct BackendConn {
    /// The PROXY v2 addresses (source, destination) if the backend expects a header.
    pub proxy: Option<(SocketAddr, SocketAddr)>,
    /// The SNI the client sent, as the backend's TLS stack saw it.
    pub sni: Option<String>,
    /// Plaintext bytes received.
    pub received: u64,
    /// How the connection ended from the backend's point of view.
    pub end: BackendEnd,
}

/// How a backend connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendEnd {
    /// Clean EOF from the client; the backend then sent its tail and closed.
    Eof,
    /// The client asked the backend to reset (`RST!`), and it did.
    ResetByBackend,
    /// An error of this kind (a reset from the client shows as ConnectionReset).
    Error(io::ErrorKind),
}

/// How a test backend behaves.
#[derive(Clone, Debug, Default)]
pub struct BackendBehavior {
    /// Read a PROXY v2 header before TLS.
    pub expect_proxy: bool,
    /// Bytes written after the client's EOF, before closing (`BYE` then a pattern).
    pub tail: usize,
}

/// A TLS echo backend with its own certificate. It echoes everything; on `RST!` it resets
/// the TCP connection; on EOF it writes `BYE` plus `tail` pattern bytes and closes.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub conns: mpsc::UnboundedReceiver<BackendConn>,
    task: JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pattern byte at offset `i` of a tail or payload.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

impl TlsBackend {
    /// Listens on 127.0.0.1:0.
    pub async fn start(cfg: Arc<ServerConfig>, behavior: BackendBehavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let (tx, conns) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx, behavior) = (acceptor.clone(), tx.clone(), behavior.clone());
                tokio::spawn(async move {
                    if let Some(conn) = serve_backend(tcp, acceptor, behavior).await {
                        let _ = tx.send(conn);
                    }
                });
            }
        });
        TlsBackend { addr, conns, task }
    }

    /// The next finished backend connection.
    pub async fn next(&mut self) -> BackendConn {
        timeout(STEP, self.conns.recv())
            .await
            .expect("backend connection in time")
            .expect("backend alive")
    }
}

async fn serve_backend(
    mut tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    behavior: BackendBehavior,
) -> Option<BackendConn> {
    let _ = tcp.set_nodelay(true);
    let mut proxy = None;
    if behavior.expect_proxy {
        let mut buf = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if timeout(STEP, tcp.read_exact(&mut b)).await.ok()?.is_err() {
                return None;
            }
            buf.push(b[0]);
            match proxy_v2::decode(&buf) {
                Ok(Some(h)) => {
                    proxy = h.addresses;
                    break;
                }
                Ok(None) => continue,
                Err(_) => return None,
            }
        }
    }
    let mut tls = timeout(STEP, acceptor.accept(tcp)).await.ok()?.ok()?;
    let sni = tls.get_ref().1.server_name().map(str::to_string);
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match tls.read(&mut buf).await {
            Ok(0) => break BackendEnd::Eof,
            Ok(n) => {
                received += n as u64;
                if buf[..n].ends_with(b"RST!") {
                    let tcp = tls.get_ref().0;
                    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
                    drop(tls);
                    return Some(BackendConn {
                        proxy,
                        sni,
                        received,
                        end: BackendEnd::ResetByBackend,
                    });
                }
                if let Err(e) = tls.write_all(&buf[..n]).await {
                    break BackendEnd::Error(e.kind());
                }
            }
            Err(e) => break BackendEnd::Error(e.kind()),
        }
    };
    if end == BackendEnd::Eof {
        let mut tail = b"BYE".to_vec();
        tail.extend((0..behavior.tail).map(pattern));
        let _ = tls.write_all(&tail).await;
        let _ = tls.shutdown().await;
    }
    Some(BackendConn {
        proxy,
        sni,
        received,
        end,
    })
}

/// A passthrough route for the test snapshot.
pub fn route(host: &str, backends: &[SocketAddr], proxy_protocol: bool) -> PassthroughRoute {
    let host = match host.strip_prefix("*.") {
        Some(s) => HostMatch::Wildcard(s.into()),
        None => HostMatch::Exact(host.into()),
    };
    PassthroughRoute {
        origin: ObjectRef {
            kind: "Ingress",
            namespace: "test".into(),
            name: "pt".into(),
        },
        host,
        upstream: Arc::new(Upstream {
            name: format!(
                "test/backend-{}:443",
                backends.first().map(|a| a.port()).unwrap_or(0)
            ),
            endpoints: backends.to_vec(),
            missing: false,
            protocol: BackendProtocol::Https,
            tls: None,
        }),
        proxy_protocol,
        load_balance: LoadBalance::RoundRobin,
    }
}

/// A snapshot with these passthrough routes only.
pub fn snapshot(routes: Vec<PassthroughRoute>) -> Snapshot {
    Snapshot {
        generation: 1,
        passthrough: routes,
        ..Snapshot::default()
    }
}

/// The HTTPS front: accept loop -> `Passthrough::handle`; terminated connections go to a
/// stand-in TLS terminator that echoes with a `TERM:` prefix on its first reply.
pub struct Front {
    pub addr: SocketAddr,
    pub pt: Arc<Passthrough>,
    task: JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    /// Listens on `bind` (port 0) in front of `pt`.
    pub async fn start(
        pt: Arc<Passthrough>,
        bind: &str,
        terminator: Option<Arc<ServerConfig>>,
    ) -> Self {
        let listener = TcpListener::bind(bind).await.expect("bind front");
        let addr = listener.local_addr().expect("front addr");
        let task = tokio::spawn({
            let pt = pt.clone();
            async move {
                while let Ok((tcp, peer)) = listener.accept().await {
                    let (pt, terminator) = (pt.clone(), terminator.clone());
                    tokio::spawn(async move {
                        let Ok(local) = tcp.local_addr() else { return };
                        let origin = Origin::direct(peer, local);
                        let Some(replay) = pt.handle(tcp, origin).await else {
                            return;
                        };
                        let Some(cfg) = terminator else { return };
                        let Ok(Ok(mut tls)) =
                            timeout(STEP, tokio_rustls::TlsAcceptor::from(cfg).accept(replay))
                                .await
                        else {
                            return;
                        };
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut first = true;
                        while let Ok(Ok(n)) = timeout(STEP, tls.read(&mut buf)).await {
                            if n == 0 {
                                break;
                            }
                            if first {
                                first = false;
                                if tls.write_all(b"TERM:").await.is_err() {
                                    break;
                                }
                            }
                            if tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = tls.shutdown().await;
                    });
                }
            }
        });
        Front { addr, pt, task }
    }
}

/// Connects a TLS client over `io` with `sni`, bounded in time.
pub async fn tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    sni: &str,
    cfg: Arc<ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<S>> {
    let name =
        ServerName::try_from(sni.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
    timeout(
        STEP,
        tokio_rustls::TlsConnector::from(cfg).connect(name, io),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// TCP connect with TCP_NODELAY, bounded in time.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let s = timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A writer that sends the first `limit` bytes in `chunk`-byte writes with `delay` between
/// them (one TCP segment each with TCP_NODELAY), then passes writes through.
pub struct Chunked<S> {
    inner: S,
    chunk: usize,
    delay: Duration,
    limit: usize,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> Chunked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, chunk: usize, delay: Duration, limit: usize) -> Self {
        Chunked {
            inner,
            chunk,
            delay,
            limit,
            sleep: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Chunked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Chunked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.limit == 0 {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let n = buf.len().min(self.chunk).min(self.limit);
        let res = Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(w)) = res {
            self.limit -= w;
            let delay = self.delay;
            self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open file descriptors of this process that are TCP sockets with a local or remote port
/// in `ports` (not listeners). Immune to other tests running in parallel.
pub fn open_sockets_on(ports: &[u16]) -> usize {
    let mut inodes = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] == "0A" {
                continue;
            }
            let port = |s: &str| {
                s.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if [f[1], f[2]]
                .iter()
                .any(|a| port(a).is_some_and(|p| ports.contains(&p)))
            {
                inodes.insert(f[9].to_string());
            }
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .filter(|i| inodes.contains(i))
        .count()
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What each open file descriptor of this process points at (`fd -> target`), to name
/// the descriptors a leak check found extra.
pub fn open_fd_targets() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.to_string_lossy()
            ))
        })
        .collect();
    out.sort();
    out
}

/// Polls `f` every 20 ms until it returns true or `limit` passes; returns the last value.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream whose first write goes out with `prefix` in front, in one write: a PROXY header
/// and the ClientHello in the same segment, as a load balancer often sends them.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`.
    pub fn new(prefix: &[u8], inner: S) -> Self {
        Prefixed {
            prefix: prefix.to_vec(),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        // The prefix and this write together; report `buf` written once the prefix is out.
        let mut joined = self.prefix.clone();
        joined.extend_from_slice(buf);
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &joined))?;
        let from_prefix = n.min(self.prefix.len());
        self.prefix.drain(..from_prefix);
        Poll::Ready(Ok(n - from_prefix))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
