//! Upstream connections: dialing (TCP, optional TLS, HTTP/1.1 or HTTP/2 handshake) and
//! keep-alive pooling per endpoint. HTTP/1.1 connections are checked out exclusively and come
//! back when their response body has been read to the end; one HTTP/2 connection per endpoint
//! is shared by all requests. Each endpoint has its own small lock: no global lock on the path.
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use crate::proxy::tls::UpstreamTlsClients;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use crate::{
    proxy::{body::RequestBody, errors::ProxyError, metrics::UpstreamErrorKind},
    snapshot::BackendProtocol,
};

use super::Endpoint;

/// How upstream HTTP/1.1 connections are reused (the `upstream-keepalive-*` settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAliveLimits {
    /// Idle connections kept per endpoint.
    pub max_idle: usize,
    /// How long one is kept idle.
    pub idle_timeout: Duration,
    /// Requests one connection serves before it is closed; 0: no limit.
    pub max_requests: u64,
    /// How long one connection is reused at most.
    pub max_lifetime: Duration,
}

impl From<&crate::proxy::limits::Limits> for KeepAliveLimits {
    fn from(l: &crate::proxy::limits::Limits) -> Self {
        KeepAliveLimits {
            max_idle: l.upstream_max_idle_per_endpoint,
            idle_timeout: l.upstream_idle_timeout,
            max_requests: l.upstream_max_requests,
            max_lifetime: l.upstream_max_lifetime,
        }
    }
}

impl Default for KeepAliveLimits {
    fn default() -> Self {
        (&crate::proxy::limits::Limits::default()).into()
    }
}

/// The limits every pool reads when it takes or keeps a connection, shared so that a change
/// of the controller ConfigMap reaches the pools that already exist.
#[derive(Debug)]
pub struct PoolSettings {
    max_idle: AtomicUsize,
    idle_timeout_ms: AtomicU64,
    max_requests: AtomicU64,
    max_lifetime_ms: AtomicU64,
}

impl PoolSettings {
    /// Settings starting at `limits`.
    pub fn new(limits: KeepAliveLimits) -> Arc<Self> {
        let s = PoolSettings {
            max_idle: AtomicUsize::new(0),
            idle_timeout_ms: AtomicU64::new(0),
            max_requests: AtomicU64::new(0),
            max_lifetime_ms: AtomicU64::new(0),
        };
        s.set(limits);
        Arc::new(s)
    }

    /// Makes `limits` the ones pools use from now on.
    pub fn set(&self, limits: KeepAliveLimits) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.max_idle.store(limits.max_idle, Relaxed);
        self.idle_timeout_ms.store(ms(limits.idle_timeout), Relaxed);
        self.max_requests.store(limits.max_requests, Relaxed);
        self.max_lifetime_ms.store(ms(limits.max_lifetime), Relaxed);
    }

    /// The limits in force.
    pub fn get(&self) -> KeepAliveLimits {
        KeepAliveLimits {
            max_idle: self.max_idle.load(Relaxed),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.load(Relaxed)),
            max_requests: self.max_requests.load(Relaxed),
            max_lifetime: Duration::from_millis(self.max_lifetime_ms.load(Relaxed)),
        }
    }
}

/// Streams an HTTP/2 upstream connection carries before another is opened: the smallest
/// `SETTINGS_MAX_CONCURRENT_STREAMS` in common use (100, RFC 9113's floor for what a server
/// should allow). Beyond a server's own limit, requests wait in hyper for a stream.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// HTTP/2 connections kept per endpoint; past them the least busy one takes the request.
const H2_MAX_CONNECTIONS: usize = 16;

/// Idle HTTP/1.1 connections and the shared HTTP/2 connections of one endpoint.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<H2Conns>,
    /// Told when a dial for a new HTTP/2 connection ends, for the requests waiting on it.
    h2_dialed: tokio::sync::Notify,
    settings: Arc<PoolSettings>,
    /// A task closes this pool's connections once idle past the timeout (see [`sweep`]).
    sweeping: AtomicBool,
}

/// The shared HTTP/2 connections of an endpoint, and whether one is being dialed: requests
/// that find them all busy meanwhile wait for it rather than each dial their own.
#[derive(Debug, Default)]
struct H2Conns {
    conns: Vec<H2Conn>,
    dialing: bool,
}

/// What the pool has for a request to an HTTP/2 endpoint.
pub(crate) enum H2Take<'a> {
    /// A stream on a shared connection.
    Conn(http2::SendRequest<RequestBody>, H2Stream),
    /// Dial a new connection; others wait until this is dropped.
    Dial(DialGuard<'a>),
    /// Another request is dialing one.
    Wait,
    /// Nothing known to speak HTTP/2 here: dial (or take an HTTP/1.1 connection).
    None,
}

