//! Listeners on the node's own L4 VIPs, for clients on the node itself.
//!
//! The XDP program sees only what arrives on the interfaces it is attached to. A process on
//! the node, or a pod of the node, connecting to the node's address never crosses them: its
//! packets reach the node's stack, which has no socket for the VIP and refuses them, where
//! ingress-nginx's `stream` server (listening on the host network) serves every client. So
//! for each service on an address of this node with endpoints, a socket on exactly that
//! address and port takes what reaches the stack and relays it to an endpoint in userspace:
//! TCP connections are copied; UDP datagrams go through one upstream socket per client
//! address, forgotten after `UDP_IDLE` without a datagram either way. Traffic from elsewhere
//! still goes through the kernel path: XDP answers before the stack. A service without
//! endpoints has no socket, so local clients are refused as remote ones are. Removing a TCP
//! listener leaves its open connections to finish; removing a UDP socket ends its sessions.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, warn};

use crate::snapshot::{L4Protocol, L4Service};

/// How long one endpoint gets to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Endpoints tried per connection, as ingress-nginx's `proxy-next-upstream-tries` default.
const TRIES: usize = 3;
/// How long a UDP client's session lives without a datagram either way: the kernel path's
/// default UDP conntrack timeout.
const UDP_IDLE: Duration = Duration::from_secs(120);
/// UDP sessions per VIP:port at most; a datagram of a new client past it is dropped.
const MAX_UDP_SESSIONS: usize = 4096;

/// A VIP:port and its protocol.
type Key = (SocketAddr, L4Protocol);

/// One VIP:port served: its receive loop and the endpoints it relays to.
struct Local {
    endpoints: watch::Sender<Arc<[SocketAddr]>>,
    task: JoinHandle<()>,
    /// UDP only: the sessions, ended with the socket.
    sessions: Option<Arc<Sessions>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(s) = &self.sessions {
            s.end_all();
        }
    }
}

/// The sockets, kept equal to the local services of each snapshot.
pub struct LocalL4 {
    runtime: tokio::runtime::Handle,
    listeners: BTreeMap<Key, Local>,
    /// The services of the last apply with endpoints, wherever their VIP is: an address
    /// that comes to this node later (a floating VIP failing over to it) is served from
    /// the next [`LocalL4::recheck`], without waiting for a config change.
    candidates: BTreeMap<Key, Arc<[SocketAddr]>>,
    /// Those of them whose socket could not be bound, warned about once.
    unbound: BTreeSet<Key>,
    /// This host's addresses, read once per pass; `None` when they cannot be read.
    addresses: fn() -> Option<BTreeSet<IpAddr>>,
    /// The last read failed (warned about once).
    addresses_unreadable: bool,
    /// Interfaces the XDP program is attached to: what arrives there is the kernel path's
    /// (edge checks included), and what it passes to the stack must not reach these sockets.
    xdp_ifindexes: Vec<u32>,
    /// Closed for good (the process is draining): applies bind nothing.
    closed: bool,
}

/// Connections copied at once per TCP VIP:port; more are closed on accept.
const MAX_TCP_CONNECTIONS: usize = 4096;

