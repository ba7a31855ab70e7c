//! The XDP L4 path end to end: real TCP connections from a client namespace to a VIP, balanced
//! by the program attached to every link of the node namespace, to backend namespaces.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use ingress::{
    apply::maps::{L4Applier, SnatSettings},
    maps::{
        loader::{Datapath, LoaderOptions},
        neigh,
        writer::AyaMapWriter,
    },
    snapshot::{L4Protocol, L4Service, ObjectRef},
};
use ingress_common::counters::Stat;
use tests::{
    fixtures::Fixture,
    netns::{in_ns, NsGuard},
    topology::{backend_ip, connects, Conn, FarClient, Server, Topology, FAR_CLIENT, SNAT},
};

/// The node's IPv6 SNAT address (the IPv6 test adds it to the node's loopback).
const SNAT_V6: &str = "2001:2:ff::1";

fn service(backends: &[usize]) -> L4Service {
    L4Service {
        origin: ObjectRef::default(),
        vip: "198.19.0.10".parse().unwrap(),
        port: 80,
        protocol: L4Protocol::Tcp,
        backends: backends
            .iter()
            .map(|k| format!("{}:8080", backend_ip(*k)).parse().unwrap())
            .collect(),
    }
}

fn backend_of(answer: &str) -> String {
    answer
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The node of a topology running the XDP program on all its links for `services`; the
/// calling thread stays inside its namespace until this drops (fields drop in order).
struct Node {
    applier: L4Applier<AyaMapWriter>,
    dp: Datapath,
    _inside: NsGuard,
}

impl Node {
    fn start(topo: &Topology, services: &[L4Service], neighbours: &[&str]) -> Node {
        Node::start_pinned(topo, services, neighbours, None)
    }

    /// The same, with the maps pinned under `pin_dir` (for `ingressd inspect`).
    fn start_pinned(
        topo: &Topology,
        services: &[L4Service],
        neighbours: &[&str],
        pin_dir: Option<std::path::PathBuf>,
    ) -> Node {
        let inside = topo.node.enter().unwrap();
        let mut dp = Datapath::load(&LoaderOptions {
            pin_dir,
            max_vips: 4,
            conntrack_entries: 4096,
            kernel_log: false,
        })
        .unwrap();
        for link in &topo.node_links {
            dp.attach(link, false).unwrap();
        }
        let snat = SnatSettings {
            v4: Some(SNAT.parse().unwrap()),
            // Used only by the IPv6 test, which gives the node this address.
            v6: Some(SNAT_V6.parse().unwrap()),
            port_min: 20000,
            port_max: 29999,
            timeouts: Default::default(),
        };
        let mut applier = L4Applier::new(dp.map_writer().unwrap(), snat).unwrap();
        applier.apply(services).unwrap();
        neigh::keep_resolved(neighbours.iter().map(|n| n.parse().unwrap()));
        Node {
            applier,
            dp,
            _inside: inside,
        }
    }
}

#[test]
fn tcp_through_the_vip_is_balanced_and_established_flows_survive_backend_removal() {
    let topo = Topology::new(2).expect("topology (needs root, netns, ethtool)");
    let _s1 = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    let _s2 = Server::start(&topo.backends[1], "b2", 8080).unwrap();

    let mut node = Node::start(
        &topo,
        &[service(&[1, 2])],
        &[&backend_ip(1), &backend_ip(2)],
    );
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();

    // Many flows: every one answered, both backends used.
    let mut seen = BTreeMap::new();
    for i in 0..40 {
        let mut c = Conn::open(&topo.client, vip).unwrap();
        let answer = c.ask(&format!("hello {i}")).unwrap();
        assert!(answer.ends_with(&format!("hello {i}")), "{answer}");
        *seen.entry(backend_of(&answer)).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        vec!["b1", "b2"],
        "{seen:?}"
    );

    // An established flow to the backend about to be removed.
    let mut kept = Conn::open(&topo.client, vip).unwrap();
    let victim = backend_of(&kept.ask("first").unwrap());
    let remaining = if victim == "b1" { 2 } else { 1 };
    node.applier.apply(&[service(&[remaining])]).unwrap();

    let answer = kept.ask("second").unwrap();
    assert_eq!(
        backend_of(&answer),
        victim,
        "established flow must stay on its backend"
    );
    for i in 0..20 {
        let mut c = Conn::open(&topo.client, vip).unwrap();
        let answer = c.ask(&format!("after {i}")).unwrap();
        assert_ne!(
            backend_of(&answer),
            victim,
            "new flows must avoid the removed backend"
        );
    }
    assert_eq!(backend_of(&kept.ask("third").unwrap()), victim);

    // The kernel did the work: the VIP is not routable in the node's stack.
    let c = node.dp.counters().unwrap();
    let get = |s| c.stat(s).unwrap().packets;
    assert!(
        get(Stat::FwdNewFlow) >= 61,
        "new flows: {}",
        get(Stat::FwdNewFlow)
    );
    assert!(get(Stat::FwdConntrack) > 0 && get(Stat::FwdReply) > 0);
    assert_eq!(
        get(Stat::DropMalformed) + get(Stat::DropNatExhausted) + get(Stat::DropMapError),
        0
    );
    drop(kept);
    drop(node);
    std::thread::sleep(Duration::from_millis(10));
}

/// A UDP echo server in `ns` answering every datagram with `name` and what it got, until
/// the returned flag is set (checked every 100 ms).
fn udp_echo(
    ns: &tests::netns::NetNs,
    name: &'static str,
    port: u16,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};
    let stop = Arc::new(AtomicBool::new(false));
    let sock = in_ns(ns, move || std::net::UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let mut answer = format!("{name} ").into_bytes();
                answer.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&answer, peer);
            }
        }
    });
    stop
}

