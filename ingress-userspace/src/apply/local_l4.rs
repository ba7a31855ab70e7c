//! Listeners on the node's own TCP L4 VIPs, for clients on the node itself.
//!
//! The XDP program sees only what arrives on the interfaces it is attached to. A process on
//! the node, or a pod of the node, connecting to the node's address never crosses them: its
//! packets reach the node's stack, which has no socket for the VIP and refuses them, where
//! ingress-nginx's `stream` server (listening on the host network) serves every client. So
//! for each TCP service on an address of this node with endpoints, a listener on exactly that
//! address and port takes what reaches the stack and copies it to an endpoint in userspace.
//! Traffic from elsewhere still goes through the kernel path: XDP answers before the stack.
//! A service without endpoints has no listener, so local clients are refused as remote ones
//! are. Removing a listener leaves its open connections to finish.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, warn};

use crate::snapshot::{L4Protocol, L4Service};

/// How long one endpoint gets to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Endpoints tried per connection, as ingress-nginx's `proxy-next-upstream-tries` default.
const TRIES: usize = 3;

/// One listening VIP:port: its accept loop and the endpoints it copies to.
struct Local {
    endpoints: watch::Sender<Arc<[SocketAddr]>>,
    accept: JoinHandle<()>,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The listeners, kept equal to the local TCP services of each snapshot.
pub struct LocalL4 {
    runtime: tokio::runtime::Handle,
    listeners: BTreeMap<SocketAddr, Local>,
    is_local: fn(IpAddr) -> bool,
}

impl LocalL4 {
    /// No listeners yet; they run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        LocalL4 {
            runtime,
            listeners: BTreeMap::new(),
            is_local: crate::maps::local_addrs::is_local,
        }
    }

    /// Decides with `f` whether a VIP is the node's own address (tests).
    pub fn with_local_check(mut self, f: fn(IpAddr) -> bool) -> Self {
        self.is_local = f;
        self
    }

    /// The VIP:ports listened on now.
    pub fn serving(&self) -> BTreeSet<SocketAddr> {
        self.listeners.keys().copied().collect()
    }

    /// Listens for each TCP service of `services` on a node address with endpoints (the
    /// first service of a VIP:port wins, as in the kernel), and closes the others. A
    /// listener that cannot bind is logged and tried again at the next apply.
    pub fn apply(&mut self, services: &[L4Service]) {
        let mut wanted: BTreeMap<SocketAddr, &[SocketAddr]> = BTreeMap::new();
        for s in services {
            if s.protocol == L4Protocol::Tcp && !s.backends.is_empty() && (self.is_local)(s.vip) {
                wanted
                    .entry(SocketAddr::new(s.vip, s.port))
                    .or_insert(&s.backends);
            }
        }
        self.listeners.retain(|addr, _| wanted.contains_key(addr));
        for (addr, endpoints) in wanted {
            let endpoints: Arc<[SocketAddr]> = endpoints
                .iter()
                .filter(|e| e.is_ipv6() == addr.is_ipv6())
                .copied()
                .collect();
            if let Some(local) = self.listeners.get(&addr) {
                local.endpoints.send_if_modified(|now| {
                    let changed = **now != *endpoints;
                    if changed {
                        *now = endpoints.clone();
                    }
                    changed
                });
                continue;
            }
            match self.listen(addr, endpoints) {
                Ok(local) => {
                    debug!(%addr, "L4 service listening for clients on this node");
                    self.listeners.insert(addr, local);
                }
                Err(e) => warn!(%addr, error = %e,
                    "L4 service not reachable from this node itself: cannot listen"),
            }
        }
    }

    fn listen(&self, addr: SocketAddr, endpoints: Arc<[SocketAddr]>) -> std::io::Result<Local> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        // A listener just removed may not have closed yet when its VIP comes back.
        socket.set_reuseport(true)?;
        let listener = {
            let _enter = self.runtime.enter();
            socket.bind(addr)?;
            socket.listen(1024)?
        };
        let (tx, rx) = watch::channel(endpoints);
        let accept = self.runtime.spawn(accept_loop(listener, rx));
        Ok(Local {
            endpoints: tx,
            accept,
        })
    }
}

async fn accept_loop(listener: TcpListener, endpoints: watch::Receiver<Arc<[SocketAddr]>>) {
    let next = Arc::new(AtomicUsize::new(0));
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
        let endpoints = endpoints.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let Some(backend) = connect(&endpoints, start).await else {
                // Dropped: the client sees its connection closed, as nginx's stream
                // server closes it when no upstream answers.
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = backend.set_nodelay(true);
            crate::passthrough::copy::copy(client, backend).await;
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
        let mut local = LocalL4::new(tokio::runtime::Handle::current()).with_local_check(|_| true);
        let apply = |local: &mut LocalL4, backends: &[SocketAddr]| {
            local.apply(&[
                tcp(port, backends, L4Protocol::Tcp),
                // UDP is not served here, nor a VIP that is not the node's (below).
                tcp(free_port(), backends, L4Protocol::Udp),
            ])
        };
        apply(&mut local, &[a, dead, b]);
        assert_eq!(local.serving(), [vip].into());
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
        let mut elsewhere =
            LocalL4::new(tokio::runtime::Handle::current()).with_local_check(|_| false);
        elsewhere.apply(&[tcp(free_port(), &[a], L4Protocol::Tcp)]);
        assert!(elsewhere.serving().is_empty());
    }
}