impl LocalL4 {
    /// No sockets yet; they run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        LocalL4 {
            runtime,
            listeners: BTreeMap::new(),
            candidates: BTreeMap::new(),
            unbound: BTreeSet::new(),
            addresses: crate::maps::local_addrs::all,
            addresses_unreadable: false,
            xdp_ifindexes: Vec::new(),
            closed: false,
        }
    }

    /// Closes every socket for good, as the process drains: open TCP connections go on.
    pub fn close(&mut self) {
        self.closed = true;
        self.listeners.clear();
    }

    /// Ignores what arrives on these interfaces (by index): the XDP program's.
    pub fn with_xdp_interfaces(mut self, ifindexes: Vec<u32>) -> Self {
        self.xdp_ifindexes = ifindexes;
        self
    }

    /// Attaches a socket filter dropping packets that arrived on an XDP interface. XDP
    /// hands a few packets of remote clients to the stack (TTL 1, fragments, IPv6
    /// extension headers, an unresolved next hop): without this they would be served here,
    /// past the edge checks and split from their flow's kernel path.
    fn no_remote_clients(&self, socket: &socket2::SockRef<'_>) -> std::io::Result<()> {
        use socket2::SockFilter;
        const LD_W_ABS: u16 = 0x20;
        const JEQ_K: u16 = 0x15;
        const RET_K: u16 = 0x06;
        /// `SKF_AD_OFF + SKF_AD_IFINDEX`: the index of the device the packet came in on.
        const IFINDEX: u32 = 0xffff_f000 + 8;
        let n = self.xdp_ifindexes.len();
        if n == 0 {
            return Ok(());
        }
        let Ok(jumps) = u8::try_from(n) else {
            return Err(std::io::Error::other(
                "too many XDP interfaces for a socket filter",
            ));
        };
        let mut prog = vec![SockFilter::new(LD_W_ABS, 0, 0, IFINDEX)];
        for (i, ifindex) in self.xdp_ifindexes.iter().enumerate() {
            // On a match, past the remaining tests and the accept, to the drop.
            prog.push(SockFilter::new(JEQ_K, jumps - i as u8, 0, *ifindex));
        }
        prog.push(SockFilter::new(RET_K, 0, 0, u32::MAX));
        prog.push(SockFilter::new(RET_K, 0, 0, 0));
        socket.attach_filter(&prog)
    }

    /// Takes this host's addresses from `f` (tests).
    pub fn with_addresses(mut self, f: fn() -> Option<BTreeSet<IpAddr>>) -> Self {
        self.addresses = f;
        self
    }

    /// The VIP:ports served now, with their protocol.
    pub fn serving(&self) -> BTreeSet<Key> {
        self.listeners.keys().copied().collect()
    }

    /// Serves each service of `services` on a node address with endpoints (the first
    /// service of a VIP:port wins, as in the kernel), and closes the others. A socket that
    /// cannot bind is logged and tried again at the next apply or recheck.
    pub fn apply(&mut self, services: &[L4Service]) {
        let mut candidates: BTreeMap<Key, &[SocketAddr]> = BTreeMap::new();
        for s in services {
            candidates
                .entry((SocketAddr::new(s.vip, s.port), s.protocol))
                .or_insert(&s.backends);
        }
        // The kernel path balances a VIP over the endpoints of its family only.
        self.candidates = candidates
            .into_iter()
            .map(|(key, endpoints)| {
                let family = endpoints.iter().filter(|e| e.is_ipv6() == key.0.is_ipv6());
                (key, family.copied().collect::<Arc<[SocketAddr]>>())
            })
            .filter(|(_, endpoints)| !endpoints.is_empty())
            .collect();
        self.recheck();
    }

    /// Reads this host's addresses again and serves what changed since the last pass: a
    /// VIP address that came or went, a socket that could not be bound before. Returns
    /// whether any socket was opened or closed.
    pub fn recheck(&mut self) -> bool {
        if self.closed {
            return false;
        }
        // Unreadable addresses (no file descriptor left): the addresses served now are
        // taken as still the node's, since closing every socket would cut the node's
        // clients off until the next pass; removed services and endpoint changes still
        // apply.
        let addresses = match (self.addresses)() {
            Some(a) => {
                self.addresses_unreadable = false;
                a
            }
            None => {
                if !std::mem::replace(&mut self.addresses_unreadable, true) {
                    warn!(
                        "L4 services on this node: its addresses cannot be read; those served stay"
                    );
                }
                self.listeners.keys().map(|(addr, _)| addr.ip()).collect()
            }
        };
        let before = self.listeners.len();
        let candidates = &self.candidates;
        let wanted = |key: &Key| candidates.contains_key(key) && addresses.contains(&key.0.ip());
        self.listeners.retain(|key, _| wanted(key));
        self.unbound.retain(|key| wanted(key));
        let mut changed = self.listeners.len() != before;
        for (&key, endpoints) in &self.candidates {
            if !addresses.contains(&key.0.ip()) {
                continue;
            }
            let (addr, protocol) = key;
            if let Some(local) = self.listeners.get(&key) {
                local.endpoints.send_if_modified(|now| {
                    let modified = **now != **endpoints;
                    if modified {
                        *now = endpoints.clone();
                    }
                    modified
                });
                continue;
            }
            let served = match protocol {
                L4Protocol::Tcp => self.listen(addr, endpoints.clone()),
                L4Protocol::Udp => self.relay(addr, endpoints.clone()),
            };
            match served {
                Ok(local) => {
                    debug!(%addr, ?protocol, "L4 service serving clients on this node");
                    self.listeners.insert(key, local);
                    self.unbound.remove(&key);
                    changed = true;
                }
                Err(e) if self.unbound.insert(key) => warn!(%addr, ?protocol, error = %e,
                    "L4 service not reachable from this node itself: cannot bind (tried again every recheck)"),
                Err(e) => debug!(%addr, ?protocol, error = %e, "L4 service still cannot bind"),
            }
        }
        changed
    }

    fn listen(&self, addr: SocketAddr, endpoints: Arc<[SocketAddr]>) -> std::io::Result<Local> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        self.no_remote_clients(&socket2::SockRef::from(&socket))?;
        let listener = {
            let _enter = self.runtime.enter();
            socket.bind(addr)?;
            socket.listen(1024)?
        };
        let (tx, rx) = watch::channel(endpoints);
        let task = self.runtime.spawn(accept_loop(listener, rx));
        Ok(Local {
            endpoints: tx,
            task,
            sessions: None,
        })
    }

    fn relay(&self, addr: SocketAddr, endpoints: Arc<[SocketAddr]>) -> std::io::Result<Local> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        self.no_remote_clients(&socket2::SockRef::from(&socket))?;
        let socket = {
            let _enter = self.runtime.enter();
            Arc::new(UdpSocket::from_std(socket)?)
        };
        let sessions = Arc::new(Sessions::default());
        let (tx, rx) = watch::channel(endpoints);
        let task = self.runtime.spawn(relay_loop(socket, rx, sessions.clone()));
        Ok(Local {
            endpoints: tx,
            task,
            sessions: Some(sessions),
        })
    }
}