/// A pin directory, removed on drop.
struct Pins(String);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A UDP client that keeps sending from one port stays with its backend while that backend
/// stays in the VIP (as a TCP connection does), but moves to another one within a few
/// seconds once its backend leaves: without that, a resolver or log shipper sending from a
/// fixed port would go on sending to a pod that is gone for as long as it sends, since each
/// datagram refreshes its flow. kube-proxy clears such UDP conntrack entries for the same
/// reason. A backend added back is not left again by its new flows.
#[test]
fn a_udp_flow_moves_when_its_backend_leaves_the_vip() {
    let topo = Topology::new(2).expect("topology (needs root, netns, ethtool)");
    let stops = [
        udp_echo(&topo.backends[0], "b1", 5353),
        udp_echo(&topo.backends[1], "b2", 5353),
    ];
    let udp = |backends: &[usize]| L4Service {
        protocol: L4Protocol::Udp,
        port: 53,
        backends: backends
            .iter()
            .map(|k| format!("{}:5353", backend_ip(*k)).parse().unwrap())
            .collect(),
        ..service(&[])
    };
    let pins = Pins(format!(
        "/sys/fs/bpf/{}",
        tests::netns::owned("udpmove", "pins")
    ));
    let mut node = Node::start_pinned(
        &topo,
        &[udp(&[1, 2])],
        &[&backend_ip(1), &backend_ip(2)],
        Some(pins.0.clone().into()),
    );
    let client = udp_client(&topo.client, "198.19.0.10:53", Duration::from_millis(300));
    let ask = |what: &str| -> Option<String> {
        let mut buf = [0u8; 512];
        client.send(what.as_bytes()).ok()?;
        let n = client.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let first = ask("first").expect("the flow is answered");
    let victim = backend_of(&first);
    // Pinned across the hop checks (one every second or so) while its backend stays.
    for i in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        let answer = ask(&format!("steady {i}"));
        assert_eq!(answer.as_deref().map(backend_of), Some(victim.clone()));
    }
    let (gone, other) = if victim == "b1" { (1, 2) } else { (2, 1) };
    node.applier.apply(&[udp(&[other])]).unwrap();
    // The backend is still up (as a terminating pod may be): only the move shows.
    let started = std::time::Instant::now();
    let mut moved_after = None;
    while started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(a) = ask("after") {
            if backend_of(&a) != victim {
                moved_after = Some(started.elapsed());
                break;
            }
        }
    }
    let moved_after = moved_after.expect("the flow stayed with the backend that left");
    assert!(moved_after < Duration::from_secs(4), "{moved_after:?}");
    for i in 0..5 {
        let answer = ask(&format!("moved {i}"));
        assert_eq!(answer.as_deref().map(backend_of), Some(format!("b{other}")));
    }
    let c = node.dp.counters().unwrap();
    assert_eq!(c.stat(Stat::FlowBackendGone).unwrap().packets, 1);
    // `ingressd inspect` lists the departure from the pinned maps.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingressd_under_test"))
        .args(["inspect", "--pin-dir", &pins.0])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let gone_line = format!("198.19.0.10:53/udp  -x {}:5353", backend_ip(gone));
    assert!(
        report.contains("endpoints gone from UDP VIPs (their flows move): 1")
            && report.contains(&gone_line),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The backend comes back: a flow Maglev gives it stays there past several checks.
    node.applier.apply(&[udp(&[1, 2])]).unwrap();
    let mut to_returned = None;
    for _ in 0..40 {
        let sock = udp_client(&topo.client, "198.19.0.10:53", Duration::from_millis(300));
        let mut buf = [0u8; 512];
        sock.send(b"hello").unwrap();
        let n = sock.recv(&mut buf).unwrap();
        if backend_of(&String::from_utf8_lossy(&buf[..n])) == format!("b{gone}") {
            to_returned = Some(sock);
            break;
        }
    }
    let sock = to_returned.expect("no new flow went to the returned backend");
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        let mut buf = [0u8; 512];
        sock.send(b"again").unwrap();
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(
            backend_of(&String::from_utf8_lossy(&buf[..n])),
            format!("b{gone}")
        );
    }
    let c = node.dp.counters().unwrap();
    assert_eq!(c.stat(Stat::FlowBackendGone).unwrap().packets, 1);
    for s in stops {
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    drop(node);
}

