//! Listeners and connections: the accept loops, serving one connection (HTTP/1.1 or HTTP/2,
//! with upgrades), and draining.
//!
//! HTTPS accept loop, deliberately simple: accept, `TCP_NODELAY`, spawn [`Proxy::serve_tls`].
//! When TLS passthrough shares the port, its SNI peek replaces [`Proxy::serve_https`]: for a
//! connection it does not pass through it calls [`Proxy::serve_tls`] with a stream that
//! replays the peeked bytes first (for example `passthrough::peek::Replay`).
//!
//! Drain: [`DrainHandle::drain`] stops the accept loops (their listeners close, so new
//! connections are refused), asks every connection to finish its in-flight requests and close
//! (HTTP/1.1: close after the current response; HTTP/2: GOAWAY), waits up to the drain timeout,
//! then cuts whatever is left, including upgraded tunnels.
use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use rustls_pki_types::CertificateDer;

use super::{
    accept::Admitted, filters::client_cert, headers::ForwardedValues, limits::FramingGuard,
    service, Proxy, Shared,
};
use crate::{proxy_protocol::Origin, snapshot::ClientAuth};

/// Binds a listening socket for the proxy: `SO_REUSEADDR`, a deep accept backlog, and for
/// IPv6 addresses `IPV6_V6ONLY` off so `[::]` serves IPv4 too.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Cancellation and tracking of everything the proxy runs.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    /// Stop accepting; connections finish in-flight work and close.
    pub stop: CancellationToken,
    /// Drain timeout passed: cut everything.
    pub force: CancellationToken,
    /// Connections and upgraded tunnels.
    pub tracker: TaskTracker,
}

/// Drains the proxy (graceful shutdown).
#[derive(Clone, Debug)]
pub struct DrainHandle {
    state: Arc<DrainState>,
}