/// One UDP client's upstream socket, and the task relaying the endpoint's answers.
struct Session {
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    /// When the client last sent, in seconds since `Sessions::epoch`.
    last_sent: Arc<AtomicU64>,
    reply: JoinHandle<()>,
}

/// The UDP sessions of one VIP:port, by client address.
struct Sessions {
    by_client: Mutex<HashMap<SocketAddr, Session>>,
    epoch: Instant,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            by_client: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Session>> {
        self.by_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn end_all(&self) {
        for (_, s) in self.lock().drain() {
            s.reply.abort();
        }
    }
}

async fn relay_loop(
    socket: Arc<UdpSocket>,
    mut endpoints: watch::Receiver<Arc<[SocketAddr]>>,
    sessions: Arc<Sessions>,
) {
    let next = AtomicUsize::new(0);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                debug!(error = %e, "L4 local UDP: receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if endpoints.has_changed().unwrap_or(false) {
            // Sessions with an endpoint that left end: a client that keeps sending would
            // otherwise never idle out and stay on a pod that is gone (the kernel path moves
            // such a flow too). Its datagram opens a session with one still there.
            let now = endpoints.borrow_and_update().clone();
            sessions.lock().retain(|_, s| {
                let stays = now.contains(&s.endpoint);
                if !stays {
                    s.reply.abort();
                }
                stays
            });
        }
        let existing = sessions.lock().get(&client).map(|s| {
            s.last_sent.store(sessions.now(), Ordering::Relaxed);
            s.upstream.clone()
        });
        let upstream = match existing {
            Some(u) => u,
            None => {
                let endpoints = endpoints.borrow().clone();
                if endpoints.is_empty() || sessions.lock().len() >= MAX_UDP_SESSIONS {
                    debug!(%client, "L4 local UDP: no session to be had, datagram dropped");
                    continue;
                }
                let endpoint = endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
                match open_session(&socket, &sessions, client, endpoint).await {
                    Ok(u) => u,
                    Err(e) => {
                        debug!(%endpoint, error = %e, "L4 local UDP: no upstream socket");
                        continue;
                    }
                }
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Connects an upstream socket for `client` to `endpoint` and starts relaying its answers.
/// The session ends after `UDP_IDLE` without a datagram either way, or when the endpoint
/// refuses one (ICMP port unreachable): the client's next datagram opens a session with the
/// next endpoint.
async fn open_session(
    socket: &Arc<UdpSocket>,
    sessions: &Arc<Sessions>,
    client: SocketAddr,
    endpoint: SocketAddr,
) -> std::io::Result<Arc<UdpSocket>> {
    let any: SocketAddr = match endpoint {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let upstream = Arc::new(UdpSocket::bind(any).await?);
    upstream.connect(endpoint).await?;
    let last_sent = Arc::new(AtomicU64::new(sessions.now()));
    let reply = tokio::spawn({
        let (socket, upstream, sessions) = (socket.clone(), upstream.clone(), sessions.clone());
        let last_sent = last_sent.clone();
        async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        let _ = socket.send_to(&buf[..n], client).await;
                    }
                    Ok(Err(_)) => break,
                    // No answer for a while: the session lives on while the client sends.
                    Err(_) => {
                        let quiet = sessions.now() - last_sent.load(Ordering::Relaxed);
                        if quiet >= UDP_IDLE.as_secs() {
                            break;
                        }
                    }
                }
            }
            sessions.lock().remove(&client);
        }
    });
    sessions.lock().insert(
        client,
        Session {
            endpoint,
            upstream: upstream.clone(),
            last_sent,
            reply,
        },
    );
    Ok(upstream)
}

async fn accept_loop(listener: TcpListener, endpoints: watch::Receiver<Arc<[SocketAddr]>>) {
    let next = Arc::new(AtomicUsize::new(0));
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // EMFILE and the like: pause rather than spin.
                warn!(error = %e, "L4 local listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = room.clone().try_acquire_owned() else {
            debug!("L4 local listener: connection limit, closed");
            continue;
        };
        let endpoints = endpoints.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _place = place;
            let Some(backend) = connect(&endpoints, start).await else {
                // Dropped: the client sees its connection closed, as nginx's stream
                // server closes it when no upstream answers.
                return;
            };
            // A peer gone without a reset is found by keepalive, not waited for forever.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(60))
                .with_interval(Duration::from_secs(10))
                .with_retries(6);
            for s in [&client, &backend] {
                let _ = s.set_nodelay(true);
                let _ = socket2::SockRef::from(s).set_tcp_keepalive(&keepalive);
            }
            let idle = crate::passthrough::splice::HALF_OPEN_IDLE;
            crate::passthrough::copy::copy(client, backend, idle).await;
        });
    }
}