/// Marks an HTTP/2 dial in progress until dropped, then wakes the requests waiting on it.
pub(crate) struct DialGuard<'a>(&'a Pool);

impl Drop for DialGuard<'_> {
    fn drop(&mut self) {
        self.0.h2.lock().unwrap_or_else(|e| e.into_inner()).dialing = false;
        self.0.h2_dialed.notify_waiters();
    }
}

/// A shared HTTP/2 connection and the streams open on it.
#[derive(Debug)]
struct H2Conn {
    sender: http2::SendRequest<RequestBody>,
    open: Arc<AtomicUsize>,
}

/// One stream counted on its HTTP/2 connection until dropped (with the response body).
#[derive(Debug)]
pub struct H2Stream(Arc<AtomicUsize>);

impl H2Stream {
    fn on(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Relaxed);
        H2Stream(open.clone())
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
    reuse: Reuse,
}

/// What an HTTP/1.1 upstream connection has served: `upstream-keepalive-requests` and
/// `upstream-keepalive-time` retire it.
#[derive(Clone, Copy, Debug)]
pub struct Reuse {
    born: Instant,
    served: u64,
}

impl Reuse {
    /// A connection just made.
    pub fn new() -> Self {
        Reuse {
            born: Instant::now(),
            served: 0,
        }
    }

    /// Whether the connection, having served one more request, may be used again at `now`.
    fn may_serve_again(&self, limits: &KeepAliveLimits, now: Instant) -> bool {
        (limits.max_requests == 0 || self.served < limits.max_requests)
            && now.saturating_duration_since(self.born) < limits.max_lifetime
    }
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse::new()
    }
}

impl Pool {
    /// A pool following `settings`.
    pub fn new(settings: Arc<PoolSettings>) -> Self {
        Pool {
            idle: Mutex::default(),
            h2: Mutex::default(),
            h2_dialed: tokio::sync::Notify::new(),
            settings,
            sweeping: AtomicBool::new(false),
        }
    }

    /// Closes the idle connections past the idle timeout (or closed by their upstream), and
    /// says when the oldest one left will be: `None` when none is left.
    fn close_expired(&self) -> Option<Duration> {
        let timeout = self.settings.get().idle_timeout;
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < timeout);
        // Oldest first: `put_h1` appends.
        idle.first()
            .map(|i| timeout.saturating_sub(now.duration_since(i.since)))
    }

    /// Pops the most recently idled connection that is still open, fresh and young enough.
    fn pop_h1(&self) -> Option<(http1::SendRequest<RequestBody>, Reuse)> {
        let now = Instant::now();
        let limits = self.settings.get();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed()
                && now.duration_since(i.since) < limits.idle_timeout
                && i.reuse.may_serve_again(&limits, now)
            {
                return Some((i.sender, i.reuse));
            }
        }
        None
    }

    /// An idle HTTP/1.1 connection ready for a request. A connection given back right at the
    /// end of a body may need a moment before hyper marks it ready: wait briefly here rather
    /// than spawn a task per request to watch it.
    async fn take_h1(&self) -> Option<(http1::SendRequest<RequestBody>, Reuse)> {
        while let Some((mut sender, reuse)) = self.pop_h1() {
            if sender.is_ready() {
                return Some((sender, reuse));
            }
            let ready = tokio::time::timeout(Duration::from_millis(50), sender.ready()).await;
            if let Ok(Ok(())) = ready {
                return Some((sender, reuse));
            }
        }
        None
    }

    /// Keeps a connection that has just served one more request, unless it is due to close.
    /// True when it is kept and no task watches the pool's idle time yet: the caller starts
    /// one.
    fn put_h1(&self, sender: http1::SendRequest<RequestBody>, mut reuse: Reuse) -> bool {
        reuse.served = reuse.served.saturating_add(1);
        let limits = self.settings.get();
        let now = Instant::now();
        if sender.is_closed() || limits.max_idle == 0 || !reuse.may_serve_again(&limits, now) {
            return false;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle.len() >= limits.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: now,
            reuse,
        });
        drop(idle);
        !self.sweeping.load(Relaxed)
            && self
                .sweeping
                .compare_exchange(false, true, Relaxed, Relaxed)
                .is_ok()
    }

    /// A stream on a shared HTTP/2 connection: on the first one with room, so the others
    /// empty out and go; past [`H2_MAX_CONNECTIONS`], on the least busy. `known`: the
    /// endpoint speaks HTTP/2 even with no connection yet (not so for ALPN-decided HTTPS).
    pub(crate) fn take_h2(&self, known: bool) -> H2Take<'_> {
        let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        let mut first = true;
        h2.conns.retain(|c| {
            let keep = !c.sender.is_closed() && (first || c.open.load(Relaxed) > 0);
            first &= !keep;
            keep
        });
        let conns = &h2.conns;
        let c = conns
            .iter()
            .find(|c| c.open.load(Relaxed) < H2_STREAMS_PER_CONNECTION)
            .or_else(|| {
                (conns.len() >= H2_MAX_CONNECTIONS)
                    .then(|| conns.iter().min_by_key(|c| c.open.load(Relaxed)))
                    .flatten()
            });
        if let Some(c) = c {
            return H2Take::Conn(c.sender.clone(), H2Stream::on(&c.open));
        }
        if conns.is_empty() && !known {
            return H2Take::None;
        }
        if h2.dialing {
            return H2Take::Wait;
        }
        h2.dialing = true;
        H2Take::Dial(DialGuard(self))
    }

    /// Waits up to `timeout` for another request's dial, then takes as [`Pool::take_h2`]
    /// does; `None` once the time is up (the caller dials).
    async fn wait_h2(&self, timeout: Duration) -> H2Take<'_> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a dial ending in between still wakes it.
            let dialed = self.h2_dialed.notified();
            tokio::pin!(dialed);
            dialed.as_mut().enable();
            match self.take_h2(true) {
                H2Take::Wait => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, dialed).await.is_err() {
                return H2Take::None;
            }
        }
    }

    /// Shares a new HTTP/2 connection (unless enough are); its first stream is the caller's.
    fn set_h2(&self, sender: &http2::SendRequest<RequestBody>) -> H2Stream {
        let open = Arc::new(AtomicUsize::new(0));
        let stream = H2Stream::on(&open);
        let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        if h2.conns.len() < H2_MAX_CONNECTIONS {
            h2.conns.push(H2Conn {
                sender: sender.clone(),
                open,
            });
        }
        stream
    }

    /// Idle HTTP/1.1 connections held (for tests and introspection).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Gives an HTTP/1.1 connection back to its pool once the response body has ended, or
