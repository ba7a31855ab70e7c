//! Edge protection in the XDP program on synthetic packets through `BPF_PROG_TEST_RUN`:
//! blocked sources and the per-source SYN rate, on VIPs and on the node's listeners.
use std::time::Duration;

use ingress::{
    apply::edge::{EdgeApplier, EdgeSettings, SynRate},
    maps::edge::AyaEdgeWriter,
};
use ingress_common::counters::Stat;
use tests::{
    packet::{Spec, ACK, SYN},
    xdp::{lab_services, XdpLab},
};

const PASS: u32 = 2;
const DROP: u32 = 1;
const REDIRECT: u32 = 4;

/// The node's listener the lab guards (198.18.0.1 is the node's address on `xa`).
const LISTENER: &str = "198.18.0.1:443";

fn lab() -> XdpLab {
    XdpLab::new(&lab_services(), 16, 4096).expect("XDP lab (needs root, BPF and netns)")
}

fn guard(
    lab: &mut XdpLab,
    block: &[&str],
    syn_rate: Option<SynRate>,
) -> EdgeApplier<AyaEdgeWriter> {
    let settings = EdgeSettings {
        syn_rate,
        listeners: vec![LISTENER.parse().unwrap()],
    };
    let mut edge = EdgeApplier::new(lab.datapath.edge_writer().unwrap(), settings).unwrap();
    edge.apply(&lab.applier.vip_ids(), &nets(block)).unwrap();
    edge
}

fn nets(v: &[&str]) -> Vec<ipnet::IpNet> {
    v.iter().map(|b| b.parse().unwrap()).collect()
}

fn packets(lab: &XdpLab, stat: Stat) -> u64 {
    lab.datapath.counters().unwrap().stat(stat).unwrap().packets
}

/// Runs `frame` and returns its verdict, checking that a passed or dropped frame is left
/// as it came.
fn verdict(lab: &XdpLab, frame: &[u8]) -> u32 {
    let (v, out) = lab.run(frame, lab.ifindex_a).unwrap();
    if v != REDIRECT {
        assert_eq!(out, frame, "a passed or dropped frame must be unchanged");
    }
    v
}

#[test]
fn blocked_sources_are_dropped_on_vips_and_listeners_and_nowhere_else() {
    let mut lab = lab();
    let _edge = guard(&mut lab, &["198.18.0.2/32", "2001:2::/64"], None);
    let vip_id = lab
        .applier
        .vip_id(&ingress::apply::maps::vip_key(&lab_services()[0]))
        .unwrap();
    let vip_before = lab
        .datapath
        .counters()
        .unwrap()
        .vip(vip_id)
        .unwrap()
        .packets;
    let cases: &[(&str, Spec, u32)] = &[
        (
            "blocked, tcp vip",
            Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 80, SYN),
            DROP,
        ),
        (
            "blocked, established packet",
            Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 80, ACK),
            DROP,
        ),
        (
            "blocked, udp vip",
            Spec::udp("198.18.0.2", 40001, "198.19.0.10", 53),
            DROP,
        ),
        (
            "blocked, listener",
            Spec::tcp("198.18.0.2", 40001, "198.18.0.1", 443, SYN),
            DROP,
        ),
        (
            "blocked, ipv6 vip",
            Spec::tcp("2001:2::2", 40001, "2001:2:ff::10", 80, SYN),
            DROP,
        ),
        // The node's other services are not the ingress's to guard.
        (
            "blocked, node ssh",
            Spec::tcp("198.18.0.2", 40001, "198.18.0.1", 22, SYN),
            PASS,
        ),
        (
            "blocked, vip address, other port",
            Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 81, SYN),
            PASS,
        ),
        (
            "allowed, tcp vip",
            Spec::tcp("198.18.0.3", 40001, "198.19.0.10", 80, SYN),
            REDIRECT,
        ),
        (
            "allowed, listener",
            Spec::tcp("198.18.0.3", 40001, "198.18.0.1", 443, SYN),
            PASS,
        ),
        (
            "allowed, ipv6 vip",
            Spec::tcp("2001:2:1::9", 40001, "2001:2:ff::10", 80, SYN),
            REDIRECT,
        ),
    ];
    for (name, spec, want) in cases {
        assert_eq!(verdict(&lab, &spec.build()), *want, "{name}");
    }
    assert_eq!(packets(&lab, Stat::DropBlocked), 5);
    assert_eq!(packets(&lab, Stat::PassEdgeChecked), 1);
    // Drops on a VIP are charged to it (the SYN and the ACK; the UDP one is another VIP's),
    // besides the allowed new flow.
    let vip_after = lab
        .datapath
        .counters()
        .unwrap()
        .vip(vip_id)
        .unwrap()
        .packets;
    assert_eq!(vip_after - vip_before, 2 + 1);
}

