//! TLS passthrough: SNI peek, backend choice, and the in-kernel splice (or its userspace
//! fallback).
//!
//! In front of the HTTPS accept loop:
//!
//! ```text
//! accept -> Passthrough::classify(stream)
//!   Passthrough(conn) -> Passthrough::serve(conn)   connect, PROXY v2, splice until closed
//!   Terminate(replay) -> TLS termination            the ClientHello is still unread
//!   Reject(reason)    -> dropped (reason logged)
//! ```
//!
//! `Passthrough::handle` does all three. The ClientHello is only peeked, never consumed: the
//! kernel splice forwards it from the socket's receive queue, and the terminator reads it
//! normally (the `Replay` handed over has an empty prefix).
//!
//! Wiring (app.rs): `let pt = Arc::new(Passthrough::start(PassthroughConfig { userspace:
//! args.passthrough_userspace, ..Default::default() }).await);` once, `pt.apply(&snapshot)`
//! for every snapshot, and per accepted HTTPS connection, in its own task:
//! `if let Some(tls) = pt.handle(tcp, origin).await { /* terminate TLS on `tls` */ }`.
pub mod balance;
pub mod copy;
pub mod metrics;
pub mod peek;
pub mod plain_http;
pub mod sni;
mod sockdiag;
pub mod splice;
pub mod watch;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use thiserror::Error;
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::Semaphore};

use crate::snapshot::{HostMatch, PassthroughRoute, Snapshot};
use balance::{Balancer, ConnectError};
use peek::{Hello, PeekError, PeekLimits, Replay};
use sni::HelloError;
use splice::{Ending, SpliceEngine};

/// Passthrough settings, fixed at start.
#[derive(Clone, Debug)]
pub struct PassthroughConfig {
    /// Use the userspace copy even if the kernel splice works (`--passthrough-userspace`).
    pub userspace: bool,
    /// Bounds on reading one ClientHello (16 KiB, 5 s).
    pub peek: PeekLimits,
    /// ClientHellos being read at once; further connections wait for a slot within the
    /// ClientHello time limit, then are closed. A connection takes a slot only once its
    /// first bytes arrived, so idle connects cannot hold them.
    pub max_handshakes: usize,
    /// ClientHellos being read at once from one client address: one host cannot take every
    /// slot.
    pub max_handshakes_per_source: usize,
    /// Backend connect timeout per endpoint tried.
    pub connect_timeout: Duration,
    /// Turn on the splice program's log statements when this loads its own object.
    pub kernel_log: bool,
    /// A pair one side has closed is reset after this long without a byte from the other
    /// ([`splice::HALF_OPEN_IDLE`]).
    pub half_open_idle: Duration,
}

impl Default for PassthroughConfig {
    fn default() -> Self {
        PassthroughConfig {
            userspace: false,
            peek: PeekLimits::default(),
            max_handshakes: 1024,
            max_handshakes_per_source: 64,
            connect_timeout: Duration::from_secs(5),
            kernel_log: false,
            half_open_idle: splice::HALF_OPEN_IDLE,
        }
    }
}

/// A passthrough route with its balancer.
#[derive(Debug)]
pub struct RouteEntry {
    pub route: PassthroughRoute,
    balancer: Arc<Balancer>,
}

/// Passthrough routes by SNI: exact names, then wildcards (longest suffix first), then a
/// host-less route. A host terminated by name (an exact HTTP virtual host) is never taken
/// by a passthrough wildcard or the host-less route: exact beats wildcard, as in routing.
#[derive(Debug, Default)]
struct RouteTable {
    generation: u64,
    exact: HashMap<String, Arc<RouteEntry>>,
    /// Exact host names of the terminated (HTTP) virtual hosts, lower-cased.
    terminated: HashSet<String>,
    wildcards: Vec<(String, Arc<RouteEntry>)>,
    any: Option<Arc<RouteEntry>>,
    balancers: HashMap<String, Arc<Balancer>>,
}

/// The swappable passthrough route table, rebuilt from each snapshot.
#[derive(Debug, Default)]
pub struct Router {
    table: ArcSwap<RouteTable>,
}