/// counts an HTTP/2 stream as open on its connection until then.
#[derive(Debug)]
pub struct PoolReturn {
    endpoint: Arc<Endpoint>,
    sender: Option<http1::SendRequest<RequestBody>>,
    reuse: Reuse,
    ended: bool,
    _stream: Option<H2Stream>,
}

impl PoolReturn {
    /// Returns `sender` to `endpoint`'s pool on drop, if the body was read to its end.
    pub fn new(
        endpoint: Arc<Endpoint>,
        sender: http1::SendRequest<RequestBody>,
        reuse: Reuse,
    ) -> Self {
        PoolReturn {
            endpoint,
            sender: Some(sender),
            reuse,
            ended: false,
            _stream: None,
        }
    }

    /// Holds `stream` open on its HTTP/2 connection until dropped.
    pub fn h2(endpoint: Arc<Endpoint>, stream: H2Stream) -> Self {
        PoolReturn {
            endpoint,
            sender: None,
            reuse: Reuse::new(),
            ended: false,
            _stream: Some(stream),
        }
    }

    /// The response body was read to its end: the connection may be reused.
    pub fn mark_ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for PoolReturn {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        // A body dropped early leaves the connection mid-message: let it close.
        if self.ended && self.endpoint.pool.put_h1(sender, self.reuse) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(sweep(Arc::downgrade(&self.endpoint)));
                }
                Err(_) => self.endpoint.pool.sweeping.store(false, Relaxed),
            }
        }
    }
}

/// Closes an endpoint's idle connections once past `upstream-keepalive-timeout`, as nginx's
/// keepalive timer does: without it a burst's connections would stay open until the next
/// burst took them, or the upstream closed them. One task per endpoint with idle
/// connections; it wakes when the oldest is due, and ends when none is left or the
/// endpoint has left the config (its pool then closes them all).
async fn sweep(endpoint: Weak<Endpoint>) {
    loop {
        let next = {
            let Some(ep) = endpoint.upgrade() else {
                return;
            };
            match ep.pool.close_expired() {
                Some(next) => next,
                None => {
                    ep.pool.sweeping.store(false, Relaxed);
                    // A connection kept between the check and the store found the flag set
                    // and started no task: take it on.
                    if ep.pool.close_expired().is_none()
                        || ep
                            .pool
                            .sweeping
                            .compare_exchange(false, true, Relaxed, Relaxed)
                            .is_err()
                    {
                        return;
                    }
                    continue;
                }
            }
        };
        // A little past the deadline, so one wake-up finds it expired.
        tokio::time::sleep(next + Duration::from_millis(10)).await;
    }
}

