//! A routed topology in namespaces: a client, a node running the XDP program on all its
//! links, and N backends, all on veth pairs with 198.18.0.0/15 addresses.
//!
//! ```text
//! client 198.18.0.2 --- 198.18.0.1 [node] 198.18.k.1 --- 198.18.k.2 backend k (k = 1..=N)
//! VIPs in 198.19.0.0/24 are routed by the client to the node; SNAT address 198.18.255.1.
//! ```
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::netns::{in_ns, NetNs};

/// The client's address.
pub const CLIENT: &str = "198.18.0.2";
/// The node's SNAT address.
pub const SNAT: &str = "198.18.255.1";

/// Client, node and backends, deleted on drop (backends first, then node, then client).
pub struct Topology {
    pub backends: Vec<NetNs>,
    pub node: NetNs,
    pub client: NetNs,
    /// Node-side interface names: client link first, then one per backend.
    pub node_links: Vec<String>,
}

/// The address of backend `k` (1-based).
pub fn backend_ip(k: usize) -> String {
    format!("198.18.{k}.2")
}

impl Topology {
    /// Builds the namespaces and links; nothing is attached yet.
    pub fn new(backends: usize) -> Result<Self> {
        crate::netns::require_privileges()?;
        let client = NetNs::new("tc")?;
        let node = NetNs::new("tn")?;
        let mut topo = Topology {
            backends: Vec::new(),
            node,
            client,
            node_links: Vec::new(),
        };
        topo.link(&topo.client.name.clone(), "nc", 0)?;
        topo.client.run("ip route add default via 198.18.0.1")?;
        for k in 1..=backends {
            let ns = NetNs::new("tb")?;
            let name = ns.name.clone();
            topo.backends.push(ns);
            topo.link(&name, &format!("nb{k}"), k)?;
            topo.backends[k - 1].run(&format!("ip route add default via 198.18.{k}.1"))?;
        }
        for cmd in [
            "sysctl -qw net.ipv4.ip_forward=1",
            "sysctl -qw net.ipv4.conf.all.rp_filter=0",
            "sysctl -qw net.ipv4.conf.default.rp_filter=0",
            &format!("ip addr add {SNAT}/32 dev lo"),
        ] {
            topo.node.run(cmd)?;
        }
        Ok(topo)
    }

    /// A veth pair between `peer_ns` (eth0, 198.18.k.2) and the node (`node_if`, 198.18.k.1).
    fn link(&mut self, peer_ns: &str, node_if: &str, k: usize) -> Result<()> {
        let node = &self.node;
        node.run(&format!(
            "ip link add name {node_if} type veth peer name eth0 netns {peer_ns}"
        ))?;
        node.run(&format!("ip addr add 198.18.{k}.1/24 dev {node_if}"))?;
        node.run(&format!("ip link set {node_if} up"))?;
        let sh = |cmd: &str| crate::netns::sh(&format!("ip netns exec {peer_ns} {cmd}"));
        sh(&format!("ip addr add 198.18.{k}.2/24 dev eth0"))?;
        sh("ip link set eth0 up")?;
        // Full checksums on the wire (as from a real NIC), and NAPI on the peer so frames
        // redirected by XDP into this veth are accepted.
        sh("ethtool -K eth0 tx off")?;
        sh("ethtool -K eth0 gro on")?;
        self.node_links.push(node_if.to_string());
        Ok(())
    }
}

/// A client behind a router: the topology's client namespace becomes the router (it keeps
/// 198.18.0.2 towards the node) and this namespace sits behind it at [`FAR_CLIENT`]. The
/// router's interface towards it has a smaller MTU than the client's own, as a tunnel or a
/// narrower link on the way would: the client's MSS does not show it, so only ICMP "too big"
/// from the router tells senders.
pub struct FarClient {
    pub ns: NetNs,
}

/// The address of the client behind the router.
pub const FAR_CLIENT: &str = "198.18.100.2";

impl FarClient {
    /// Puts a client behind `topo.client`, with `mtu` on the router's side of their link.
    pub fn behind(topo: &Topology, mtu: u32) -> Result<Self> {
        let ns = NetNs::new("tf")?;
        let router = &topo.client;
        router.run(&format!(
            "ip link add name rc type veth peer name eth0 netns {}",
            ns.name
        ))?;
        router.run("ip addr add 198.18.100.1/24 dev rc")?;
        router.run(&format!("ip link set rc mtu {mtu} up"))?;
        for cmd in [
            "sysctl -qw net.ipv4.ip_forward=1",
            "sysctl -qw net.ipv4.conf.all.rp_filter=0",
            "sysctl -qw net.ipv4.conf.default.rp_filter=0",
        ] {
            router.run(cmd)?;
        }
        ns.run(&format!("ip addr add {FAR_CLIENT}/24 dev eth0"))?;
        ns.run("ip link set eth0 up")?;
        ns.run("ethtool -K eth0 tx off")?;
        ns.run("ip route add default via 198.18.100.1")?;
        topo.node
            .run("ip route add 198.18.100.0/24 via 198.18.0.2")?;
        Ok(FarClient { ns })
    }
}

/// A TCP server in a backend namespace: answers each line with `<name> <line>`.
pub struct Server {
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts serving on `0.0.0.0:port` inside `ns`.
    pub fn start(ns: &NetNs, name: &str, port: u16) -> Result<Self> {
        let listener = in_ns(ns, move || TcpListener::bind(("0.0.0.0", port)))??;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let name = name.clone();
                        thread::spawn(move || serve(s, &name));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Server { stop, addr })
    }
}

fn serve(mut s: TcpStream, name: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let line = String::from_utf8_lossy(&buf[..n]);
                if s.write_all(format!("{name} {}", line.trim_end()).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A client connection opened from the client namespace.
pub struct Conn {
    s: TcpStream,
}

impl Conn {
    /// Connects to `addr` from inside `ns`.
    pub fn open(ns: &NetNs, addr: SocketAddr) -> Result<Self> {
        let s = in_ns(ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })?
        .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn { s })
    }

    /// Sends `msg` and returns the backend's answer (`<name> <msg>`).
    pub fn ask(&mut self, msg: &str) -> Result<String> {
        self.s.write_all(msg.as_bytes())?;
        let mut buf = [0u8; 512];
        let n = self.s.read(&mut buf).context("reading answer")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Local port (distinguishes flows).
    pub fn local(&self) -> Result<SocketAddr> {
        Ok(self.s.local_addr()?)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
}

/// Whether a TCP connection from `ns` to `addr` is set up within `within`. Panics if the
/// namespace cannot be entered: that is no answer to "does it connect".
pub fn connects(ns: &NetNs, addr: SocketAddr, within: Duration) -> bool {
    in_ns(ns, move || TcpStream::connect_timeout(&addr, within))
        .expect("entering the namespace")
        .is_ok()
}