impl Router {
    /// Replaces the table with the passthrough routes of `snapshot`. Balancing state is kept
    /// for upstreams whose endpoints did not change. The first route of a host wins.
    pub fn apply(&self, snapshot: &Snapshot) {
        let prev = self.table.load();
        let mut t = RouteTable {
            generation: snapshot.generation,
            ..RouteTable::default()
        };
        for route in &snapshot.passthrough {
            let balancer = t
                .balancers
                .get(&route.upstream.name)
                .filter(|b| b.upstream() == &route.upstream)
                .cloned()
                .unwrap_or_else(|| {
                    Balancer::carry_over(&prev.balancers, &route.upstream, route.load_balance)
                });
            t.balancers
                .insert(route.upstream.name.clone(), balancer.clone());
            let entry = Arc::new(RouteEntry {
                route: route.clone(),
                balancer,
            });
            match &route.host {
                HostMatch::Exact(h) => {
                    t.exact.entry(h.to_ascii_lowercase()).or_insert(entry);
                }
                HostMatch::Wildcard(s) => {
                    let s = s.to_ascii_lowercase();
                    if !t.wildcards.iter().any(|(w, _)| *w == s) {
                        t.wildcards.push((s, entry));
                    }
                }
                HostMatch::Any => {
                    t.any.get_or_insert(entry);
                }
            }
        }
        t.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        t.terminated = snapshot
            .http
            .hosts
            .iter()
            .flat_map(|vh| vh.exact_names())
            .collect();
        self.table.store(Arc::new(t));
    }

    /// The route for a (lower-cased) SNI, if it is a passthrough host.
    pub fn lookup(&self, sni: &str) -> Option<Arc<RouteEntry>> {
        let t = self.table.load();
        if let Some(e) = t.exact.get(sni) {
            return Some(e.clone());
        }
        if t.terminated.contains(sni) {
            return None;
        }
        t.wildcards
            .iter()
            .find(|(suffix, _)| HostMatch::Wildcard(suffix.clone()).matches(sni))
            .map(|(_, e)| e.clone())
            .or_else(|| t.any.clone())
    }

    /// The host-less route, for hellos without SNI.
    pub fn lookup_no_sni(&self) -> Option<Arc<RouteEntry>> {
        self.table.load().any.clone()
    }

    /// Generation of the snapshot the table was built from.
    pub fn generation(&self) -> u64 {
        self.table.load().generation
    }
}

/// TCP keep-alive on a passthrough socket: nothing else notices a peer that vanished (a
/// spliced pair is never read by userspace), and its descriptors and map entries would stay
/// for good. A dead peer is found after about two minutes of silence (60 s, then six probes
/// 10 s apart).
fn keepalive(s: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    if let Err(e) = socket2::SockRef::from(s).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "passthrough: TCP keep-alive not set");
    }
}

/// What to do with a freshly accepted HTTPS connection.
#[derive(Debug)]
pub enum Classified {
    /// SNI names a passthrough host: call [`Passthrough::serve`].
    Passthrough(PassthroughConn),
    /// Any other SNI: terminate TLS on this stream (the ClientHello is still unread in it).
    Terminate(Replay<TcpStream>),
    /// Plain HTTP, not TLS: answer with [`plain_http::refuse`], holding the slots (the
    /// answer lingers up to 2 s, and such connections stay bounded like pending hellos, per
    /// source address too).
    PlainHttp(TcpStream, HelloSlots),
    /// Closed; the reason was logged.
    Reject(RejectReason),
}

/// A connection routed to a passthrough backend, its ClientHello unread.
#[derive(Debug)]
pub struct PassthroughConn {
    stream: TcpStream,
    sni: Option<String>,
    route: Arc<RouteEntry>,
    /// Client and destination named by the connection's trusted PROXY header, for the
    /// backend's own PROXY header; `None`: the socket's addresses.
    proxied: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// A PROXY header was read off the client socket before the ClientHello.
    header_read: bool,
}

impl PassthroughConn {
    /// The SNI that selected the route (`None` for a host-less route).
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }
    /// The route.
    pub fn route(&self) -> &PassthroughRoute {
        &self.route.route
    }
}