/// Which kind of connection a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnMode {
    /// Reuse a pooled connection if there is one.
    Pooled,
    /// Dial a new connection (after a pooled one turned out closed).
    Fresh,
    /// A new HTTP/1.1 connection that may switch protocols; never pooled.
    Upgrade,
}

/// A connection ready to take a request.
#[derive(Debug)]
pub enum Conn {
    H1(http1::SendRequest<RequestBody>, Reuse),
    H2(http2::SendRequest<RequestBody>, H2Stream),
}

/// A checked-out connection and whether it came from the pool.
#[derive(Debug)]
pub struct Checkout {
    pub conn: Conn,
    pub reused: bool,
}

/// Why a connection to an endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connection refused")]
    Refused,
    #[error("connect failed: {0}")]
    Io(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
}

impl ConnectError {
    /// The metric label of this failure.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            ConnectError::Timeout => UpstreamErrorKind::ConnectTimeout,
            ConnectError::Refused => UpstreamErrorKind::ConnectRefused,
            ConnectError::Io(_) => UpstreamErrorKind::Connect,
            ConnectError::Tls(_) => UpstreamErrorKind::Tls,
            ConnectError::Handshake(_) => UpstreamErrorKind::Protocol,
        }
    }

    /// The response the client gets when no attempt succeeded.
    pub fn proxy_error(&self) -> ProxyError {
        match self {
            ConnectError::Timeout => ProxyError::ConnectTimeout,
            _ => ProxyError::ConnectFailed,
        }
    }
}

/// Dials endpoints. Upstream TLS does not verify the certificate unless the upstream has
/// `proxy-ssl-*` settings: endpoints are pod addresses, which certificates do not name
/// (ingress-nginx's `proxy-ssl-verify` default is off).
#[derive(Debug)]
pub struct Connector {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// `backend-protocol: HTTPS`: ALPN h2 and http/1.1.
    tls_https: Arc<ClientConfig>,
    /// `backend-protocol: GRPCS`: ALPN h2.
    tls_grpcs: Arc<ClientConfig>,
    /// Upgrades over TLS: ALPN http/1.1.
    tls_upgrade: Arc<ClientConfig>,
}