#[test]
fn syns_over_a_sources_rate_are_dropped_and_its_connections_go_on() {
    let mut lab = lab();
    let _edge = guard(
        &mut lab,
        &[],
        Some(SynRate {
            per_second: 1,
            burst: 3,
        }),
    );
    let syn = |src: &str, sport| Spec::tcp(src, sport, "198.18.0.1", 443, SYN).build();
    // The burst, then a drop.
    for sport in 1..=3 {
        assert_eq!(
            verdict(&lab, &syn("198.18.0.2", sport)),
            PASS,
            "syn {sport}"
        );
    }
    assert_eq!(verdict(&lab, &syn("198.18.0.2", 4)), DROP);
    // Only SYNs count: the source's open connections go on.
    let ack = Spec::tcp("198.18.0.2", 1, "198.18.0.1", 443, ACK).build();
    assert_eq!(verdict(&lab, &ack), PASS);
    // Other sources have their own budget.
    assert_eq!(verdict(&lab, &syn("198.18.0.3", 1)), PASS);
    // An IPv6 /64 is one source: its addresses share one budget.
    let syn6 = |src: &str, sport| Spec::tcp(src, sport, "2001:2:ff::10", 80, SYN).build();
    for (i, src) in ["2001:2::2", "2001:2::3", "2001:2::4"].iter().enumerate() {
        assert_eq!(verdict(&lab, &syn6(src, 100 + i as u16)), REDIRECT, "{src}");
    }
    assert_eq!(verdict(&lab, &syn6("2001:2::5", 200)), DROP);
    // On a UDP VIP a datagram that starts a flow counts as a connection; the flow's next
    // datagrams do not.
    let udp = |sport| Spec::udp("198.18.0.9", sport, "198.19.0.10", 53).build();
    for sport in 1..=3 {
        assert_eq!(verdict(&lab, &udp(sport)), REDIRECT, "udp flow {sport}");
    }
    assert_eq!(verdict(&lab, &udp(4)), DROP);
    assert_eq!(verdict(&lab, &udp(1)), REDIRECT, "an existing UDP flow");
    assert_eq!(packets(&lab, Stat::DropSynRate), 3);
    // At the sustained rate the source may connect again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(verdict(&lab, &syn("198.18.0.2", 5)), PASS);
    assert_eq!(verdict(&lab, &syn("198.18.0.2", 6)), DROP);
}

/// Pins the calling thread to `cpu` (BPF_PROG_TEST_RUN runs the program on the caller's CPU).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: sched_setaffinity(2) on this thread with a set built on the stack.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