/// Why a connection was closed before TLS.
#[derive(Debug, Error)]
pub enum RejectReason {
    #[error("too many ClientHellos being read at once")]
    Overloaded,
    #[error(transparent)]
    Peek(#[from] PeekError),
}

/// Why a passthrough connection failed.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("writing the PROXY header: {0}")]
    ProxyHeader(std::io::Error),
    #[error("splice setup lost the connection: {0}")]
    Setup(splice::SpliceError),
}

/// How a passthrough connection ended.
#[derive(Clone, Copy, Debug)]
pub struct ServeReport {
    pub ending: Ending,
    pub client_bytes: u64,
    pub backend_bytes: u64,
    /// True when the kernel moved the bytes.
    pub spliced: bool,
}

/// The engine moving bytes of passthrough connections.
#[derive(Debug)]
enum Engine {
    Kernel(Box<SpliceEngine>),
    Userspace,
}

/// The passthrough side of the HTTPS listener.
#[derive(Debug)]
pub struct Passthrough {
    metrics: Arc<metrics::PassthroughMetrics>,
    router: Router,
    engine: Engine,
    cfg: PassthroughConfig,
    handshakes: Arc<Semaphore>,
    sources: Arc<SourceSlots>,
}

/// The slots a connection holds while its first bytes are handled: one of all, one of its
/// source's.
#[derive(Debug)]
pub struct HelloSlots {
    _all: tokio::sync::OwnedSemaphorePermit,
    _source: SourceSlot,
}

/// ClientHellos being read per client address (an IPv6 client per /64, what one host
/// usually has).
#[derive(Debug, Default)]
struct SourceSlots(std::sync::Mutex<HashMap<std::net::IpAddr, usize>>);

/// The address `addr` counts as: IPv4 as itself (a mapped one too), IPv6 by its /64.
fn source_key(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One ClientHello being read from `addr`; gives its slot back when dropped.
#[derive(Debug)]
struct SourceSlot {
    slots: Arc<SourceSlots>,
    addr: std::net::IpAddr,
}

impl SourceSlots {
    /// A slot for `addr`, unless it already has `max`.
    fn take(self: &Arc<Self>, addr: std::net::IpAddr, max: usize) -> Option<SourceSlot> {
        let addr = source_key(addr);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(addr).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            addr,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.addr);
            }
        }
    }
}

impl Passthrough {
    /// Chooses the engine (kernel splice unless disabled, unavailable or failing its
    /// self-test) and logs the choice. Loads its own copy of the kernel object. Needs a
    /// tokio runtime.
    pub async fn start(cfg: PassthroughConfig) -> Self {
        if cfg.userspace {
            return Self::start_with_kernel(cfg, None).await;
        }
        let kernel = splice::load_kernel(cfg.kernel_log);
        Self::start_with_kernel(cfg, Some(kernel)).await
    }

    /// Like [`Passthrough::start`] with the splice program already attached by the caller
    /// (`splice::attach_kernel` on the unified loader's object), or its error. `None`:
    /// userspace copy.
    pub async fn start_with_kernel(
        cfg: PassthroughConfig,
        kernel: Option<Result<splice::KernelSplice, splice::SpliceError>>,
    ) -> Self {
        let engine = match kernel {
            None => {
                tracing::info!("TLS passthrough: userspace copy (--passthrough-userspace)");
                Engine::Userspace
            }
            Some(kernel) => match kernel.and_then(SpliceEngine::with_kernel) {
                Ok(engine) => match engine.self_test().await {
                    Ok(()) => {
                        tracing::info!("TLS passthrough: in-kernel sockmap splice");
                        Engine::Kernel(Box::new(engine))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS passthrough: sockmap splice unreliable; using the userspace copy");
                        Engine::Userspace
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "TLS passthrough: sockmap splice unavailable; using the userspace copy");
                    Engine::Userspace
                }
            },
        };
        let handshakes = Arc::new(Semaphore::new(cfg.max_handshakes));
        Passthrough {
            metrics: Arc::default(),
            router: Router::default(),
            engine,
            cfg,
            handshakes,
            sources: Arc::default(),
        }
    }