/// An L4 service left with no endpoint, or removed, refuses new connections at once: its
/// packets pass to the node's stack, which answers a SYN with a reset and a datagram with a
/// port unreachable, as for a port ingress-nginx does not listen on (a drop would leave the
/// client waiting out its timeout). Established flows go on, as ingress-nginx's old workers
/// finish theirs.
#[test]
fn a_vip_without_endpoints_refuses_new_connections_and_keeps_open_ones() {
    use std::net::TcpStream;
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _s1 = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    // The VIP is the node's own address, as `--l4-address=$(NODE_IP)` makes it.
    topo.node.run("ip addr add 198.19.0.10/32 dev lo").unwrap();
    let udp = |backends: Vec<SocketAddr>| L4Service {
        protocol: L4Protocol::Udp,
        port: 54,
        backends,
        ..service(&[])
    };
    let mut node = Node::start(&topo, &[service(&[1])], &[&backend_ip(1)]);
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let mut kept = Conn::open(&topo.client, vip).unwrap();
    assert_eq!(backend_of(&kept.ask("first").unwrap()), "b1");

    let udp_backend = format!("{}:54", backend_ip(1)).parse().unwrap();
    let cases = [
        ("no endpoint", vec![service(&[]), udp(vec![])]),
        ("removed", vec![]),
    ];
    for (what, services) in cases {
        node.applier.apply(&services).unwrap();
        let started = std::time::Instant::now();
        let tried = in_ns(&topo.client, move || {
            TcpStream::connect_timeout(&vip, Duration::from_secs(3))
        })
        .unwrap();
        match tried {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => panic!("{what}: {other:?} after {:?}", started.elapsed()),
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{what}");
        assert_eq!(
            backend_of(&kept.ask(what).unwrap()),
            "b1",
            "{what}: the established flow was cut"
        );
    }
    // UDP: first served by the kernel path (the backend's own kernel refuses port 54, so
    // the answer is the same; what counts is that the VIP without endpoints answers too).
    node.applier
        .apply(&[service(&[1]), udp(vec![udp_backend])])
        .unwrap();
    node.applier.apply(&[service(&[1]), udp(vec![])]).unwrap();
    let client = udp_client(&topo.client, "198.19.0.10:54", Duration::from_secs(1));
    assert!(
        refused_after_sending(&client, 3),
        "a datagram to a UDP VIP without endpoints went unanswered"
    );
    // With an endpoint again, new connections are served.
    assert!(connects(&topo.client, vip, Duration::from_secs(3)));
    assert_eq!(backend_of(&kept.ask("last").unwrap()), "b1");
    let c = node.dp.counters().unwrap();
    assert_eq!(c.stat(Stat::DropNoBackend).unwrap().packets, 0);
    drop(kept);
    drop(node);
}

/// A process on the node (or a pod of it) connecting to a VIP on the node's own address never
/// crosses the XDP interfaces: the stack gets its SYN and, with no socket there, refuses it.
/// ingressd listens on such VIPs for them and copies to the same endpoints, while remote
/// clients still go through the kernel path.
#[test]
fn clients_on_the_node_reach_a_tcp_vip_on_its_own_address() {
    use ingress::apply::local_l4::LocalL4;
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _s1 = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    topo.node.run("ip addr add 198.19.0.10/32 dev lo").unwrap();
    let node = Node::start(&topo, &[service(&[1])], &[&backend_ip(1)]);
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let remote = || {
        backend_of(
            &Conn::open(&topo.client, vip)
                .unwrap()
                .ask("remote")
                .unwrap(),
        )
    };
    let count = |n: &Node, s: Stat| n.dp.counters().unwrap().stat(s).unwrap().packets;
    // The gap: the kernel path alone serves remote clients only.
    assert_eq!(remote(), "b1");
    let refused = in_ns(&topo.node, move || {
        std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(2))
    })
    .unwrap();
    assert!(refused.is_err(), "served without a listener? {refused:?}");
    // Built inside the node's namespace (this thread is in it), so its threads connect
    // from there.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ifindexes = topo
        .node_links
        .iter()
        .filter_map(|l| ingress::maps::local_addrs::ifindex(l))
        .collect();
    let mut local = LocalL4::new(rt.handle().clone()).with_xdp_interfaces(ifindexes);
    local.apply(&[service(&[1])]);
    assert_eq!(local.serving(), [(vip, L4Protocol::Tcp)].into());
    let before = count(&node, Stat::FwdNewFlow);
    for i in 0..3 {
        let mut c = Conn::open(&topo.node, vip).unwrap();
        let answer = c.ask(&format!("local {i}")).unwrap();
        assert!(
            answer.starts_with("b1") && answer.ends_with(&format!("local {i}")),
            "{answer}"
        );
    }
    assert_eq!(
        count(&node, Stat::FwdNewFlow),
        before,
        "local clients went through XDP?"
    );
    // Remote clients still take the kernel path, listener or not.
    assert_eq!(remote(), "b1");
    assert_eq!(count(&node, Stat::FwdNewFlow), before + 1);
    // What XDP hands a remote client's flow to the stack for (here TTL 1, which it leaves
    // to the stack to answer) is not served by the listener, past the edge checks.
    let ttl_one = in_ns(&topo.client, move || -> std::io::Result<()> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_ttl_v4(1)?;
        s.connect_timeout(&vip.into(), Duration::from_secs(2))
    })
    .unwrap();
    assert!(ttl_one.is_err(), "a remote TTL-1 connection was served");
    assert!(
        count(&node, Stat::PassTtl) >= 1,
        "the SYN never went to the stack"
    );
    drop(local);
    drop(rt);
    drop(node);
}

