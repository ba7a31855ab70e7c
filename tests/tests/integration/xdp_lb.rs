//! The XDP L4 load balancer on synthetic packets through `BPF_PROG_TEST_RUN`, with real route
//! and neighbour lookups inside a namespace the test creates.
use std::{net::IpAddr, time::Duration};

use ingress::apply::maps::FlowTimeouts;
use ingress_common::{
    conntrack::{is_live, Bucket, FlowKey, FlowNat, ReplyNat, TAG_GONE, WAYS},
    counters::Stat,
};
use tests::{
    packet::{icmp_error, parse, parse_icmp, Spec, ACK, SYN},
    xdp::{
        lab_services, mac_backend, XdpLab, MAC_A, MAC_B, MAC_CLIENT, MAC_ONE_ARMED, SNAT_V4,
        SNAT_V6,
    },
};

const PASS: u32 = 2;
const DROP: u32 = 1;
const TX: u32 = 3;
const REDIRECT: u32 = 4;

fn lab() -> XdpLab {
    XdpLab::new(&lab_services(), 16, 4096).expect("XDP lab (needs root, BPF and netns)")
}

/// Counter deltas around one run.
struct Stats<'a> {
    lab: &'a XdpLab,
    before: Vec<(Stat, u64)>,
}

impl<'a> Stats<'a> {
    fn snap(lab: &'a XdpLab) -> Self {
        let c = lab.datapath.counters().unwrap();
        Stats {
            lab,
            before: c
                .stats()
                .unwrap()
                .into_iter()
                .map(|(s, c)| (s, c.packets))
                .collect(),
        }
    }
    fn changed(&self) -> Vec<Stat> {
        let c = self.lab.datapath.counters().unwrap();
        let now = c.stats().unwrap();
        now.iter()
            .zip(&self.before)
            .filter(|((_, n), (_, b))| n.packets != *b)
            .map(|((s, _), _)| *s)
            .collect()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn new_flow_conntrack_hit_and_reply_round_trip() {
    let lab = lab();
    let syn = Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 80, SYN);
    let stats = Stats::snap(&lab);
    let (verdict, out) = lab.run(&syn.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert_eq!(stats.changed(), vec![Stat::FwdNewFlow, Stat::Redirect]);
    let fwd = parse(&out).unwrap();
    assert!(
        fwd.ip_csum_ok && fwd.l4_csum_ok,
        "checksums must verify after NAT: {fwd:?}"
    );
    assert_eq!(fwd.src, ip(SNAT_V4));
    assert!(
        fwd.dst == ip("198.18.1.2") || fwd.dst == ip("198.18.1.3"),
        "{fwd:?}"
    );
    assert_eq!(fwd.dport, 8080);
    assert!((20000..=29999).contains(&fwd.sport));
    assert_eq!(fwd.ttl, 63);
    assert_eq!(fwd.src_mac, MAC_B);
    let last = match fwd.dst {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(_) => unreachable!(),
    };
    assert_eq!(fwd.dst_mac, mac_backend(last));
    assert_eq!(fwd.payload, syn.payload);

    // A retransmitted SYN starts the flow again (conntrack is skipped for SYNs) and lands on
    // the same backend with the same SNAT port.
    let (verdict, again) = lab.run(&syn.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert_eq!(again, out, "retransmitted SYN translated differently");

    // The next packet of the flow hits conntrack and goes the same way.
    let ack = Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 80, ACK);
    let stats = Stats::snap(&lab);
    let (verdict, out2) = lab.run(&ack.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert_eq!(stats.changed(), vec![Stat::FwdConntrack, Stat::Redirect]);
    let fwd2 = parse(&out2).unwrap();
    assert_eq!(
        (fwd2.dst, fwd2.sport, fwd2.dport),
        (fwd.dst, fwd.sport, fwd.dport)
    );
    assert!(fwd2.l4_csum_ok);

    // The backend's reply is translated back to VIP -> client.
    let reply = Spec {
        src_mac: mac_backend(last),
        dst_mac: MAC_B,
        ..Spec::tcp(&fwd.dst.to_string(), 8080, SNAT_V4, fwd.sport, SYN | ACK)
    };
    let stats = Stats::snap(&lab);
    let (verdict, out3) = lab.run(&reply.build(), lab.ifindex_b).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert_eq!(stats.changed(), vec![Stat::FwdReply, Stat::Redirect]);
    let back = parse(&out3).unwrap();
    assert!(back.ip_csum_ok && back.l4_csum_ok);
    assert_eq!((back.src, back.sport), (ip("198.19.0.10"), 80));
    assert_eq!((back.dst, back.dport), (ip("198.18.0.2"), 40001));
    assert_eq!((back.src_mac, back.dst_mac), (MAC_A, MAC_CLIENT));

    // Per-VIP counters saw all four packets (two SYNs, the ACK, the reply).
    let key = ingress::apply::maps::vip_key(&lab_services()[0]);
    let id = lab.applier.vip_id(&key).unwrap();
    assert_eq!(lab.datapath.counters().unwrap().vip(id).unwrap().packets, 4);
}

/// Every flow of a node can arrive on one CPU (one receive queue, or RSS that hashes them
/// together): the conntrack tables must still hold their whole capacity. A table split per
/// CPU (as LRU hash maps with `BPF_F_NO_COMMON_LRU` are) would give that CPU capacity /
/// possible CPUs entries and evict live flows long before the table is full.
#[test]
fn one_cpu_can_fill_the_whole_conntrack_table() {
    const FLOWS: u16 = 3000;
    tests::bench::pin_to_cpu(0).unwrap();
    let lab = lab(); // 4096 entries in each table: more than FLOWS, less than FLOWS x 2 CPUs
    let flow = |i: u16, flags| Spec::tcp("198.18.0.2", 10000 + i, "198.19.0.10", 80, flags);
    for i in 0..FLOWS {
        let (verdict, _) = lab.run(&flow(i, SYN).build(), lab.ifindex_a).unwrap();
        assert_eq!(verdict, REDIRECT, "SYN of flow {i}");
    }
    let new_flows = packets(&lab, Stat::FwdNewFlow);
    let hits = packets(&lab, Stat::FwdConntrack);
    for i in 0..FLOWS {
        let (verdict, _) = lab.run(&flow(i, ACK).build(), lab.ifindex_a).unwrap();
        assert_eq!(verdict, REDIRECT, "ACK of flow {i}");
    }
    assert_eq!(
        packets(&lab, Stat::FwdConntrack) - hits,
        u64::from(FLOWS),
        "every established flow must still be in conntrack"
    );
    assert_eq!(
        packets(&lab, Stat::FwdNewFlow),
        new_flows,
        "no flow was started again"
    );
}

/// The next hop is cached in the flow entry (`HOP_TTL_JIFFIES`: 1.02 s at this kernel's
/// HZ=250, at most 2.56 s at HZ=100): a backend that moves to another MAC is reached by its
/// established flows once the cache has aged out, without a new SYN.
#[test]
fn established_flows_follow_a_neighbour_change_after_the_hop_ttl() {
    let lab = lab();
    let syn = Spec::tcp("198.18.0.2", 40003, "198.19.0.10", 80, SYN);
    let (verdict, out) = lab.run(&syn.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    let fwd = parse(&out).unwrap();
    let IpAddr::V4(backend) = fwd.dst else {
        panic!("IPv4 VIP translated to {fwd:?}")
    };
    assert_eq!(fwd.dst_mac, mac_backend(backend.octets()[3]));

    let moved = [0x02, 0, 0, 0, 0x0e, 0x0e];
    lab.ns
        .run(&format!(
            "ip neigh replace {backend} lladdr 02:00:00:00:0e:0e dev xb nud permanent"
        ))
        .unwrap();
    let ack = Spec::tcp("198.18.0.2", 40003, "198.19.0.10", 80, ACK);
    // Poll rather than sleep a fixed TTL: the bound depends on the kernel's HZ.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let seen = loop {
        let (verdict, out) = lab.run(&ack.build(), lab.ifindex_a).unwrap();
        assert_eq!(verdict, REDIRECT);
        let p = parse(&out).unwrap();
        assert_eq!(
            (p.dst, p.sport),
            (fwd.dst, fwd.sport),
            "flow changed backend"
        );
        if p.dst_mac == moved || std::time::Instant::now() > deadline {
            break p.dst_mac;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        seen, moved,
        "established flow still sent to the old MAC after 5 s"
    );
}

#[test]
fn backend_on_the_ingress_link_is_sent_back_with_xdp_tx() {
    let lab = lab();
    let (verdict, out) = lab
        .run(
            &Spec::tcp("198.18.0.2", 40002, "198.19.0.11", 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    assert_eq!(verdict, TX);
    let p = parse(&out).unwrap();
    assert_eq!(
        (p.dst, p.dport, p.dst_mac, p.src_mac),
        (ip("198.18.0.3"), 8080, MAC_ONE_ARMED, MAC_A)
    );
    assert!(p.ip_csum_ok && p.l4_csum_ok);
}

#[test]
fn udp_and_ipv6_are_translated_with_valid_checksums() {
    let lab = lab();
    let (verdict, out) = lab
        .run(
            &Spec::udp("198.18.0.2", 5000, "198.19.0.10", 53).build(),
            lab.ifindex_a,
        )
        .unwrap();
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out).unwrap();
    assert_eq!((p.dst, p.dport, p.proto), (ip("198.18.1.2"), 5353, 17));
    assert!(p.l4_csum_ok && !p.udp_csum_zero);

    // IPv4 UDP without checksum stays without one.
    let spec = Spec {
        udp_no_csum: true,
        ..Spec::udp("198.18.0.2", 5001, "198.19.0.10", 53)
    };
    let (_, out) = lab.run(&spec.build(), lab.ifindex_a).unwrap();
    let p = parse(&out).unwrap();
    assert!(p.udp_csum_zero && p.ip_csum_ok);

    let v6 = Spec::tcp("2001:2::2", 40003, "2001:2:ff::10", 80, SYN);
    let (verdict, out) = lab.run(&v6.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out).unwrap();
    assert_eq!(
        (p.src, p.dst, p.dport, p.ttl),
        (ip(SNAT_V6), ip("2001:2:1::2"), 8080, 63)
    );
    assert!(p.l4_csum_ok);
    let reply = Spec::tcp("2001:2:1::2", 8080, SNAT_V6, p.sport, ACK);
    let (verdict, out) = lab.run(&reply.build(), lab.ifindex_b).unwrap();
    assert_eq!(verdict, REDIRECT);
    let back = parse(&out).unwrap();
    assert_eq!(
        (back.src, back.sport, back.dst, back.dport),
        (ip("2001:2:ff::10"), 80, ip("2001:2::2"), 40003)
    );
    assert!(back.l4_csum_ok);
}

/// Frames the program must leave alone, with the counter that explains why.
/// Replies are looked up only on ports SNAT hands out: the range's last port works, the
/// port just outside it is the node's own traffic.
#[test]
fn replies_are_taken_only_inside_the_snat_port_range() {
    let lab = XdpLab::with_ports(&lab_services(), 16, 4096, (65535, 65535)).unwrap();
    let (verdict, out) = lab
        .run(
            &Spec::tcp("198.18.0.2", 40005, "198.19.0.10", 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    assert_eq!(verdict, REDIRECT);
    let fwd = parse(&out).unwrap();
    assert_eq!(fwd.sport, 65535);
    let reply = |port| Spec::tcp(&fwd.dst.to_string(), 8080, SNAT_V4, port, SYN | ACK).build();
    let stats = Stats::snap(&lab);
    let (verdict, _) = lab.run(&reply(65535), lab.ifindex_b).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert_eq!(stats.changed(), vec![Stat::FwdReply, Stat::Redirect]);
    let stats = Stats::snap(&lab);
    let frame = reply(65534);
    let (verdict, out) = lab.run(&frame, lab.ifindex_b).unwrap();
    assert_eq!((verdict, out), (PASS, frame));
    assert_eq!(stats.changed(), vec![Stat::PassNotOurs]);
}

#[test]
fn traffic_that_is_not_ours_passes_untouched() {
    let lab = lab();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_CLIENT);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let frag = {
        let mut f = Spec::udp("198.18.0.2", 1, "198.19.0.10", 53).build();
        f[14 + 6] = 0x20; // MF set
        f
    };
    let v6_ext = {
        let mut f = Spec::tcp("2001:2::2", 1, "2001:2:ff::10", 80, SYN).build();
        f[14 + 6] = 0; // hop-by-hop options first
        f
    };
    let vlan_other_link = Spec {
        vlan: Some(100),
        ..Spec::tcp("198.18.0.2", 40004, "198.19.0.10", 80, SYN)
    };
    let cases: Vec<(&str, Vec<u8>, Stat)> = vec![
        ("arp", arp, Stat::PassNotIp),
        (
            "non-vip tcp",
            Spec::tcp("198.18.0.2", 1, "198.18.0.1", 22, SYN).build(),
            Stat::PassNotOurs,
        ),
        (
            "vip address, other port",
            Spec::tcp("198.18.0.2", 1, "198.19.0.10", 81, SYN).build(),
            Stat::PassNotOurs,
        ),
        (
            "to snat address, port outside the snat range",
            Spec::tcp("198.18.1.2", 1, SNAT_V4, 22, ACK).build(),
            Stat::PassNotOurs,
        ),
        (
            "to snat address, unknown flow",
            Spec::tcp("198.18.1.2", 8080, SNAT_V4, 20001, ACK).build(),
            Stat::PassNotOurs,
        ),
        ("ipv4 fragment", frag, Stat::PassFragment),
        ("ipv6 extension header", v6_ext, Stat::PassIpv6Ext),
        (
            "ttl 1",
            Spec {
                ttl: 1,
                ..Spec::tcp("198.18.0.2", 1, "198.19.0.10", 80, SYN)
            }
            .build(),
            Stat::PassTtl,
        ),
        (
            "no neighbour for backend",
            Spec::tcp("198.18.0.2", 1, "198.19.0.13", 80, SYN).build(),
            Stat::PassNoNeigh,
        ),
        (
            "vlan, route via another link",
            vlan_other_link.build(),
            Stat::PassVlanEgress,
        ),
    ];
    for (name, frame, stat) in cases {
        let stats = Stats::snap(&lab);
        let (verdict, out) = lab.run(&frame, lab.ifindex_a).unwrap();
        assert_eq!(verdict, PASS, "{name}");
        assert_eq!(out, frame, "{name}: a passed frame must be unchanged");
        assert_eq!(stats.changed(), vec![stat], "{name}");
    }
}

/// A tagged frame whose route leaves by the device it came in on goes out untagged: that
/// device is the untagged network (a VLAN's traffic is routed through its VLAN device),
/// so keeping the tag would put the packet on the wrong VLAN.
#[test]
fn vlan_tagged_flow_routed_to_the_untagged_link_leaves_untagged() {
    let lab = lab();
    let spec = Spec {
        vlan: Some(42),
        ..Spec::tcp("198.18.0.2", 40005, "198.19.0.11", 80, SYN)
    };
    let frame = spec.build();
    let (verdict, out) = lab.run(&frame, lab.ifindex_a).unwrap();
    assert_eq!(verdict, TX);
    assert_eq!(out.len(), frame.len() - 4);
    let p = parse(&out).unwrap();
    assert_eq!(p.vlan, None);
    assert_eq!((p.dst, p.dport), (ip("198.18.0.3"), 8080));
    assert!(p.ip_csum_ok && p.l4_csum_ok);
    // Its reply is translated back and leaves untagged the same way.
    let reply = Spec {
        vlan: Some(42),
        ..Spec::tcp("198.18.0.3", 8080, SNAT_V4, p.sport, SYN | ACK)
    };
    let (verdict, out) = lab.run(&reply.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, TX);
    let r = parse(&out).unwrap();
    assert_eq!(r.vlan, None);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip("198.19.0.11"), 80, ip("198.18.0.2"), 40005)
    );
    assert!(r.ip_csum_ok && r.l4_csum_ok);
}

#[test]
fn vip_without_backends_drops_and_counts() {
    let lab = lab();
    let stats = Stats::snap(&lab);
    let (verdict, _) = lab
        .run(
            &Spec::tcp("198.18.0.2", 1, "198.19.0.12", 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    assert_eq!(verdict, DROP);
    assert_eq!(stats.changed(), vec![Stat::DropNoBackend]);
}

/// A frame to a VIP cut at every byte: the verdict is always safe (pass before the
/// destination is known, drop once it is known to be a VIP), never a rewrite or a crash.
#[test]
fn truncated_frames_at_every_boundary() {
    let lab = lab();
    for spec in [
        Spec::tcp("198.18.0.2", 40006, "198.19.0.10", 80, SYN),
        Spec::udp("198.18.0.2", 40006, "198.19.0.10", 53),
        Spec::tcp("2001:2::2", 40006, "2001:2:ff::10", 80, SYN),
        Spec {
            vlan: Some(5),
            ..Spec::tcp("198.18.0.2", 40006, "198.19.0.10", 80, SYN)
        },
    ] {
        let full = spec.build();
        let l3 = if spec.vlan.is_some() { 18 } else { 14 };
        let dst_end = l3 + if spec.src.is_ipv4() { 20 } else { 40 };
        for cut in 0..full.len() {
            let frame = &full[..cut];
            let res = lab.run(frame, lab.ifindex_a);
            if cut < 14 {
                // The kernel refuses test frames shorter than an Ethernet header.
                assert!(
                    res.is_err(),
                    "cut {cut}: expected EINVAL from BPF_PROG_TEST_RUN"
                );
                continue;
            }
            let (verdict, out) = res.unwrap();
            assert_eq!(
                out, frame,
                "cut {cut}: truncated frames are never rewritten"
            );
            // Once the whole IP header is there the destination is known to be a VIP.
            let expect = if cut >= dst_end { DROP } else { PASS };
            assert_eq!(verdict, expect, "{spec:?} cut at {cut}");
        }
    }
}

#[test]
fn inconsistent_headers_to_a_vip_are_dropped() {
    let lab = lab();
    let base = Spec::tcp("198.18.0.2", 40007, "198.19.0.10", 80, SYN).build();
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ihl < 5", mutate(&|v| v[14] = 0x44)),
        ("version 5", mutate(&|v| v[14] = 0x55)),
        (
            "total length beyond frame",
            mutate(&|v| v[16..18].copy_from_slice(&2000u16.to_be_bytes())),
        ),
        (
            "total length inside header",
            mutate(&|v| v[16..18].copy_from_slice(&10u16.to_be_bytes())),
        ),
        ("tcp data offset < 5", mutate(&|v| v[14 + 20 + 12] = 0x40)),
        (
            "tcp data offset beyond segment",
            mutate(&|v| v[14 + 20 + 12] = 0xf0),
        ),
    ];
    for (name, frame) in cases {
        let stats = Stats::snap(&lab);
        let (verdict, out) = lab.run(&frame, lab.ifindex_a).unwrap();
        assert_eq!(verdict, DROP, "{name}");
        assert_eq!(out, frame, "{name}");
        assert_eq!(stats.changed(), vec![Stat::DropMalformed], "{name}");
    }
}

/// Random bytes behind a plausible Ethernet/IPv4 header to a VIP: every verdict is safe and
/// the program never rewrites what it cannot parse.
#[test]
fn garbage_never_crashes_or_corrupts() {
    let lab = lab();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = Spec::tcp("198.18.0.2", 40008, "198.19.0.10", 80, SYN).build();
    for i in 0..2000 {
        let mut frame = base.clone();
        let len = 14 + (next() % 120) as usize;
        frame.resize(len, 0);
        // Keep the destination most of the time so the VIP paths are exercised.
        for b in frame.iter_mut().skip(14) {
            *b = next() as u8;
        }
        if i % 2 == 0 && len >= 34 {
            frame[14] = 0x45;
            frame[14 + 9] = 6;
            frame[30..34].copy_from_slice(&[198, 19, 0, 10]);
        }
        let (verdict, out) = lab.run(&frame, lab.ifindex_a).unwrap();
        assert!(
            matches!(verdict, PASS | DROP | TX | REDIRECT),
            "verdict {verdict}"
        );
        if verdict == PASS || verdict == DROP {
            assert_eq!(out, frame);
        } else {
            let p = parse(&out).expect("a forwarded frame parses");
            assert!(
                p.ip_csum_ok,
                "forwarded garbage must still carry a valid IP checksum"
            );
        }
    }
}

fn packets(lab: &XdpLab, stat: Stat) -> u64 {
    let c = lab.datapath.counters().unwrap().stats().unwrap();
    c.into_iter().find(|(s, _)| *s == stat).unwrap().1.packets
}

const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// Timeouts short enough to wait for; the established one long enough never to fire.
fn short_timeouts(tcp_close: u64, tcp_time_wait: u64, udp: u64) -> FlowTimeouts {
    FlowTimeouts {
        tcp_established: Duration::from_secs(3600),
        tcp_time_wait: Duration::from_secs(tcp_time_wait),
        tcp_close: Duration::from_secs(tcp_close),
        udp: Duration::from_secs(udp),
        unreplied: Duration::from_secs(30),
    }
}

/// A flow the backend never answered (a SYN flood, one-way datagrams) holds its SNAT port
/// only for the unreplied timeout, not the established one; once a reply came back through
/// it, the flow keeps its port as before. One SNAT port, as above.
#[test]
fn unanswered_flows_give_their_snat_ports_back_sooner() {
    let timeouts = FlowTimeouts {
        unreplied: Duration::from_secs(1),
        ..short_timeouts(3600, 3600, 3600)
    };
    let lab = XdpLab::with_timeouts(&lab_services(), (20000, 20000), timeouts).unwrap();
    let flow = |i: u16, flags| Spec::tcp("198.18.0.2", 10000 + i, "198.19.0.11", 80, flags);
    let send = |spec: Spec| lab.run(&spec.build(), lab.ifindex_a).unwrap().0;
    let forwarded = |v: u32| v == TX || v == REDIRECT;
    let wait = |ms| std::thread::sleep(Duration::from_millis(ms));

    // A SYN nobody answers: its port is held while it is retried, then given back.
    assert!(forwarded(send(flow(0, SYN))));
    assert_eq!(send(flow(1, SYN)), DROP, "port given away at once");
    wait(2500);
    let reused = packets(&lab, Stat::NatPortReused);
    assert!(
        forwarded(send(flow(1, SYN))),
        "unanswered flow kept its port"
    );
    assert_eq!(packets(&lab, Stat::NatPortReused) - reused, 1);

    // The backend answers flow 1: from then on the established timeout (1 h) holds.
    let answer = Spec::tcp("198.18.0.3", 8080, SNAT_V4, 20000, SYN | ACK);
    assert!(forwarded(send(answer)));
    wait(2500);
    assert_eq!(send(flow(2, SYN)), DROP, "an answered flow lost its port");
    assert!(
        forwarded(send(flow(1, ACK))),
        "the answered flow no longer forwards"
    );

    // UDP: a datagram nobody answers holds its port for the unreplied timeout only.
    let dgram = |port: u16| Spec::udp("198.18.0.2", port, "198.19.0.10", 53);
    assert!(forwarded(send(dgram(7000))));
    assert_eq!(send(dgram(7001)), DROP);
    wait(2500);
    assert!(
        forwarded(send(dgram(7001))),
        "one-way UDP flow kept its port"
    );
}

/// Nothing deletes flow entries but LRU eviction, so before `expiry` a backend's SNAT ports
/// stayed taken by connections long closed: with the default 12,768 ports a one-backend
/// service refused every new flow after ~12,000 connections, for good. Closed TCP flows now
/// give their port back after the close (RST) or time-wait (FIN) timeout, counted from their
/// last packet in either direction; live flows keep theirs. One SNAT port, so every new flow
/// needs exactly the port the previous one held.
#[test]
fn closed_tcp_flows_give_their_snat_ports_back() {
    // 198.19.0.11:80 has one backend, 198.18.0.3:8080, reached back out of `xa`.
    let lab =
        XdpLab::with_timeouts(&lab_services(), (20000, 20000), short_timeouts(1, 3, 3600)).unwrap();
    let flow = |i: u16, flags| Spec::tcp("198.18.0.2", 10000 + i, "198.19.0.11", 80, flags);
    let send = |spec: Spec| lab.run(&spec.build(), lab.ifindex_a).unwrap().0;
    let forwarded = |v: u32| v == TX || v == REDIRECT;
    let wait = |ms| std::thread::sleep(Duration::from_millis(ms));

    // RST: the port is free again after the close timeout (1 s, whole seconds).
    assert!(forwarded(send(flow(0, SYN))));
    assert!(forwarded(send(flow(0, RST | ACK))));
    let exhausted = packets(&lab, Stat::DropNatExhausted);
    assert_eq!(
        send(flow(1, SYN)),
        DROP,
        "port given away before the flow expired"
    );
    assert_eq!(packets(&lab, Stat::DropNatExhausted) - exhausted, 1);
    wait(2500);
    let reused = packets(&lab, Stat::NatPortReused);
    assert!(
        forwarded(send(flow(1, SYN))),
        "port of the reset flow not reused"
    );
    assert_eq!(packets(&lab, Stat::NatPortReused) - reused, 1);
    // A late packet of the old flow is not sent out with the port it lost: its forward
    // entry went with the port, and no other port is free.
    assert_eq!(
        send(flow(0, ACK)),
        DROP,
        "late packet of a flow whose port was taken"
    );

    // FIN from the client: held for the time-wait timeout (3 s), not the close one.
    assert!(forwarded(send(flow(1, FIN | ACK))));
    wait(2500);
    assert_eq!(
        send(flow(2, SYN)),
        DROP,
        "FIN-closed flow's port reused before time-wait"
    );
    wait(2000);
    assert!(
        forwarded(send(flow(2, SYN))),
        "port of the FIN-closed flow not reused"
    );

    // FIN from the backend, a reply to the SNAT port, counts the same.
    let fin = Spec::tcp("198.18.0.3", 8080, SNAT_V4, 20000, FIN | ACK);
    assert!(forwarded(send(fin)));
    wait(4500);
    assert!(
        forwarded(send(flow(3, SYN))),
        "backend-closed flow's port not reused"
    );

    // A live flow without FIN or RST keeps its port past the close and time-wait timeouts.
    wait(4500);
    assert_eq!(send(flow(4, SYN)), DROP, "a live flow lost its port");
    assert!(
        forwarded(send(flow(3, ACK))),
        "the live flow no longer forwards"
    );
}

/// UDP has no close: a UDP flow's port is reused once the flow has been quiet for the UDP
/// timeout, and a flow that keeps sending in one direction only (the reply entry never
/// refreshed) keeps its port.
#[test]
fn quiet_udp_flows_give_their_snat_ports_back() {
    // 198.19.0.10:53/udp has one backend, 198.18.1.2:5353.
    let lab =
        XdpLab::with_timeouts(&lab_services(), (20000, 20000), short_timeouts(1, 1, 4)).unwrap();
    let flow = |port: u16| Spec::udp("198.18.0.2", port, "198.19.0.10", 53);
    let send = |spec: Spec| lab.run(&spec.build(), lab.ifindex_a).unwrap().0;
    let forwarded = |v: u32| v == TX || v == REDIRECT;
    assert!(forwarded(send(flow(9999))));
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(6000) {
        assert!(forwarded(send(flow(9999))), "the chatty flow lost its port");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(
        send(flow(10000)),
        DROP,
        "a chatty flow's port was given away"
    );
    std::thread::sleep(Duration::from_millis(5500));
    let reused = packets(&lab, Stat::NatPortReused);
    assert!(forwarded(send(flow(10000))), "quiet flow's port not reused");
    assert_eq!(packets(&lab, Stat::NatPortReused) - reused, 1);
}

/// A conntrack table asked to hold far more flows than it has slots keeps forwarding: a full
/// bucket gives its longest-quiet slot to the new flow, no insert fails, every slot holds a
/// different flow, and each flow still held is found.
#[test]
fn an_overfull_conntrack_table_evicts_instead_of_failing() {
    // 16 entries: 2 buckets of 30 slots in each table.
    let mut lab = XdpLab::new(&lab_services(), 16, 16).unwrap();
    let flow = |i: u16, flags| Spec::tcp("198.18.0.2", 10000 + i, "198.19.0.10", 80, flags);
    for i in 0..300 {
        let (verdict, _) = lab.run(&flow(i, SYN).build(), lab.ifindex_a).unwrap();
        assert_eq!(verdict, REDIRECT, "SYN of flow {i}");
    }
    assert_eq!(packets(&lab, Stat::DropMapError), 0);
    assert_eq!(packets(&lab, Stat::FwdNewFlow), 300);
    let live = |lab: &mut XdpLab| -> Vec<FlowKey> {
        let mut keys = Vec::new();
        for b in conntrack_buckets(lab) {
            keys.extend(
                (0..WAYS)
                    .filter(|&w| is_live(b.tags[w]))
                    .map(|w| b.slots[w].key),
            );
        }
        keys
    };
    let held = live(&mut lab);
    assert_eq!(held.len(), 2 * WAYS, "every slot in use, none twice");
    let mut ports: Vec<u16> = held.iter().map(|k| u16::from_be(k.sport) - 10000).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), held.len(), "a flow held twice");
    let hits = packets(&lab, Stat::FwdConntrack);
    for &p in &ports {
        let (verdict, _) = lab.run(&flow(p, ACK).build(), lab.ifindex_a).unwrap();
        assert_eq!(verdict, REDIRECT);
    }
    assert_eq!(packets(&lab, Stat::FwdConntrack) - hits, ports.len() as u64);
    assert_eq!(
        packets(&lab, Stat::FwdNewFlow),
        300,
        "no held flow was started again"
    );
}

/// A full bucket evicts the flow quiet longest, by when its packets were last seen (the
/// bucket header's stamps, refreshed with the traffic), not the one inserted first.
#[test]
fn a_full_bucket_evicts_the_longest_quiet_flow_not_the_oldest() {
    // 15 entries: one bucket of 30 slots in each table, so every flow shares it.
    let mut lab = XdpLab::new(&lab_services(), 16, 15).unwrap();
    let flow = |i: u16, flags| Spec::tcp("198.18.0.2", 10000 + i, "198.19.0.10", 80, flags);
    let run = |lab: &XdpLab, spec: Spec, ifindex: u32| {
        let (verdict, out) = lab.run(&spec.build(), ifindex).unwrap();
        assert_eq!(verdict, REDIRECT);
        out
    };
    // Flow 0 first; the other 29 two seconds later (stamps are whole seconds).
    let first = parse(&run(&lab, flow(0, SYN), lab.ifindex_a)).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    for i in 1..WAYS as u16 {
        run(&lab, flow(i, SYN), lab.ifindex_a);
    }
    // Two seconds on, flow 0 has traffic both ways (its hop is stale by then, so its entries'
    // times are refreshed); the other 29 stay quiet.
    std::thread::sleep(Duration::from_millis(2100));
    run(&lab, flow(0, ACK), lab.ifindex_a);
    let reply = Spec {
        src_mac: mac_backend(
            first
                .dst
                .to_string()
                .rsplit('.')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        ),
        dst_mac: MAC_B,
        ..Spec::tcp(&first.dst.to_string(), 8080, SNAT_V4, first.sport, ACK)
    };
    run(&lab, reply, lab.ifindex_b);
    // A new flow into the full bucket takes the slot of a quiet one.
    run(&lab, flow(100, SYN), lab.ifindex_a);
    let bucket = conntrack_buckets(&mut lab).remove(0);
    let held: Vec<u16> = (0..WAYS)
        .filter(|&w| is_live(bucket.tags[w]))
        .map(|w| u16::from_be(bucket.slots[w].key.sport) - 10000)
        .collect();
    assert_eq!(held.len(), WAYS);
    assert!(held.contains(&0), "the active flow was evicted: {held:?}");
    assert!(held.contains(&100), "the new flow is missing: {held:?}");
    let quiet_gone = (1..WAYS as u16).filter(|i| !held.contains(i)).count();
    assert_eq!(quiet_gone, 1, "{held:?}");
}

/// Every bucket of the lab's forward conntrack table, as userspace reads it.
fn conntrack_buckets(lab: &mut XdpLab) -> Vec<Bucket<FlowNat>> {
    let map = lab
        .datapath
        .ebpf_mut()
        .map(ingress_common::maps::CONNTRACK)
        .unwrap();
    let flows: aya::maps::Array<_, Bucket<FlowNat>> = aya::maps::Array::try_from(map).unwrap();
    flows.iter().map(|b| b.unwrap()).collect()
}

/// Deletes the reply entry of the flow that holds `snat_port` towards `backend`, as table
/// pressure does (a full bucket gives its longest-quiet slot to a new flow) to flows whose
/// replies are rare.
fn evict_reply(lab: &mut XdpLab, backend: [u8; 4], backend_port: u16, snat_port: u16) {
    let map = lab
        .datapath
        .ebpf_mut()
        .map_mut(ingress_common::maps::REPLY_NAT)
        .unwrap();
    let mut replies: aya::maps::Array<_, Bucket<ReplyNat>> =
        aya::maps::Array::try_from(map).unwrap();
    let snat: std::net::Ipv4Addr = SNAT_V4.parse().unwrap();
    let key = FlowKey {
        src: [u32::from_ne_bytes(backend), 0, 0, 0],
        dst: [u32::from_ne_bytes(snat.octets()), 0, 0, 0],
        sport: backend_port.to_be(),
        dport: snat_port.to_be(),
        proto: 6,
        family: 2,
        _pad: 0,
    };
    // The bucket depends on the node's random hash seed: search them all (a test table).
    for i in 0..replies.len() {
        let mut bucket = replies.get(&i, 0).unwrap();
        let used = |w: usize| is_live(bucket.tags[w]) && bucket.slots[w].key == key;
        if let Some(w) = (0..WAYS).find(|&w| used(w)) {
            bucket.tags[w] = TAG_GONE;
            replies.set(i, bucket, 0).unwrap();
            return;
        }
    }
    panic!("no reply entry for {key:?}");
}

/// A flow whose reply entry was evicted (its forward entry lives on) puts it back on its
/// next look, once per hop TTL; if another flow took the port meanwhile, the flow starts
/// again instead of sending its packets out under the other flow's port.
#[test]
fn a_flow_that_lost_its_reply_entry_restores_it_or_starts_again() {
    // One SNAT port; 198.19.0.11:80 has one backend, 198.18.0.3:8080, out of `xa`.
    let mut lab =
        XdpLab::with_timeouts(&lab_services(), (20000, 20000), short_timeouts(1, 3, 3600)).unwrap();
    let a = |flags| Spec::tcp("198.18.0.2", 1111, "198.19.0.11", 80, flags);
    let b = |flags| Spec::tcp("198.18.0.2", 2222, "198.19.0.11", 80, flags);
    let from_backend = || Spec::tcp("198.18.0.3", 8080, SNAT_V4, 20000, ACK);
    let forwarded = |v: u32| v == TX || v == REDIRECT;
    // Longer than the hop TTL (256 jiffies: 1.02 s at HZ=250, 2.56 s at HZ=100).
    let past_ttl = || std::thread::sleep(Duration::from_millis(2700));

    let (v, _) = lab.run(&a(SYN).build(), lab.ifindex_a).unwrap();
    assert!(forwarded(v));
    evict_reply(&mut lab, [198, 18, 0, 3], 8080, 20000);
    past_ttl();
    let (v, _) = lab.run(&a(ACK).build(), lab.ifindex_a).unwrap();
    assert!(forwarded(v), "A's next packet after the eviction: {v}");
    let (v, out) = lab.run(&from_backend().build(), lab.ifindex_a).unwrap();
    assert!(forwarded(v), "the backend's reply to A: {v}");
    let back = parse(&out).unwrap();
    assert_eq!(
        (back.dst, back.dport),
        (ip("198.18.0.2"), 1111),
        "reply entry restored for A"
    );

    // Evicted again, and B takes the port before A looks.
    evict_reply(&mut lab, [198, 18, 0, 3], 8080, 20000);
    let (v, out) = lab.run(&b(SYN).build(), lab.ifindex_a).unwrap();
    assert!(forwarded(v));
    assert_eq!(parse(&out).unwrap().sport, 20000);
    past_ttl();
    let (v, _) = lab.run(&a(ACK).build(), lab.ifindex_a).unwrap();
    assert_eq!(
        v, DROP,
        "A lost its port: it must not be sent out under B's"
    );
    let (v, out) = lab.run(&from_backend().build(), lab.ifindex_a).unwrap();
    assert!(forwarded(v));
    assert_eq!(
        parse(&out).unwrap().dport,
        2222,
        "the port's replies still reach B"
    );
}

/// Runs `frame` in on `ifindex`, expects `verdict` (and, unless empty, exactly the counters
/// `stats` moved) and an ICMP error out whose every checksum verifies; returns it parsed, and
/// the frame.
fn icmp_answer(
    lab: &XdpLab,
    frame: &[u8],
    ifindex: u32,
    verdict: u32,
    stats: &[Stat],
) -> (tests::packet::IcmpParsed, Vec<u8>) {
    let before = Stats::snap(lab);
    let (v, out) = lab.run(frame, ifindex).unwrap();
    assert_eq!(v, verdict);
    if !stats.is_empty() {
        assert_eq!(before.changed(), stats);
    }
    let e = parse_icmp(&out).unwrap();
    assert!(
        e.ip_csum_ok && e.icmp_csum_ok && e.quoted_ip_csum_ok,
        "{e:?}"
    );
    (e, out)
}

/// ICMP errors about NATed flows are translated like the flow, so they reach the endpoint
/// that must act on them: an error about a packet we sent to a backend goes to its client
/// (from the VIP, quoting the packet the client sent), one about a reply we sent to a client
/// goes to the backend (from the SNAT address, quoting the reply the backend sent). All
/// checksums (outer IPv4, quoted IPv4, ICMP, ICMPv6 with its pseudo-header) must verify.
#[test]
fn icmp_errors_about_natted_flows_are_translated_both_ways() {
    let lab = lab();
    let client = "198.18.0.2";
    let vip = "198.19.0.10";
    let (verdict, fwd) = lab
        .run(&Spec::udp(client, 40100, vip, 53).build(), lab.ifindex_a)
        .unwrap();
    assert_eq!(verdict, REDIRECT);
    let f = parse(&fwd).unwrap();
    assert_eq!(
        (f.src, f.dst, f.dport),
        (ip(SNAT_V4), ip("198.18.1.2"), 5353)
    );

    // The backend's port is closed: its kernel quotes our packet (IP header + 8) to SNAT.
    let err = icmp_error("198.18.1.2", SNAT_V4, 3, 3, 0, &fwd, 28);
    let (e, out) = icmp_answer(
        &lab,
        &err,
        lab.ifindex_b,
        REDIRECT,
        &[Stat::FwdIcmp, Stat::Redirect],
    );
    assert_eq!(
        (e.src, e.dst, e.ttl, e.kind, e.code),
        (ip(vip), ip(client), 63, 3, 3)
    );
    assert_eq!(e.quoted, (ip(client), 40100, ip(vip), 53));
    assert_eq!(&out[0..6], &MAC_CLIENT, "sent to the client's MAC");

    // The client's port is closed: its kernel quotes our translated reply to the VIP.
    let reply = Spec {
        src_mac: mac_backend(2),
        dst_mac: MAC_B,
        ..Spec::udp("198.18.1.2", 5353, SNAT_V4, f.sport)
    };
    let (verdict, back) = lab.run(&reply.build(), lab.ifindex_b).unwrap();
    assert_eq!(verdict, REDIRECT);
    let err = icmp_error(client, vip, 3, 3, 0, &back, 28);
    let (e, _) = icmp_answer(
        &lab,
        &err,
        lab.ifindex_a,
        REDIRECT,
        &[Stat::FwdIcmp, Stat::Redirect],
    );
    assert_eq!((e.src, e.dst), (ip(SNAT_V4), ip("198.18.1.2")));
    assert_eq!(e.quoted, (ip("198.18.1.2"), 5353, ip(SNAT_V4), f.sport));

    // A TCP flow's "fragmentation needed" with a whole quoted packet keeps its MTU.
    let (_, syn) = lab
        .run(
            &Spec::tcp(client, 40101, vip, 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    let t = parse(&syn).unwrap();
    let err = icmp_error(&t.dst.to_string(), SNAT_V4, 3, 4, 1400, &syn, 1000);
    let (e, _) = icmp_answer(&lab, &err, lab.ifindex_b, REDIRECT, &[]);
    assert_eq!((e.kind, e.code, e.info), (3, 4, 1400));
    assert_eq!(e.quoted, (ip(client), 40101, ip(vip), 80));

    // IPv6: a router's "packet too big" about our packet to the backend.
    let (_, syn6) = lab
        .run(
            &Spec::tcp("2001:2::2", 40102, "2001:2:ff::10", 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    let err = icmp_error("2001:2:1::1", SNAT_V6, 2, 0, 1280, &syn6, 1000);
    // (The ICMPv6 checksum covers the new outer addresses.)
    let (e, _) = icmp_answer(
        &lab,
        &err,
        lab.ifindex_b,
        REDIRECT,
        &[Stat::FwdIcmp, Stat::Redirect],
    );
    assert_eq!(
        (e.src, e.dst, e.ttl),
        (ip("2001:2:ff::10"), ip("2001:2::2"), 63)
    );
    assert_eq!(e.quoted, (ip("2001:2::2"), 40102, ip("2001:2:ff::10"), 80));
}

/// ICMP that belongs to no flow of ours, or that is cut short, goes to the stack untouched.
#[test]
fn icmp_errors_of_no_flow_and_short_quotes_pass_untouched() {
    let lab = lab();
    let (_, fwd) = lab
        .run(
            &Spec::udp("198.18.0.2", 40200, "198.19.0.10", 53).build(),
            lab.ifindex_a,
        )
        .unwrap();
    // About a packet of a flow we never saw (another client port).
    let stranger = Spec::udp(SNAT_V4, 20001, "198.18.1.2", 5353).build();
    let mut frames = vec![
        icmp_error("198.18.1.2", SNAT_V4, 3, 3, 0, &stranger, 28),
        // Not an error: an echo request to the VIP.
        icmp_error("198.18.0.2", "198.19.0.10", 8, 0, 1, &fwd, 28),
        // About the node's own traffic, not a NATed flow.
        icmp_error(
            "198.18.1.2",
            SNAT_V4,
            3,
            3,
            0,
            &Spec::tcp(SNAT_V4, 22, "198.18.1.2", 50000, ACK).build(),
            28,
        ),
    ];
    // Quotes too short to hold the ports, down to none at all.
    for quote in 0..24 {
        frames.push(icmp_error("198.18.1.2", SNAT_V4, 3, 3, 0, &fwd, quote));
    }
    for frame in frames {
        let stats = Stats::snap(&lab);
        let (verdict, out) = lab.run(&frame, lab.ifindex_b).unwrap();
        assert_eq!((verdict, &out), (PASS, &frame));
        assert_eq!(stats.changed(), vec![Stat::PassNotOurs]);
    }
    // A frame cut at every byte past the Ethernet header (the least a test run takes): never
    // a crash, never forwarded.
    let whole = icmp_error("198.18.1.2", SNAT_V4, 3, 3, 0, &fwd, 28);
    for n in 14..whole.len() {
        let (verdict, _) = lab.run(&whole[..n], lab.ifindex_b).unwrap();
        assert!(verdict == PASS || verdict == DROP, "{n} bytes: {verdict}");
    }
}

/// A packet too big for its egress link is answered as a router would: ICMP "fragmentation
/// needed" (or ICMPv6 "packet too big") with the link's MTU, from where the packet was going
/// back to its sender, quoting it as sent; XDP cannot fragment and the device would drop it
/// silently. In both directions, IPv4 and IPv6; an IPv4 packet without DF is dropped and
/// counted; packets that fit are forwarded as before.
#[test]
fn packets_too_big_for_the_egress_link_get_icmp_too_big() {
    let lab = lab();
    lab.ns.run("ip link set xa mtu 1400").unwrap();
    lab.ns.run("ip link set xb mtu 1400").unwrap();
    let big = |spec: Spec| Spec {
        payload: vec![b'x'; 1400],
        ..spec
    };
    let client = "198.18.0.2";
    let vip = "198.19.0.10";
    let (verdict, syn) = lab
        .run(
            &Spec::tcp(client, 40300, vip, 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    assert_eq!(verdict, REDIRECT);
    let f = parse(&syn).unwrap();

    // Client -> VIP, 1440 bytes for a 1400-byte link: the client hears it from the VIP.
    let frame = big(Spec::tcp(client, 40300, vip, 80, ACK)).build();
    let (e, out) = icmp_answer(
        &lab,
        &frame,
        lab.ifindex_a,
        TX,
        &[Stat::Tx, Stat::IcmpTooBig],
    );
    assert_eq!(
        (e.src, e.dst, e.kind, e.code, e.info),
        (ip(vip), ip(client), 3, 4, 1400)
    );
    assert_eq!(e.quoted, (ip(client), 40300, ip(vip), 80));
    assert_eq!(
        (&out[0..6], &out[6..12]),
        (&frame[6..12], &frame[0..6]),
        "MACs swapped"
    );
    assert_eq!(out.len(), 14 + 20 + 8 + 128);

    // Backend -> SNAT, a reply too big for the client's link: the backend hears it from the
    // SNAT address, about the packet it sent.
    let reply = Spec {
        src_mac: mac_backend(2),
        dst_mac: MAC_B,
        ..big(Spec::tcp(&f.dst.to_string(), 8080, SNAT_V4, f.sport, ACK))
    };
    let (e, _) = icmp_answer(&lab, &reply.build(), lab.ifindex_b, TX, &[]);
    assert_eq!((e.src, e.dst, e.info), (ip(SNAT_V4), f.dst, 1400));
    assert_eq!(e.quoted, (f.dst, 8080, ip(SNAT_V4), f.sport));

    // IPv6: "packet too big" with its 32-bit MTU and the pseudo-header checksum.
    let (verdict, _) = lab
        .run(
            &Spec::tcp("2001:2::2", 40301, "2001:2:ff::10", 80, SYN).build(),
            lab.ifindex_a,
        )
        .unwrap();
    assert_eq!(verdict, REDIRECT);
    let frame = big(Spec::tcp("2001:2::2", 40301, "2001:2:ff::10", 80, ACK)).build();
    let (e, _) = icmp_answer(&lab, &frame, lab.ifindex_a, TX, &[]);
    assert_eq!(
        (e.src, e.dst, e.kind, e.code, e.info),
        (ip("2001:2:ff::10"), ip("2001:2::2"), 2, 0, 1400)
    );
    assert_eq!(e.quoted, (ip("2001:2::2"), 40301, ip("2001:2:ff::10"), 80));

    // IPv4 without DF needs fragmenting, which XDP cannot do: a client's packet is dropped
    // (the stack cannot take it translated), a reply goes to the stack translated.
    let frame = Spec {
        dont_fragment: false,
        ..big(Spec::tcp(client, 40300, vip, 80, ACK))
    }
    .build();
    let stats = Stats::snap(&lab);
    let (verdict, _) = lab.run(&frame, lab.ifindex_a).unwrap();
    assert_eq!(verdict, DROP);
    assert_eq!(stats.changed(), vec![Stat::DropTooBig]);
    let frame = Spec {
        dont_fragment: false,
        ..reply.clone()
    }
    .build();
    let stats = Stats::snap(&lab);
    let (verdict, out) = lab.run(&frame, lab.ifindex_b).unwrap();
    assert_eq!(verdict, PASS);
    assert_eq!(stats.changed(), vec![Stat::PassTooBig]);
    let p = parse(&out).unwrap();
    assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (ip(vip), 80, ip(client), 40300)
    );

    // The MTU is cached with the next hop: once the link grows, within the hop TTL (256
    // jiffies, at most 2.56 s at HZ=100), the same packet goes through.
    lab.ns.run("ip link set xb mtu 1500").unwrap();
    let frame = big(Spec::tcp(client, 40300, vip, 80, ACK)).build();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut verdict = TX;
    while verdict != REDIRECT && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        verdict = lab.run(&frame, lab.ifindex_a).unwrap().0;
    }
    assert_eq!(verdict, REDIRECT, "the larger MTU was not picked up");

    // What fits is forwarded as before.
    let fits = Spec {
        payload: vec![b'x'; 1300],
        ..Spec::tcp(client, 40300, vip, 80, ACK)
    };
    let (verdict, out) = lab.run(&fits.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert!(parse(&out).unwrap().l4_csum_ok);
}

/// A VIP id given to a new VIP starts its per-VIP counters at zero, and ids are reused
/// oldest-freed first: the counters of `ingress_xdp_vip_packets_total` never carry the
/// traffic of the VIP that held the id before.
#[test]
fn a_reused_vip_id_starts_its_counters_from_zero() {
    let svc = |vip: &str| {
        let mut s = lab_services()[0].clone();
        s.vip = vip.parse().unwrap();
        s
    };
    let (a, b, c) = (svc("198.19.0.20"), svc("198.19.0.21"), svc("198.19.0.22"));
    let mut lab = XdpLab::new(std::slice::from_ref(&a), 2, 4096).expect("XDP lab");
    let vip_packets = |lab: &XdpLab, id: u32| lab.datapath.counters().unwrap().vip(id).unwrap();
    let id_a = lab
        .applier
        .vip_id(&ingress::apply::maps::vip_key(&a))
        .unwrap();
    for port in [40001, 40002, 40003] {
        let syn = Spec::tcp("198.18.0.2", port, "198.19.0.20", 80, SYN);
        let (verdict, _) = lab.run(&syn.build(), lab.ifindex_a).unwrap();
        assert_eq!(verdict, REDIRECT);
    }
    assert_eq!(vip_packets(&lab, id_a).packets, 3);

    // A goes; B takes the never-used id, not A's.
    lab.applier.apply(std::slice::from_ref(&b)).unwrap();
    let id_b = lab
        .applier
        .vip_id(&ingress::apply::maps::vip_key(&b))
        .unwrap();
    assert_ne!(
        id_b, id_a,
        "a freed id was reused while a never-used one was free"
    );
    // C gets A's old id, with its counters zeroed.
    lab.applier.apply(&[b.clone(), c.clone()]).unwrap();
    let id_c = lab
        .applier
        .vip_id(&ingress::apply::maps::vip_key(&c))
        .unwrap();
    assert_eq!(id_c, id_a);
    let before = vip_packets(&lab, id_c);
    assert_eq!(
        (before.packets, before.bytes),
        (0, 0),
        "A's traffic carried over to C"
    );
    let syn = Spec::tcp("198.18.0.2", 40004, "198.19.0.22", 80, SYN);
    let (verdict, _) = lab.run(&syn.build(), lab.ifindex_a).unwrap();
    assert_eq!(verdict, REDIRECT);
    assert_eq!(vip_packets(&lab, id_c).packets, 1);
}