    /// Takes the passthrough routes of a new snapshot.
    pub fn apply(&self, snapshot: &Snapshot) {
        self.router.apply(snapshot);
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> Arc<metrics::PassthroughMetrics> {
        self.metrics.clone()
    }

    /// The route table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Whether connections are spliced in the kernel.
    pub fn is_kernel_splice(&self) -> bool {
        matches!(self.engine, Engine::Kernel(_))
    }

    /// Bytes the kernel splice held for userspace to relay; `None` for the userspace copy.
    pub fn splice_held(&self) -> Option<ingress_common::counters::Counter> {
        match &self.engine {
            Engine::Kernel(k) => k.held(),
            Engine::Userspace => None,
        }
    }

    /// What the kernel splice dropped: (bytes on an unpaired socket, bytes whose peer was
    /// gone), with skb counts. `None` for the userspace copy.
    pub fn splice_drops(
        &self,
    ) -> Option<(
        ingress_common::counters::Counter,
        ingress_common::counters::Counter,
    )> {
        match &self.engine {
            Engine::Kernel(k) => k.drops(),
            Engine::Userspace => None,
        }
    }

    /// Entries in (SPLICE_SOCKS, SPLICE_PEERS, SPLICE_CREDIT) when splicing in the kernel.
    pub fn map_entries(&self) -> Option<(usize, usize, usize)> {
        match &self.engine {
            Engine::Kernel(k) => Some(k.map_entries()),
            Engine::Userspace => None,
        }
    }

    /// Peeks at the ClientHello (bounded in bytes, time and concurrency) and decides. `peer`
    /// is the client address the connection was accepted from.
    pub async fn classify(&self, stream: TcpStream, peer: std::net::SocketAddr) -> Classified {
        // Slots are taken once bytes arrive: a connection that sends nothing costs a
        // descriptor and a timer, not a slot, so idle connects cannot lock everyone out.
        let started = tokio::time::Instant::now();
        let limit = self.cfg.peek.timeout;
        // `readable()` cannot tell: tokio takes a new socket as ready until a read says
        // otherwise. A peek waits for real bytes (or EOF) and consumes nothing.
        let first =
            tokio::time::timeout(limit, peek::first_bytes(&stream, self.cfg.peek.max_bytes))
                .await
                .map_err(|_| PeekError::Timeout(limit))
                .and_then(|r| r.map_err(PeekError::Io));
        let first = match first {
            Ok(first) => first,
            Err(e) => {
                tracing::info!(peer = ?stream.peer_addr().ok(), reason = %e, "passthrough: closing connection before TLS");
                return Classified::Reject(e.into());
            }
        };
        let Some(source) = self
            .sources
            .take(peer.ip(), self.cfg.max_handshakes_per_source)
        else {
            tracing::debug!(%peer, "passthrough: closing connection: too many pending ClientHellos from this address");
            return Classified::Reject(RejectReason::Overloaded);
        };
        // A burst over the cap waits for a slot (within the ClientHello's time limit) rather
        // than being closed: the open-connection cap already bounds how many can wait.
        let wait = limit.saturating_sub(started.elapsed());
        let slot = self.handshakes.clone();
        let permit = match slot.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(wait, slot.acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        peer = ?stream.peer_addr().ok(),
                        "passthrough: closing connection: too many pending ClientHellos"
                    );
                    return Classified::Reject(RejectReason::Overloaded);
                }
            },
        };
        let peek = PeekLimits {
            timeout: limit.saturating_sub(started.elapsed()),
            ..self.cfg.peek
        };
        let hello = match peek::peek_client_hello(&stream, first, peek).await {
            Ok(h) => h,
            Err(PeekError::Invalid(HelloError::NotHandshake(b)))
                if plain_http::looks_like_http(b) =>
            {
                tracing::debug!(peer = ?stream.peer_addr().ok(), "plain HTTP on the HTTPS port");
                let slots = HelloSlots {
                    _all: permit,
                    _source: source,
                };
                return Classified::PlainHttp(stream, slots);
            }
            Err(PeekError::Invalid(HelloError::BadServerName(why))) => {
                // A name no passthrough host can be (a trailing dot, an empty label): TLS
                // termination decides, as nginx does behind ingress-nginx's passthrough
                // proxy, instead of a reset.
                tracing::debug!(peer = ?stream.peer_addr().ok(), reason = why, "unusable SNI; terminating TLS");
                return Classified::Terminate(Replay::new(Bytes::new(), stream));
            }
            Err(e) => {
                tracing::info!(peer = ?stream.peer_addr().ok(), reason = %e, "passthrough: closing connection before TLS");
                return Classified::Reject(e.into());
            }
        };
        let (sni, route) = match hello {
            Hello::Sni(name) => {
                let route = self.router.lookup(&name);
                (Some(name), route)
            }
            // No SNI (clients dialling an IP address, cloud load balancer health checks):
            // the host-less passthrough route if there is one, else TLS termination with the
            // default certificate and routing by Host, as ingress-nginx does.
            Hello::NoSni => (None, self.router.lookup_no_sni()),
        };
        match route {
            Some(route) => Classified::Passthrough(PassthroughConn {
                stream,
                sni,
                route,
                proxied: None,
                header_read: false,
            }),
            None => Classified::Terminate(Replay::new(Bytes::new(), stream)),
        }
    }

    /// Connects to a backend of the route, sends the PROXY header if enabled, and moves bytes
    /// (kernel splice, or the copy if the splice cannot take this pair) until both sides are
    /// closed.
    pub async fn serve(&self, conn: PassthroughConn) -> Result<ServeReport, ServeError> {
        let PassthroughConn {
            stream: client,
            sni,
            route,
            proxied,
            header_read,
        } = conn;
        let peer = client.peer_addr().ok();
        let (mut backend, endpoint, _active) =
            route.balancer.connect(self.cfg.connect_timeout).await?;
        for s in [&client, &backend] {
            let _ = s.set_nodelay(true);
            keepalive(s);
        }
        // Bytes userspace writes to the backend before the splice: its PROXY header, then
        // (after an incoming PROXY header) what the client has sent so far.
        let mut prelude = Vec::new();
        if route.route.proxy_protocol {
            let addresses = match proxied {
                Some(a) => Ok(a),
                None => client
                    .peer_addr()
                    .and_then(|p| Ok((p, client.local_addr()?))),
            };
            let Ok((src, dst)) = addresses else {
                return Err(ServeError::ProxyHeader(std::io::Error::other(
                    "client address unknown",
                )));
            };
            prelude = crate::proxy_protocol::v2::encode(src, dst);
        }
        let header_len = prelude.len() as u64;
        if header_read {
            // The sockmap's read path hands the verdict whole segments, bytes already read
            // from them included: after the PROXY header was read, the ClientHello may share
            // its segment, and would reach the backend with the header in front. So what is
            // queued goes over here, and the splice starts on an empty queue.
            take_queued(&client, &mut prelude).map_err(ServeError::ProxyHeader)?;
        }
        if !prelude.is_empty() {
            backend
                .write_all(&prelude)
                .await
                .map_err(ServeError::ProxyHeader)?;
        }
        let from_client = prelude.len() as u64 - header_len;
        let prelude = prelude.len() as u64;
        tracing::debug!(?peer, ?sni, %endpoint, upstream = %route.route.upstream.name, "passthrough: connected");
        let idle = self.cfg.half_open_idle;
        let mut report = match &self.engine {
            Engine::Kernel(k) => match k.splice(client, backend, prelude, idle).await {
                Ok(r) => ServeReport {
                    ending: r.ending,
                    client_bytes: r.client_bytes,
                    backend_bytes: r.backend_bytes,
                    spliced: true,
                },
                Err(splice::SetupFailed {
                    streams: Some((client, backend)),
                    error,
                }) => {
                    if error.socket_not_established() {
                        // Per connection and up to each client: not worth a warning.
                        tracing::debug!(error = %error, "passthrough: a socket closed before the kernel splice; copying in userspace");
                    } else {
                        tracing::warn!(error = %error, "passthrough: kernel splice setup failed; copying in userspace");
                    }
                    copied(copy::copy(client, backend, idle).await)
                }
                Err(splice::SetupFailed {
                    streams: None,
                    error,
                }) => return Err(ServeError::Setup(error)),
            },
            Engine::Userspace => copied(copy::copy(client, backend, idle).await),
        };
        report.client_bytes += from_client;
        tracing::debug!(?peer, ?sni, %endpoint, ending = ?report.ending, client_bytes = report.client_bytes,
            backend_bytes = report.backend_bytes, "passthrough: closed");
        Ok(report)
    }

    /// Classifies and serves passthrough connections to the end; returns the stream when it
    /// is for TLS termination. The one call the HTTPS accept loop needs. `origin` is where
    /// the connection comes from (its PROXY header already read, if the listener takes one).
    pub async fn handle(
        &self,
        stream: TcpStream,
        origin: crate::proxy_protocol::Origin,
    ) -> Option<Replay<TcpStream>> {
        use metrics::Outcome;
        match self.classify(stream, origin.client).await {
            Classified::Passthrough(mut conn) => {
                conn.proxied = origin.proxied.then_some((origin.client, origin.local));
                conn.header_read = origin.header_read;
                let sni = conn.sni.clone();
                self.metrics.active(true);
                match self.serve(conn).await {
                    Ok(r) => {
                        self.metrics.count(if r.spliced {
                            Outcome::Spliced
                        } else {
                            Outcome::Copied
                        });
                        self.metrics.bytes(r.client_bytes, r.backend_bytes);
                        self.metrics.ending(r.ending);
                    }
                    Err(e) => {
                        self.metrics.count(Outcome::Failed);
                        tracing::warn!(?sni, error = %e, "passthrough: connection failed");
                    }
                }
                self.metrics.active(false);
                None
            }
            Classified::Terminate(s) => {
                self.metrics.count(Outcome::Terminated);
                Some(s)
            }
            Classified::PlainHttp(stream, _slots) => {
                self.metrics.count(Outcome::PlainHttp);
                plain_http::refuse(stream).await;
                None
            }
            Classified::Reject(reason) => {
                self.metrics.count(match reason {
                    RejectReason::Overloaded => Outcome::RejectedOverloaded,
                    RejectReason::Peek(_) => Outcome::RejectedHello,
                });
                None
            }
        }
    }
}