impl DrainHandle {
    pub(crate) fn new(state: Arc<DrainState>) -> Self {
        DrainHandle { state }
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeout`, then closes what
    /// is left. Returns true when everything finished within the timeout.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.state.stop.cancel();
        self.state.tracker.close();
        let clean = tokio::time::timeout(timeout, self.state.tracker.wait())
            .await
            .is_ok();
        if !clean {
            tracing::warn!(
                left = self.state.tracker.len(),
                "drain timeout: closing remaining connections"
            );
            self.state.force.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.state.tracker.wait()).await;
        }
        clean
    }

    /// Makes the drain wait for `fut` too (up to its timeout): for connections served outside
    /// the proxy's own accept loops, such as TLS passthrough, which the drain cannot cut
    /// early and which end when the process exits.
    pub fn track<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        self.state.tracker.track_future(fut)
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.state.stop.is_cancelled()
    }

    /// Connections (and tunnels) still open.
    pub fn open(&self) -> usize {
        self.state.tracker.len()
    }
}

/// What the request handler knows about the connection a request came on.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub tls: bool,
    /// The certificate chain the client sent in the handshake (leaf first), if asked and sent.
    pub client_chain: Option<Arc<[CertificateDer<'static>]>>,
    /// The handshake asked for a client certificate (its SNI named a host that asks).
    pub client_cert_asked: bool,
    /// The last judgement of `client_chain`, against the settings it was made for: a
    /// connection's requests normally all go to one host, so the chain is verified once.
    pub client_verdict: std::sync::Mutex<Option<(Arc<ClientAuth>, Arc<client_cert::Verdict>)>>,
    pub fwd: ForwardedValues,
    pub framing: Arc<super::limits::FramingFlag>,
    /// Requests in progress, for the idle limit.
    pub activity: Arc<super::idle::Activity>,
}

/// What the TLS handshake learnt of the client's certificate.
#[derive(Debug, Default)]
struct ClientCert {
    chain: Option<Arc<[CertificateDer<'static>]>>,
    asked: bool,
}

impl ConnCtx {
    /// The judgement of this connection's client certificate under `auth`, made once per
    /// connection and settings.
    pub fn client_verdict(&self, auth: &Arc<ClientAuth>) -> Arc<client_cert::Verdict> {
        let mut cached = self
            .client_verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((a, v)) = cached.as_ref() {
            if Arc::ptr_eq(a, auth) {
                return v.clone();
            }
        }
        let verdict = Arc::new(client_cert::verify(
            auth,
            self.client_chain.as_deref(),
            rustls_pki_types::UnixTime::now(),
        ));
        *cached = Some((auth.clone(), verdict.clone()));
        verdict
    }
}

impl Proxy {
    /// Accepts plain HTTP on `listener` until drained.
    pub fn serve_http(&self, listener: TcpListener) -> impl Future<Output = ()> + Send + 'static {
        let proxy = self.clone();
        async move {
            let local = listener.local_addr().ok();
            accept_loop(&proxy.shared, listener, |mut stream, peer, admitted| {
                let local = local.unwrap_or(peer);
                let proxy = proxy.clone();
                proxy.shared.drain.tracker.clone().spawn(async move {
                    let _admitted = admitted;
                    if let Some(origin) = proxy.origin(&mut stream, peer, local).await {
                        let client = ClientCert::default();
                        serve_conn(proxy.shared, stream, origin, false, client).await;
                    }
                });
            })
            .await;
        }
    }

    /// Accepts TLS on `listener` and terminates every connection (no passthrough) until
    /// drained.
    pub fn serve_https(&self, listener: TcpListener) -> impl Future<Output = ()> + Send + 'static {
        let proxy = self.clone();
        async move {
            let local = listener.local_addr().ok();
            accept_loop(&proxy.shared, listener, |mut stream, peer, admitted| {
                let local = local.unwrap_or(peer);
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    if let Some(origin) = proxy.origin(&mut stream, peer, local).await {
                        proxy.serve_tls(stream, origin).await;
                    }
                });
            })
            .await;
        }
    }

    /// Where a new connection comes from. With the PROXY protocol on, its header is read
    /// first: `None` when it is missing, bad or late, or when the client is blocked (the
    /// connection is to be closed).
    pub async fn origin(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Origin> {
        let origin = self.read_origin(stream, peer, local).await?;
        if self.shared.config.load().global.blocked(origin.client.ip()) {
            self.shared.metrics.blocked();
            tracing::debug!(client = %origin.client, "closing connection: client in block-cidrs");
            return None;
        }
        Some(origin)
    }

    async fn read_origin(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Origin> {
        // Read before the wait: a guard is not held across it.
        let (proxy_protocol, trusted, timeout) = {
            let config = self.shared.config.load();
            let real_ip = &config.global.real_ip;
            (
                real_ip.proxy_protocol,
                real_ip.trusts(peer.ip()),
                config.global.proxy_protocol_timeout,
            )
        };
        if !proxy_protocol {
            return Some(Origin::direct(peer, local));
        }
        let read = crate::proxy_protocol::read(stream, timeout);
        let header = tokio::select! {
            header = read => header,
            _ = self.shared.drain.stop.cancelled() => return None,
        };
        match header {
            Ok(h) => Some(Origin::from_header(&h, peer, local, trusted)),
            Err(e) => {
                self.shared.metrics.proxy_protocol_refused();
                tracing::debug!(%peer, error = %e, "closing connection: PROXY protocol header");
                None
            }
        }
    }

    /// Terminates TLS on an accepted connection and serves it. `stream` may replay bytes
    /// already peeked (SNI routing); `origin` says who the client is. The future is tracked
    /// by the drain.
    pub fn serve_tls<S>(
        &self,
        stream: S,
        origin: Origin,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let tracker = shared.drain.tracker.clone();
        tracker.track_future(async move {
            let timeout = shared.options.limits.tls_handshake_timeout;
            // Hosts asking for client certificates, or narrowed versions and suites, need
            // the ClientHello read before a config is chosen.
            let choose_config = |sni: Option<&str>| {
                let config = shared.config.load();
                match config.routes.handshake_config(sni) {
                    Some(c) => Some((c, true)),
                    None => config.server_tls.clone().map(|c| (c, false)),
                }
            };
            let choose: Option<super::tls::ChooseConfig<'_>> = {
                let config = shared.config.load();
                (config.routes.requests_client_certs() || config.server_tls.is_some())
                    .then_some(&choose_config)
            };
            let handshake =
                super::tls::accept(&shared.acceptor, choose, stream, timeout, &shared.metrics);
            let tls = tokio::select! {
                tls = handshake => tls,
                _ = shared.drain.force.cancelled() => None,
            };
            if let Some((tls, asked)) = tls {
                let chain = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::<[CertificateDer<'static>]>::from(c.to_vec()));
                let client = ClientCert { chain, asked };
                serve_conn(shared, tls, origin, true, client).await;
            }
        })
    }

    /// Serves plain HTTP on an accepted connection (e.g. handed over by another listener).
    pub fn serve_plain<S>(
        &self,
        stream: S,
        origin: Origin,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let tracker = shared.drain.tracker.clone();
        tracker.track_future(serve_conn(
            shared,
            stream,
            origin,
            false,
            ClientCert::default(),
        ))
    }
}

async fn accept_loop(
    shared: &Shared,
    listener: TcpListener,
    mut on_conn: impl FnMut(TcpStream, SocketAddr, Admitted),
) {
    loop {
        let (stream, peer, admitted) = tokio::select! {
            a = shared.admission.accept(&listener) => a,
            _ = shared.drain.stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        on_conn(stream, peer, admitted);
    }
    // Dropping the listener here makes new connections fail fast during the drain.
    drop(listener);
}

/// Serves HTTP on one connection until it closes, or the drain says so.
async fn serve_conn<S>(
    shared: Arc<Shared>,
    stream: S,
    origin: Origin,
    tls: bool,
    client: ClientCert,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = origin.client;
    let stream =
        super::slow_reader::SendDeadline::new(stream, shared.options.limits.client_send_timeout);
    let (fwd, activity, server, limit, head_timeout) = {
        let config = shared.config.load();
        let global = &config.global;
        let fwd = ForwardedValues::new(
            origin.client.ip(),
            origin.local.port(),
            tls,
            global.real_ip.compute_full_forwarded_for,
        )
        .with_trust(global.real_ip.trusts(origin.peer));
        let activity = super::idle::Activity::new(global.max_requests_per_connection);
        (
            fwd,
            activity,
            global.server.clone(),
            global.idle_timeout,
            global.client_header_timeout,
        )
    };
    let (io, framing) = FramingGuard::new(stream, head_timeout);
    let ctx = Arc::new(ConnCtx {
        tls,
        client_chain: client.chain,
        client_cert_asked: client.asked,
        client_verdict: std::sync::Mutex::new(None),
        fwd,
        framing,
        activity: activity.clone(),
    });
    shared.metrics.connection_opened();
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(service::handle(shared, ctx, req).await) }
    });
    let conn = server
        .as_deref()
        .unwrap_or(&shared.server)
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stop = shared.drain.stop.clone();
    let force = shared.drain.force.clone();
    let idle = activity.idle_for(limit);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                if let Some(status) = super::limits::refused_status(&*e) {
                    super::access_log::refused(&shared, peer.ip(), status);
                }
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = idle => {
            // Nothing in progress: HTTP/2 gets its GOAWAY, HTTP/1.1 just closes, and a
            // connection still in protocol detection is cancelled.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limit, conn.as_mut()).await;
            tracing::debug!(%peer, "idle connection closed");
        }
        _ = activity.retired() => {
            // Served its share: HTTP/2 gets GOAWAY (streams in flight finish), HTTP/1.1
            // closes after the current response; the client reconnects.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = force.cancelled() => {}
            }
            tracing::debug!(%peer, "connection served its request limit; closed");
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = force.cancelled() => {}
            }
        }
    }
    shared.metrics.connection_closed();
}