/// A connection to one of `endpoints`, round robin from `start`, trying up to `TRIES`.
async fn connect(endpoints: &[SocketAddr], start: usize) -> Option<TcpStream> {
    let n = endpoints.len();
    for i in 0..n.min(TRIES) {
        let addr = endpoints[(start + i) % n];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(e)) => debug!(%addr, error = %e, "L4 local: endpoint refused"),
            Err(_) => debug!(%addr, "L4 local: endpoint did not answer"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::snapshot::ObjectRef;

    /// A server answering each connection with `name` and closing.
    async fn server(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    fn loopback() -> Option<BTreeSet<IpAddr>> {
        Some([IpAddr::from([127, 0, 0, 1])].into())
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn tcp(port: u16, backends: &[SocketAddr], protocol: L4Protocol) -> L4Service {
        L4Service {
            origin: ObjectRef::default(),
            vip: "127.0.0.1".parse().expect("ip"),
            port,
            protocol,
            backends: backends.to_vec(),
        }
    }

    async fn ask(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn local_clients_reach_the_endpoints_of_a_local_tcp_vip() {
        let a = server("a").await;
        let b = server("b").await;
        let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let port = free_port();
        let vip = SocketAddr::from(([127, 0, 0, 1], port));
        let mut local = LocalL4::new(tokio::runtime::Handle::current()).with_addresses(loopback);
        let apply = |local: &mut LocalL4, backends: &[SocketAddr]| {
            local.apply(&[tcp(port, backends, L4Protocol::Tcp)])
        };
        apply(&mut local, &[a, dead, b]);
        assert_eq!(local.serving(), [(vip, L4Protocol::Tcp)].into());
        // Round robin over the endpoints; the dead one's turn goes to the next.
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            seen.insert(ask(vip).await.expect("served"));
        }
        assert_eq!(seen, ["a".to_string(), "b".to_string()].into());
        // An endpoint change reaches the open listener.
        apply(&mut local, &[b]);
        for _ in 0..3 {
            assert_eq!(ask(vip).await.expect("served"), "b");
        }
        // No endpoints: no listener, so a local client is refused as a remote one is.
        apply(&mut local, &[]);
        assert!(local.serving().is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = TcpStream::connect(vip).await.expect_err("nothing listens");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        apply(&mut local, &[a]);
        assert_eq!(ask(vip).await.expect("served again"), "a");
        // Draining: closed for good, whatever comes next.
        local.close();
        apply(&mut local, &[a]);
        assert!(local.serving().is_empty());
        let mut elsewhere = LocalL4::new(tokio::runtime::Handle::current())
            .with_addresses(|| Some(BTreeSet::new()));
        elsewhere.apply(&[
            tcp(free_port(), &[a], L4Protocol::Tcp),
            tcp(free_port(), &[a], L4Protocol::Udp),
        ]);
        assert!(elsewhere.serving().is_empty());
    }

    /// A UDP server answering each datagram with `name` and the datagram.
    async fn udp_server(name: &'static str) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = s.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                let mut answer = format!("{name} ").into_bytes();
                answer.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&answer, peer).await;
            }
        });
        addr
    }

    async fn udp_client(vip: SocketAddr) -> UdpSocket {
        let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        c.connect(vip).await.expect("connect");
        c
    }

    async fn udp_ask(c: &UdpSocket, what: &str) -> std::io::Result<String> {
        c.send(what.as_bytes()).await?;
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), c.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn local_udp_clients_each_keep_an_endpoint_and_are_refused_without_one() {
        let a = udp_server("a").await;
        let b = udp_server("b").await;
        let port = free_port();
        let vip = SocketAddr::from(([127, 0, 0, 1], port));
        let mut local = LocalL4::new(tokio::runtime::Handle::current()).with_addresses(loopback);
        local.apply(&[tcp(port, &[a, b], L4Protocol::Udp)]);
        assert_eq!(local.serving(), [(vip, L4Protocol::Udp)].into());
        // Each client address gets the next endpoint, and keeps it.
        let (c1, c2) = (udp_client(vip).await, udp_client(vip).await);
        let first = udp_ask(&c1, "one").await.expect("answered");
        let second = udp_ask(&c2, "two").await.expect("answered");
        assert_ne!(first[..1], second[..1], "{first} / {second}");
        for i in 0..3 {
            let again = udp_ask(&c1, &format!("again {i}")).await.expect("answered");
            assert_eq!(again, format!("{} again {i}", &first[..1]));
        }
        // c1's endpoint leaves: its next datagram goes to the one still there.
        let (kept, name) = if &first[..1] == "a" {
            (b, "b")
        } else {
            (a, "a")
        };
        local.apply(&[tcp(port, &[kept], L4Protocol::Udp)]);
        let moved = udp_ask(&c1, "moved").await.expect("answered");
        assert_eq!(moved, format!("{name} moved"));
        // No endpoints: the socket goes, and the stack refuses the next datagram.
        local.apply(&[tcp(port, &[], L4Protocol::Udp)]);
        assert!(local.serving().is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut refused = false;
        for _ in 0..3 {
            if let Err(e) = udp_ask(&c1, "anyone?").await {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    refused = true;
                    break;
                }
            }
        }
        assert!(
            refused,
            "a datagram to a VIP without endpoints went unrefused"
        );
        local.apply(&[tcp(port, &[b], L4Protocol::Udp)]);
        let c3 = udp_client(vip).await;
        assert_eq!(udp_ask(&c3, "back").await.expect("answered"), "b back");
    }

    #[tokio::test]
    async fn a_vip_address_coming_to_the_node_and_a_port_freed_later_are_served_at_the_recheck() {
        use std::sync::atomic::AtomicBool;
        static HERE: AtomicBool = AtomicBool::new(false);
        static UNREADABLE: AtomicBool = AtomicBool::new(false);
        fn addresses() -> Option<BTreeSet<IpAddr>> {
            if UNREADABLE.load(Ordering::SeqCst) {
                return None;
            }
            Some(match HERE.load(Ordering::SeqCst) {
                true => [IpAddr::from([127, 0, 0, 1])].into(),
                false => BTreeSet::new(),
            })
        }
        let a = server("a").await;
        let port = free_port();
        let vip = SocketAddr::from(([127, 0, 0, 1], port));
        let mut local = LocalL4::new(tokio::runtime::Handle::current()).with_addresses(addresses);
        local.apply(&[tcp(port, &[a], L4Protocol::Tcp)]);
        assert!(local.serving().is_empty());
        assert!(!local.recheck(), "nothing changed");
        // The address fails over to this node: served without another apply.
        HERE.store(true, Ordering::SeqCst);
        assert!(local.recheck());
        assert_eq!(local.serving(), [(vip, L4Protocol::Tcp)].into());
        assert_eq!(ask(vip).await.expect("served"), "a");
        assert!(!local.recheck(), "nothing changed");
        // Addresses that cannot be read (out of file descriptors) close nothing, and
        // endpoint changes still reach the open socket.
        UNREADABLE.store(true, Ordering::SeqCst);
        assert!(!local.recheck());
        assert_eq!(local.serving(), [(vip, L4Protocol::Tcp)].into());
        assert_eq!(ask(vip).await.expect("still served"), "a");
        let b = server("b").await;
        local.apply(&[tcp(port, &[b], L4Protocol::Tcp)]);
        assert_eq!(ask(vip).await.expect("still served"), "b");
        local.apply(&[tcp(port, &[a], L4Protocol::Tcp)]);
        UNREADABLE.store(false, Ordering::SeqCst);
        // It leaves again: the socket goes.
        HERE.store(false, Ordering::SeqCst);
        assert!(local.recheck());
        assert!(local.serving().is_empty());
        HERE.store(true, Ordering::SeqCst);
        // The listener's task ends at its next poll.
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Another program holds the port: nothing is bound, and nothing is lost either.
        let foreign = std::net::TcpListener::bind(vip).expect("foreign listener");
        assert!(!local.recheck());
        assert!(local.serving().is_empty());
        assert!(!local.recheck(), "still held");
        drop(foreign);
        assert!(local.recheck());
        assert_eq!(local.serving(), [(vip, L4Protocol::Tcp)].into());
        assert_eq!(ask(vip).await.expect("served"), "a");
        // A later apply without the service closes it, and a recheck brings nothing back.
        local.apply(&[]);
        assert!(local.serving().is_empty());
        assert!(!local.recheck());
    }
}