/// Appends every byte queued on `client` (read, not peeked) to `out`, without waiting.
fn take_queued(client: &TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match rustix::net::recv(client, &mut buf[..], rustix::net::RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Ok(()),
            Ok((n, _)) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn copied(r: copy::CopyReport) -> ServeReport {
    ServeReport {
        ending: r.ending,
        client_bytes: r.client_bytes,
        backend_bytes: r.backend_bytes,
        spliced: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{BackendProtocol, LoadBalance, ObjectRef, Upstream};

    /// A host with a /64 cannot take every slot by spreading its hellos over addresses.
    #[test]
    fn an_ipv6_source_is_counted_by_its_64() {
        let slots = Arc::new(SourceSlots::default());
        let ip = |s: &str| {
            s.parse::<std::net::IpAddr>()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let a = slots.take(ip("2001:db8:1:2::1"), 2);
        let b = slots.take(ip("2001:db8:1:2:ffff::9"), 2);
        assert!(a.is_some() && b.is_some());
        assert!(slots.take(ip("2001:db8:1:2::3"), 2).is_none(), "same /64");
        assert!(slots.take(ip("2001:db8:1:3::1"), 2).is_some(), "next /64");
        // A mapped IPv4 client counts as itself.
        let v4 = slots.take(ip("::ffff:198.18.0.1"), 1);
        assert!(v4.is_some());
        assert!(slots.take(ip("198.18.0.1"), 1).is_none());
        drop((a, b, v4));
        assert!(slots.take(ip("2001:db8:1:2::3"), 2).is_some(), "given back");
    }

    fn route(host: HostMatch, name: &str) -> PassthroughRoute {
        PassthroughRoute {
            origin: ObjectRef::default(),
            host,
            upstream: Arc::new(Upstream {
                name: name.into(),
                endpoints: vec![],
                missing: false,
                protocol: BackendProtocol::Https,
                tls: None,
            }),
            proxy_protocol: false,
            load_balance: LoadBalance::RoundRobin,
        }
    }

    #[test]
    fn router_precedence_and_swap() {
        let r = Router::default();
        let snap = Snapshot {
            generation: 3,
            passthrough: vec![
                route(HostMatch::Wildcard("example.com".into()), "wild"),
                route(HostMatch::Wildcard("b.example.com".into()), "wild-long"),
                route(HostMatch::Exact("a.example.com".into()), "exact"),
                route(HostMatch::Exact("a.example.com".into()), "dup"),
            ],
            ..Snapshot::default()
        };
        r.apply(&snap);
        assert_eq!(r.generation(), 3);
        let name = |h: &str| r.lookup(h).map(|e| e.route.upstream.name.clone());
        assert_eq!(name("a.example.com").as_deref(), Some("exact"));
        assert_eq!(name("c.example.com").as_deref(), Some("wild"));
        assert_eq!(name("x.b.example.com").as_deref(), Some("wild-long"));
        assert_eq!(name("example.com"), None);
        assert_eq!(name("other.test"), None);
        assert!(r.lookup_no_sni().is_none());
        r.apply(&Snapshot {
            passthrough: vec![route(HostMatch::Any, "any")],
            ..Snapshot::default()
        });
        assert_eq!(name("a.example.com").as_deref(), Some("any"));
        assert!(r.lookup_no_sni().is_some());
    }

    /// A ClientHello whose server name no passthrough host can be goes to TLS termination
    /// (which answers at the TLS level) instead of being reset.
    #[tokio::test]
    async fn an_unusable_server_name_is_terminated_not_reset() {
        use super::sni::tests::{hello, records, sni_ext};
        use tokio::io::AsyncWriteExt;
        let pt = Passthrough::start(PassthroughConfig {
            userspace: true,
            ..PassthroughConfig::default()
        })
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        for name in [&b"pt.test."[..], b"foo..bar"] {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let (server, peer) = listener.accept().await.expect("accept");
            let bytes = records(&hello(&[sni_ext(&[(0, name)])]), 16384);
            client.write_all(&bytes).await.expect("write");
            let got = pt.classify(server, peer).await;
            assert!(
                matches!(got, Classified::Terminate(_)),
                "{}: {got:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn a_host_terminated_by_name_is_not_taken_by_a_passthrough_wildcard() {
        let r = Router::default();
        r.apply(&Snapshot {
            passthrough: vec![
                route(HostMatch::Wildcard("wild.test".into()), "wild"),
                route(HostMatch::Exact("pt.wild.test".into()), "exact"),
            ],
            http: crate::snapshot::HttpConfig {
                hosts: vec![
                    crate::snapshot::VirtualHost {
                        host: HostMatch::Exact("A.wild.test".into()),
                        routes: vec![],
                        fallback: None,
                        tls: true,
                        client_auth: None,
                        aliases: Vec::new(),
                        www_redirect: false,
                        app_root: None,
                    },
                    // ingress-nginx terminates the names a terminated host borrows too:
                    // its passthrough matches SNI exactly, never by wildcard.
                    crate::snapshot::VirtualHost {
                        host: HostMatch::Exact("term.test".into()),
                        routes: vec![],
                        fallback: None,
                        tls: true,
                        client_auth: None,
                        aliases: vec![
                            HostMatch::Exact("Alias.wild.test".into()),
                            HostMatch::Wildcard("sub.wild.test".into()),
                        ],
                        www_redirect: false,
                        app_root: None,
                    },
                    crate::snapshot::VirtualHost {
                        host: HostMatch::Exact("wild.test".into()),
                        routes: vec![],
                        fallback: None,
                        tls: true,
                        client_auth: None,
                        aliases: Vec::new(),
                        www_redirect: true,
                        app_root: None,
                    },
                    crate::snapshot::VirtualHost {
                        host: HostMatch::Exact("pt.wild.test".into()),
                        routes: vec![],
                        fallback: None,
                        tls: true,
                        client_auth: None,
                        aliases: Vec::new(),
                        www_redirect: false,
                        app_root: None,
                    },
                ],
                default_backend: None,
                service_default: None,
            },
            ..Snapshot::default()
        });
        let name = |h: &str| r.lookup(h).map(|e| e.route.upstream.name.clone());
        assert_eq!(name("a.wild.test"), None, "terminated host spliced");
        assert_eq!(name("b.wild.test").as_deref(), Some("wild"));
        assert_eq!(name("alias.wild.test"), None, "server-alias spliced");
        assert_eq!(name("www.wild.test"), None, "www redirect name spliced");
        // A wildcard alias borrows no exact name: the passthrough wildcard keeps those.
        assert_eq!(
            name("x.sub.wild.test"),
            None,
            "not under *.wild.test anyway"
        );
        // An exact passthrough host stays passthrough.
        assert_eq!(name("pt.wild.test").as_deref(), Some("exact"));
    }
}