/// A UDP socket in `ns` connected to `to`, its reads bounded by `timeout`.
fn udp_client(ns: &tests::netns::NetNs, to: &str, timeout: Duration) -> std::net::UdpSocket {
    let sock = in_ns(ns, || std::net::UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    sock.connect(to).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock
}

/// Sends on `sock` until a receive fails with "connection refused" (the kernel's report of an
/// ICMP port unreachable on a connected UDP socket); at most `tries` sends, 1 s apart.
fn refused_after_sending(sock: &std::net::UdpSocket, tries: usize) -> bool {
    let mut buf = [0u8; 64];
    for _ in 0..tries {
        if sock.send(b"anyone?").is_err() {
            return true;
        }
        if let Err(e) = sock.recv(&mut buf) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
    }
    false
}

/// ICMP errors about NATed flows reach the socket that must hear them, through real kernels.
/// The stack of the node has no socket for a NATed flow, so without the ICMP program both
/// errors below would die there and both sockets would wait in vain.
#[test]
fn icmp_errors_reach_both_ends_of_a_natted_udp_flow() {
    use std::net::UdpSocket;
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let udp = |port: u16| L4Service {
        origin: ObjectRef::default(),
        vip: "198.19.0.10".parse().unwrap(),
        port,
        protocol: L4Protocol::Udp,
        backends: vec![format!("{}:{port}", backend_ip(1)).parse().unwrap()],
    };
    // Port 53 has a server on the backend, port 54 nothing.
    let node = Node::start(&topo, &[udp(53), udp(54)], &[&backend_ip(1)]);
    let wait = Some(Duration::from_secs(1));

    // The backend's kernel answers "port unreachable" to the SNAT address, about the
    // datagram we sent it: the client must hear it about the datagram it sent the VIP.
    let client = udp_client(&topo.client, "198.19.0.10:54", Duration::from_secs(1));
    assert!(
        refused_after_sending(&client, 3),
        "the client never heard of the closed backend port"
    );

    // A reply to a client port closed meanwhile: the client's kernel answers to the VIP,
    // and the backend must hear it about the datagram it sent to the SNAT address.
    let server = in_ns(&topo.backends[0], || UdpSocket::bind("0.0.0.0:53"))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let client = udp_client(&topo.client, "198.19.0.10:53", Duration::from_secs(5));
    client.send(b"ping").unwrap();
    let mut buf = [0u8; 64];
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(
        peer.ip().to_string(),
        SNAT,
        "the backend sees the SNAT address"
    );
    server.connect(peer).unwrap();
    server.send(b"pong").unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    drop(client);
    server.set_read_timeout(wait).unwrap();
    assert!(
        refused_after_sending(&server, 3),
        "the backend never heard of the closed client port"
    );

    let c = node.dp.counters().unwrap();
    let get = |s| c.stat(s).unwrap().packets;
    assert!(
        get(Stat::FwdIcmp) >= 2,
        "translated ICMP errors: {}",
        get(Stat::FwdIcmp)
    );
    assert_eq!(get(Stat::DropMalformed), 0);
    drop(node);
    std::thread::sleep(Duration::from_millis(10));
}

/// Path MTU discovery through the balancer, with real TCP stacks: a router between the node and
/// the client has a narrower link towards the client than the client's own, so the backend's
/// full-size segments (sized for the client's MSS) are too big there. The router tells the
/// sender, which for it is the VIP; the node translates that to the backend, which shrinks its
/// segments and the download completes. Without the translation the backend never learns and
/// the download stalls (a PMTU black hole).
#[test]
fn path_mtu_discovery_works_through_the_vip() {
    use std::io::{Read, Write};
    const BYTES: usize = 256 * 1024;
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let far = FarClient::behind(&topo, 1280).unwrap();
    let listener = in_ns(&topo.backends[0], || {
        std::net::TcpListener::bind("0.0.0.0:8080")
    })
    .unwrap()
    .unwrap();
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&vec![b'x'; BYTES]);
        }
    });

    let node = Node::start(&topo, &[service(&[1])], &[&backend_ip(1), "198.18.0.2"]);

    let got = in_ns(&far.ns, || -> std::io::Result<usize> {
        let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
        let mut s = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        Ok(body.len())
    })
    .unwrap();
    let c = node.dp.counters().unwrap();
    let icmp = c.stat(Stat::FwdIcmp).unwrap().packets;
    assert_eq!(
        got.ok(),
        Some(BYTES),
        "download from {FAR_CLIENT} stalled ({icmp} ICMP errors translated)"
    );
    assert!(icmp >= 1, "the backend learnt the path MTU some other way");
    let _ = server.join();
    drop(node);
    drop(far);
    std::thread::sleep(Duration::from_millis(10));
}