impl Connector {
    /// A connector using `configs` for (HTTPS, GRPCS, upgrade) upstream TLS.
    pub fn new(configs: [Arc<ClientConfig>; 3]) -> Self {
        let [tls_https, tls_grpcs, tls_upgrade] = configs;
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true);
        Connector {
            h1: http1::Builder::new(),
            h2,
            tls_https,
            tls_grpcs,
            tls_upgrade,
        }
    }

    /// A connection to `ep` for `mode`, dialed within `timeout` unless pooled.
    pub async fn checkout(
        &self,
        ep: &Arc<Endpoint>,
        protocol: BackendProtocol,
        tls: Option<&UpstreamTlsClients>,
        timeout: Duration,
        mode: ConnMode,
    ) -> Result<Checkout, ConnectError> {
        // The dials are boxed: inline, their TLS and handshake state (~1.4 KB) sat in every
        // request's future, pooled or not, and hyper copies that future several times.
        if mode == ConnMode::Upgrade {
            let sender = Box::pin(self.connect_upgradable(ep, protocol, tls, timeout)).await?;
            return Ok(Checkout {
                conn: Conn::H1(sender, Reuse::new()),
                reused: false,
            });
        }
        // Held over the dial of a new HTTP/2 connection.
        let mut dialing = None;
        if mode == ConnMode::Pooled {
            let h2 = match protocol {
                BackendProtocol::Http => H2Take::None,
                BackendProtocol::Https => ep.pool.take_h2(false),
                BackendProtocol::Grpc | BackendProtocol::Grpcs => ep.pool.take_h2(true),
            };
            let h2 = match h2 {
                H2Take::Wait => Box::pin(ep.pool.wait_h2(timeout)).await,
                other => other,
            };
            match h2 {
                H2Take::Conn(s, stream) => {
                    return Ok(Checkout {
                        conn: Conn::H2(s, stream),
                        reused: true,
                    })
                }
                H2Take::Dial(guard) => dialing = Some(guard),
                H2Take::Wait | H2Take::None => {}
            }
            if dialing.is_none()
                && !matches!(protocol, BackendProtocol::Grpc | BackendProtocol::Grpcs)
            {
                if let Some((s, r)) = ep.pool.take_h1().await {
                    return Ok(Checkout {
                        conn: Conn::H1(s, r),
                        reused: true,
                    });
                }
            }
        }
        let conn = tokio::time::timeout(timeout, Box::pin(self.connect(ep, protocol, tls)))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        drop(dialing);
        Ok(Checkout {
            conn,
            reused: false,
        })
    }

    async fn connect(
        &self,
        ep: &Endpoint,
        protocol: BackendProtocol,
        upstream_tls: Option<&UpstreamTlsClients>,
    ) -> Result<Conn, ConnectError> {
        let (https, grpcs) = match upstream_tls {
            Some(t) => (&t.configs[0], &t.configs[1]),
            None => (&self.tls_https, &self.tls_grpcs),
        };
        let tls = match protocol {
            BackendProtocol::Http | BackendProtocol::Grpc => None,
            BackendProtocol::Https => Some(https),
            BackendProtocol::Grpcs => Some(grpcs),
        };
        let io = dial(ep.addr, tls, upstream_tls.map(|t| &t.server_name)).await?;
        let h2 = match protocol {
            BackendProtocol::Http => false,
            BackendProtocol::Grpc => true,
            BackendProtocol::Https | BackendProtocol::Grpcs => io.negotiated_h2(),
        };
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = self
                .h2
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            let stream = ep.pool.set_h2(&sender);
            Ok(Conn::H2(sender, stream))
        } else {
            let (sender, conn) = self
                .h1
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Conn::H1(sender, Reuse::new()))
        }
    }

    /// A new, unpooled HTTP/1.1 connection able to switch protocols (WebSocket and friends).
    async fn connect_upgradable(
        &self,
        ep: &Endpoint,
        protocol: BackendProtocol,
        upstream_tls: Option<&UpstreamTlsClients>,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        let upgrade = upstream_tls.map_or(&self.tls_upgrade, |t| &t.configs[2]);
        let tls = match protocol {
            BackendProtocol::Http | BackendProtocol::Grpc => None,
            BackendProtocol::Https | BackendProtocol::Grpcs => Some(upgrade),
        };
        let fut = async {
            let io = TokioIo::new(dial(ep.addr, tls, upstream_tls.map(|t| &t.server_name)).await?);
            let (sender, conn) = self
                .h1
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream upgradable connection ended");
                }
            });
            Ok(sender)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }
}

/// Connects to `addr`, over TLS with `tls`. `name` is what the certificate is checked against
/// (and the SNI when the config sends one); without it the address, and no SNI.
async fn dial(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    name: Option<&ServerName<'static>>,
) -> Result<UpIo, ConnectError> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        _ => ConnectError::Io(e),
    })?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(UpIo::Plain(tcp)),
        Some(cfg) => {
            // An IP server name: rustls sends no SNI, as ingress-nginx does by default.
            let name = name
                .cloned()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(UpIo::Tls(Box::new(stream)))
        }
    }
}

/// A plain or TLS upstream stream.
#[derive(Debug)]
pub enum UpIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpIo {
    fn negotiated_h2(&self) -> bool {
        match self {
            UpIo::Plain(_) => false,
            UpIo::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpIo::Plain(s) => s.is_write_vectored(),
            UpIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_reused_within_its_request_and_age_limits() {
        let limits = KeepAliveLimits {
            max_requests: 2,
            max_lifetime: Duration::from_secs(60),
            ..Default::default()
        };
        let now = Instant::now();
        let mut r = Reuse::new();
        assert!(r.may_serve_again(&limits, now));
        r.served = 2;
        assert!(!r.may_serve_again(&limits, now), "served its 2");
        let unlimited = KeepAliveLimits {
            max_requests: 0,
            ..limits
        };
        assert!(r.may_serve_again(&unlimited, now), "0: no request limit");
        let later = now + Duration::from_secs(61);
        assert!(
            !r.may_serve_again(&unlimited, later),
            "older than its lifetime"
        );
    }

    #[test]
    fn settings_changes_reach_existing_pools() {
        let settings = PoolSettings::new(KeepAliveLimits::default());
        let pool = Pool::new(settings.clone());
        let changed = KeepAliveLimits {
            max_idle: 3,
            idle_timeout: Duration::from_secs(5),
            max_requests: 7,
            max_lifetime: Duration::from_millis(1500),
        };
        settings.set(changed);
        assert_eq!(pool.settings.get(), changed);
    }
}