/// SYNs of one source racing on two CPUs are counted one by one: no more pass than the
/// burst plus what the rate refills while they run. The race is rare: the earlier version
/// without compare-and-swap let 3 SYNs too many through once in 76 such races here, so this
/// bounds the behaviour under real contention rather than proving there is no race.
#[test]
fn syns_of_one_source_on_two_cpus_at_once_share_one_budget() {
    const BURST: u32 = 200;
    const PER_THREAD: u16 = 2000;
    let mut lab = lab();
    let _edge = guard(
        &mut lab,
        &[],
        Some(SynRate {
            per_second: 1,
            burst: BURST,
        }),
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "this test needs two CPUs, found {cpus}");
    let mut dropped = 0;
    for source in 10..18 {
        let src = format!("198.18.0.{source}");
        let started = std::time::Instant::now();
        let barrier = std::sync::Barrier::new(2);
        let passed: u32 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2u16)
                .map(|cpu| {
                    let (lab, barrier, src) = (&lab, &barrier, &src);
                    scope.spawn(move || {
                        pin_to_cpu(usize::from(cpu));
                        let frames: Vec<Vec<u8>> = (0..PER_THREAD)
                            .map(|i| {
                                let sport = 10_000 + cpu * PER_THREAD + i;
                                Spec::tcp(src, sport, "198.18.0.1", 443, SYN).build()
                            })
                            .collect();
                        barrier.wait();
                        frames.iter().filter(|f| verdict(lab, f) == PASS).count() as u32
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        let refilled = started.elapsed().as_secs() as u32 + 1;
        assert!(
            (BURST..=BURST + refilled).contains(&passed),
            "{src}: {passed} SYNs passed, burst {BURST}, at most {refilled} refilled"
        );
        dropped += u64::from(2 * u32::from(PER_THREAD) - passed);
    }
    assert_eq!(packets(&lab, Stat::DropSynRate), dropped);
}

#[test]
fn a_restart_with_another_block_list_lifts_the_old_blocks_and_no_settings_guard_nothing() {
    let mut lab = lab();
    let blocked = Spec::tcp("198.18.0.2", 40001, "198.18.0.1", 443, SYN).build();
    let edge = guard(&mut lab, &["198.18.0.0/24"], None);
    assert_eq!(verdict(&lab, &blocked), DROP);
    // A restart over the same maps, with another list.
    let restart = |edge: EdgeApplier<AyaEdgeWriter>, block: &[&str]| {
        let settings = EdgeSettings {
            syn_rate: None,
            listeners: vec![LISTENER.parse().unwrap()],
        };
        let mut edge = EdgeApplier::new(edge.into_writer(), settings).unwrap();
        edge.apply(&lab.applier.vip_ids(), &nets(block)).unwrap();
        edge
    };
    let edge = restart(edge, &["192.0.2.0/24"]);
    assert_eq!(verdict(&lab, &blocked), PASS);
    assert_eq!(packets(&lab, Stat::PassEdgeChecked), 1);
    // Nothing to enforce: nothing guarded, the listener's packets never reach the edge.
    let _edge = restart(edge, &[]);
    assert_eq!(verdict(&lab, &blocked), PASS);
    assert_eq!(packets(&lab, Stat::PassEdgeChecked), 1);
    assert_eq!(packets(&lab, Stat::DropBlocked), 1);
}

#[test]
fn truncated_packets_to_a_guarded_listener_are_passed_to_the_stack() {
    let mut lab = lab();
    let _edge = guard(&mut lab, &["198.18.0.2/32"], None);
    let full = Spec::tcp("198.18.0.2", 40001, "198.18.0.1", 443, SYN).build();
    // Cut inside the TCP header: the ports cannot be trusted, and the address is no VIP's.
    for len in [14 + 20 + 2, 14 + 20 + 12, 14 + 20 + 19] {
        let mut frame = full[..len].to_vec();
        // Keep the IP total length consistent with what is left, as a short packet would.
        let ip_len = (len - 14) as u16;
        frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
        assert_eq!(verdict(&lab, &frame), PASS, "cut at {len}");
    }
    assert_eq!(packets(&lab, Stat::DropBlocked), 0);
}

/// On a VIP the edge judges a flow where it starts (any packet without a conntrack entry):
/// a flow established before its source was blocked runs to its end, as behind a stateful
/// firewall that accepts established traffic, while the source can start no new one.
#[test]
fn a_vip_flow_established_before_the_block_runs_on_and_no_new_one_starts() {
    let mut lab = lab();
    let syn = Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 80, SYN).build();
    let ack = Spec::tcp("198.18.0.2", 40001, "198.19.0.10", 80, ACK).build();
    assert_eq!(verdict(&lab, &syn), REDIRECT);
    let _edge = guard(&mut lab, &["198.18.0.2/32"], None);
    assert_eq!(verdict(&lab, &ack), REDIRECT);
    let other = Spec::tcp("198.18.0.2", 40002, "198.19.0.10", 80, SYN).build();
    assert_eq!(verdict(&lab, &other), DROP);
    // A retransmitted SYN of the established flow starts it again: judged, and refused.
    assert_eq!(verdict(&lab, &syn), DROP);
    assert_eq!(packets(&lab, Stat::DropBlocked), 2);
}

/// Every VIP may be guarded: the guarded-destination map is sized at load with the VIP
/// capacity, plus room for the listeners.
#[test]
fn the_guarded_destinations_map_holds_every_vip_and_the_listeners() {
    let lab = XdpLab::new(&lab_services(), 100, 4096).expect("XDP lab");
    let map = lab
        .datapath
        .ebpf()
        .map(ingress_common::maps::EDGE_DESTS)
        .expect("EDGE_DESTS");
    let data = match map {
        aya::maps::Map::HashMap(d) => d,
        _ => panic!("EDGE_DESTS is not a hash map"),
    };
    let max = data.info().unwrap().max_entries();
    assert_eq!(
        max,
        100 + ingress::maps::loader::EDGE_LISTENER_SLOTS,
        "EDGE_DESTS capacity"
    );
}