/// An XDP program passing everything on the client's end of its link: veth hands the frames
/// XDP sends back out of a link (XDP_TX) only to a peer running an XDP program of its own (a
/// quirk of veth, not of NICs). Detached when dropped.
fn pass_everything_at_the_client(topo: &Topology) -> Fixture {
    let _in_client = topo.client.enter().unwrap();
    let mut pass = Fixture::load("xdp_pass").unwrap();
    pass.attach("eth0").unwrap();
    pass
}

/// Sends without DF from `sock` (IP_PMTUDISC_DONT), as many UDP servers do.
fn allow_fragments(sock: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let off: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: setsockopt on a live socket with a c_int of the size given.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_MTU_DISCOVER");
}

/// The node's own link to a backend is narrower than the client's path so far: a datagram
/// that fits every link up to the node does not fit the last one, and XDP can neither
/// fragment it nor let the device drop it unseen. The client's kernel must get "fragmentation
/// needed" from the VIP, lower its path MTU to the VIP, and report EMSGSIZE on its socket.
/// A reply without DF too big for the link to the client goes to the kernel to be fragmented.
#[test]
fn the_client_learns_the_mtu_of_the_nodes_link_to_the_backend_and_replies_are_fragmented() {
    use std::net::UdpSocket;
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    topo.node.run("ip link set nb1 mtu 1280").unwrap();
    let _pass = pass_everything_at_the_client(&topo);
    let server = in_ns(&topo.backends[0], || UdpSocket::bind("0.0.0.0:53"))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let dns = L4Service {
        origin: ObjectRef::default(),
        vip: "198.19.0.10".parse().unwrap(),
        port: 53,
        protocol: L4Protocol::Udp,
        backends: vec![format!("{}:53", backend_ip(1)).parse().unwrap()],
    };
    let node = Node::start(&topo, &[dns], &[&backend_ip(1)]);

    let client = udp_client(&topo.client, "198.19.0.10:53", Duration::from_secs(1));
    // A small datagram goes through.
    client.send(b"small").unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"small");
    // 1400 bytes of UDP: 1428 on the wire, DF set (Linux's default for UDP until it knows
    // the path MTU).
    let mut refused = None;
    for _ in 0..3 {
        match client
            .send(&[b'x'; 1400])
            .and_then(|_| client.recv(&mut buf))
        {
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                refused = Some(e);
                break;
            }
            _ => {}
        }
    }
    assert!(
        refused.is_some(),
        "the client never heard its datagram was too big"
    );
    let route = topo.client.run("ip route get 198.19.0.10").unwrap();
    assert!(
        route.contains("mtu 1280"),
        "client's path MTU to the VIP: {route}"
    );
    assert!(
        server.recv_from(&mut buf).is_err(),
        "the oversized datagram reached the backend"
    );

    // The other way: a reply without DF too big for the node's link to the client. XDP
    // cannot fragment it; the kernel can, and the client gets the whole datagram.
    // (veth also drops what exceeds the MTU of the end that receives it: nb1 gets 1500 back.)
    topo.node.run("ip link set nb1 mtu 1500").unwrap();
    topo.node.run("ip link set nc mtu 1280").unwrap();
    let client = udp_client(&topo.client, "198.19.0.10:53", Duration::from_secs(2));
    client.send(b"ask").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ask");
    allow_fragments(&server);
    server.send_to(&[b'y'; 1400], peer).unwrap();
    let n = client.recv(&mut buf).expect("the fragmented reply");
    assert_eq!(n, 1400);

    let c = node.dp.counters().unwrap();
    assert!(c.stat(Stat::IcmpTooBig).unwrap().packets >= 1);
    assert!(c.stat(Stat::PassTooBig).unwrap().packets >= 1);
    drop(node);
    std::thread::sleep(Duration::from_millis(10));
}

/// The same with IPv6 and real kernels: a backend's ICMPv6 "port unreachable" to the SNAT
/// address reaches the client's connected socket as ECONNREFUSED, so the translated error's
/// addresses, ports and pseudo-header checksum are what a Linux stack accepts; and a datagram
/// too big for the node's link to the backend gets the client "packet too big" (its route to
/// the VIP learns the MTU, its socket reports EMSGSIZE).
#[test]
fn icmpv6_errors_and_too_big_reach_the_client_of_a_natted_flow() {
    use std::net::UdpSocket;
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    for (ns, cmds) in [
        (
            &topo.client,
            vec![
                "ip -6 addr add 2001:2::2/64 dev eth0 nodad",
                "ip -6 route add default via 2001:2::1",
            ],
        ),
        (
            &topo.backends[0],
            vec![
                "ip -6 addr add 2001:2:1::2/64 dev eth0 nodad",
                "ip -6 route add default via 2001:2:1::1",
            ],
        ),
        (
            &topo.node,
            vec![
                "sysctl -qw net.ipv6.conf.all.forwarding=1",
                "ip -6 addr add 2001:2::1/64 dev nc nodad",
                "ip -6 addr add 2001:2:1::1/64 dev nb1 nodad",
                "ip -6 addr add 2001:2:ff::1/128 dev lo",
            ],
        ),
    ] {
        for cmd in cmds {
            ns.run(cmd).unwrap();
        }
    }
    let udp6 = L4Service {
        origin: ObjectRef::default(),
        vip: "2001:2:ff::10".parse().unwrap(),
        port: 54,
        protocol: L4Protocol::Udp,
        backends: vec!["[2001:2:1::2]:54".parse().unwrap()],
    };
    let node = Node::start(&topo, &[udp6], &["2001:2:1::2"]);
    let client = in_ns(&topo.client, || UdpSocket::bind("[::]:0"))
        .unwrap()
        .unwrap();
    client.connect("[2001:2:ff::10]:54").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    assert!(
        refused_after_sending(&client, 3),
        "the client never heard of the closed backend port"
    );

    // A 1400-byte datagram (1448 on the wire) for a 1280-byte link.
    let _pass = pass_everything_at_the_client(&topo);
    topo.node.run("ip link set nb1 mtu 1280").unwrap();
    let big = in_ns(&topo.client, || UdpSocket::bind("[::]:0"))
        .unwrap()
        .unwrap();
    big.connect("[2001:2:ff::10]:54").unwrap();
    big.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    let mut too_big = false;
    for _ in 0..3 {
        if let Err(e) = big.send(&[b'x'; 1400]).and_then(|_| big.recv(&mut buf)) {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                too_big = true;
                break;
            }
        }
    }
    assert!(too_big, "the client never heard its datagram was too big");
    let route = topo.client.run("ip -6 route get 2001:2:ff::10").unwrap();
    assert!(
        route.contains("mtu 1280"),
        "client's path MTU to the VIP: {route}"
    );

    let c = node.dp.counters().unwrap();
    assert!(c.stat(Stat::FwdIcmp).unwrap().packets >= 1);
    assert!(c.stat(Stat::IcmpTooBig).unwrap().packets >= 1);
    drop(node);
    std::thread::sleep(Duration::from_millis(10));
}

/// Backends' next hops become kernel-managed neighbour entries, except a static one (an
/// operator's or the CNI's fixed MAC), which stays exactly as it was.
#[test]
fn static_neighbour_entries_are_left_alone() {
    tests::netns::require_privileges().expect("privileged test");
    let ns = tests::netns::NetNs::new("nb").expect("namespace");
    for cmd in [
        "ip link add v0 type veth peer name v1",
        "ip addr add 198.18.9.1/24 dev v0",
        "ip link set v0 up",
        "ip link set v1 up",
        "ip neigh add 198.18.9.2 lladdr 02:00:00:00:00:07 dev v0 nud permanent",
    ] {
        ns.run(cmd).expect(cmd);
    }
    let guard = ns.enter().expect("enter namespace");
    neigh::keep_resolved(["198.18.9.2".parse().unwrap(), "198.18.9.3".parse().unwrap()]);
    drop(guard);
    let fixed = ns.run("ip neigh show 198.18.9.2 dev v0").expect("ip neigh");
    assert!(
        fixed.contains("lladdr 02:00:00:00:00:07") && fixed.contains("PERMANENT"),
        "static entry changed: {fixed}"
    );
    let managed = ns.run("ip neigh show 198.18.9.3 dev v0").expect("ip neigh");
    assert!(managed.contains("managed"), "{managed}");
}

/// Edge protection on real connections: a blocked client reaches neither a VIP nor the
/// node's own listener, and a client opening connections faster than its SYN rate has the
/// excess dropped while its open connections go on.
#[test]
fn blocked_clients_and_syn_bursts_are_stopped_before_the_stack() {
    use ingress::apply::edge::{EdgeApplier, EdgeSettings, SynRate};

    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _backend = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    // A listener of the node's own stack, in the place of ingressd's HTTPS port.
    let _listener = Server::start(&topo.node, "node", 8443).unwrap();
    let mut node = Node::start(&topo, &[service(&[1])], &[&backend_ip(1)]);
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let listener: SocketAddr = "198.18.0.1:8443".parse().unwrap();
    for addr in [vip, listener] {
        let answer = Conn::open(&topo.client, addr)
            .unwrap()
            .ask("before")
            .unwrap();
        assert!(answer.ends_with("before"), "{answer}");
    }

    let settings = |syn_rate| EdgeSettings {
        syn_rate,
        listeners: vec![listener],
    };
    let mut edge = EdgeApplier::new(node.dp.edge_writer().unwrap(), settings(None)).unwrap();
    let block: Vec<ipnet::IpNet> = vec!["198.18.0.0/30".parse().unwrap()];
    edge.apply(&node.applier.vip_ids(), &block).unwrap();
    for addr in [vip, listener] {
        assert!(
            !connects(&topo.client, addr, Duration::from_millis(500)),
            "blocked client connected to {addr}"
        );
    }
    let counters = node.dp.counters().unwrap();
    let blocked = counters.stat(Stat::DropBlocked).unwrap().packets;
    assert!(blocked >= 2, "drop_blocked {blocked}");

    // Unblocked, with two new connections a second allowed.
    let mut edge = EdgeApplier::new(
        edge.into_writer(),
        settings(Some(SynRate {
            per_second: 1,
            burst: 2,
        })),
    )
    .unwrap();
    edge.apply(&node.applier.vip_ids(), &[]).unwrap();
    let mut first = Conn::open(&topo.client, listener).unwrap();
    let mut second = Conn::open(&topo.client, vip).unwrap();
    assert!(
        !connects(&topo.client, listener, Duration::from_millis(300)),
        "a third connection within the burst's second was let through"
    );
    assert!(first.ask("still").unwrap().ends_with("still"));
    assert!(second.ask("still").unwrap().ends_with("still"));
    let limited = counters.stat(Stat::DropSynRate).unwrap().packets;
    assert!(limited >= 1, "drop_syn_rate {limited}");
    // A second later the client may connect again.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(connects(&topo.client, listener, Duration::from_secs(2)));
    drop((first, second));
    drop(node);
}
