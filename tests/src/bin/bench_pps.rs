//! `cargo xtask bench xdp`, part 2: packets per second through a veth topology for the XDP
//! L4 path, IPVS and iptables DNAT configured for the same VIP, in the same run, interleaved.
//!
//! A generator in the client namespace transmits 64-byte UDP frames with BPF_PROG_TEST_RUN in
//! live-frame mode (XDP_TX out of the client's veth); the node forwards them by XDP, or by the
//! stack with IPVS or iptables NAT; a counting XDP sink in the backend namespace drops them.
//! The whole path runs on the generator's CPU, so packets/s is the throughput of the node
//! path plus a constant generator and sink cost.
//!
//! Arguments: `[rounds] [frames per run]`. For studies, not for the recorded figures:
//! `BENCH_CONNTRACK=<entries>` sizes the conntrack tables (default 65,536), and
//! `BENCH_FLOWS=1` or `BENCH_FLOWS=10000` runs that case alone (to profile one of them).
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use ingress::{
    apply::maps::{L4Applier, SnatSettings},
    maps::{
        loader::{Datapath, LoaderOptions},
        neigh,
    },
    snapshot::{L4Protocol, L4Service, ObjectRef},
};
use tests::{
    fixtures::{Fixture, GEN_FLOWS, SINK_RECEIVED},
    netns::in_ns,
    packet::Spec,
    topology::{backend_ip, Topology, SNAT},
    xdp::xdp_md,
};

const VIP: &str = "198.19.0.10";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Xdp,
    Ipvs,
    Iptables,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Xdp => "XDP (ingressd)",
            Mode::Ipvs => "IPVS (NAT + SNAT)",
            Mode::Iptables => "iptables DNAT + SNAT",
        }
    }
}

/// One topology configured for one mode, with its generator and sink.
struct Rig {
    mode: Mode,
    gen: Fixture,
    sink: Fixture,
    frame: Vec<u8>,
    client_if: u32,
    // Kept alive for the node's attachment; dropped before the topology.
    _node: Option<Datapath>,
    _pass: Option<Fixture>,
    topo: Topology,
}

fn mac(ns: &tests::netns::NetNs, ifname: &str) -> Result<[u8; 6]> {
    let text = ns.run(&format!("cat /sys/class/net/{ifname}/address"))?;
    let mut out = [0u8; 6];
    for (i, part) in text.trim().split(':').enumerate().take(6) {
        out[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(out)
}

impl Rig {
    fn new(mode: Mode) -> Result<Self> {
        let topo = Topology::new(1)?;
        // Sink in the backend namespace.
        let backend = topo.backends[0].name.clone();
        let sink = in_ns(&topo.backends[0], move || -> Result<Fixture> {
            let mut f = Fixture::load("xdp_sink")?;
            f.attach("eth0")?;
            Ok(f)
        })?
        .with_context(|| format!("sink in {backend}"))?;
        let svc = L4Service {
            origin: ObjectRef::default(),
            vip: VIP.parse()?,
            port: 80,
            protocol: L4Protocol::Udp,
            backends: vec![format!("{}:8080", backend_ip(1)).parse()?],
        };
        let (node, pass) = match mode {
            Mode::Xdp => {
                let links = topo.node_links.clone();
                let conntrack_entries = match std::env::var("BENCH_CONNTRACK") {
                    Ok(v) => v.parse().context("BENCH_CONNTRACK")?,
                    Err(_) => 1 << 16,
                };
                let dp = in_ns(&topo.node, move || -> Result<Datapath> {
                    let mut dp = Datapath::load(&LoaderOptions {
                        pin_dir: None,
                        max_vips: 4,
                        conntrack_entries,
                        kernel_log: false,
                    })?;
                    for l in &links {
                        dp.attach(l, false)?;
                    }
                    let snat = SnatSettings {
                        v4: Some(SNAT.parse()?),
                        v6: None,
                        port_min: 1024,
                        port_max: 65535,
                        timeouts: Default::default(),
                    };
                    let mut applier = L4Applier::new(dp.map_writer()?, snat)?;
                    applier.apply(&[svc])?;
                    neigh::keep_resolved([backend_ip(1).parse()?]);
                    Ok(dp)
                })??;
                (Some(dp), None)
            }
            Mode::Ipvs | Mode::Iptables => {
                // NAPI on the node's client link so live-frame XDP_TX from the client lands.
                let pass = in_ns(&topo.node, || -> Result<Fixture> {
                    let mut f = Fixture::load("xdp_pass")?;
                    f.attach("nc")?;
                    Ok(f)
                })??;
                let b = backend_ip(1);
                let rules: Vec<String> = if mode == Mode::Ipvs {
                    vec![
                        format!("ip addr add {VIP}/32 dev lo"),
                        format!("ipvsadm -A -u {VIP}:80 -s rr"),
                        // Lets iptables SNAT see IPVS-forwarded packets (kube-proxy does this).
                        "sysctl -qw net.ipv4.vs.conntrack=1".into(),
                        format!("ipvsadm -a -u {VIP}:80 -r {b}:8080 -m"),
                        format!("iptables -t nat -A POSTROUTING -d {b} -p udp -j SNAT --to-source {SNAT}"),
                    ]
                } else {
                    vec![
                        format!("iptables -t nat -A PREROUTING -d {VIP} -p udp --dport 80 -j DNAT --to-destination {b}:8080"),
                        format!("iptables -t nat -A POSTROUTING -d {b} -p udp -j SNAT --to-source {SNAT}"),
                    ]
                };
                for r in rules {
                    topo.node.run(&r)?;
                }
                // Resolve the backend's neighbour before timing.
                topo.node.run(&format!("ping -c1 -W1 {b}")).ok();
                (None, Some(pass))
            }
        };
        let client_if: u32 = topo
            .client
            .run("cat /sys/class/net/eth0/ifindex")?
            .trim()
            .parse()?;
        let mut spec = Spec::udp("198.18.0.2", 10000, VIP, 80);
        spec.src_mac = mac(&topo.client, "eth0")?;
        spec.dst_mac = mac(&topo.node, "nc")?;
        spec.udp_no_csum = true;
        spec.payload = vec![0; 64 - 14 - 20 - 8];
        let frame = spec.build();
        let mut gen = in_ns(&topo.client, || Fixture::load("xdp_gen"))??;
        gen.set_frame(&frame)?;
        Ok(Rig {
            mode,
            gen,
            sink,
            frame,
            client_if,
            _node: node,
            _pass: pass,
            topo,
        })
    }

    /// Sends `count` frames cycling through `flows` source ports; returns received packets/s
    /// and the fraction of sent frames that arrived.
    fn run(&mut self, flows: u64, count: u32) -> Result<(f64, f64)> {
        self.gen.set(GEN_FLOWS, flows)?;
        let before = self.sink.get(SINK_RECEIVED)?;
        let frame = &self.frame;
        let prog = self.gen.prog()?;
        let ctx = xdp_md(frame.len(), self.client_if);
        // The generator must run inside the client namespace (the ingress ifindex is resolved
        // there); this thread enters it for the duration of the call.
        let _inside = self.topo.client.enter()?;
        // Best effort, as before: an unpinned run is still a run.
        let _ = tests::bench::pin_to_cpu(1);
        let start = Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        })?;
        // Let the last softirq batches drain.
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = start.elapsed().as_secs_f64() - 0.020;
        let received = self.sink.get(SINK_RECEIVED)? - before;
        if std::env::var_os("BENCH_DEBUG").is_some() {
            if let Some(dp) = &self._node {
                for (st, c) in dp.counters()?.stats()? {
                    if c.packets > 0 {
                        eprintln!("  {}: {}", st.name(), c.packets);
                    }
                }
            }
            eprintln!(
                "debug {:?}: generated {} received {received}\nclient: {}\nnode: {}",
                self.mode,
                self.gen.get(1)?,
                self.topo.client.run("ip -s link show eth0")?,
                self.topo.node.run("ip -s link")?
            );
        }
        Ok((
            received as f64 / elapsed,
            received as f64 / f64::from(count),
        ))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let count: u32 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    eprintln!("==> building three topologies (XDP, IPVS, iptables)");
    let ipvs = tests::netns::sh("ipvsadm -Ln").is_ok();
    if !ipvs {
        println!("IPVS: not available on this kernel (ipvsadm cannot initialise ip_vs); its row is left out.");
    }
    let mut rigs = vec![Rig::new(Mode::Xdp)?];
    if ipvs {
        rigs.push(Rig::new(Mode::Ipvs)?);
    }
    rigs.push(Rig::new(Mode::Iptables)?);
    // Warm up: resolve neighbours, create conntrack state.
    for rig in rigs.iter_mut() {
        rig.run(10_000, 200_000)?;
    }
    let only: Option<u64> = match std::env::var("BENCH_FLOWS") {
        Ok(v) => Some(v.parse().context("BENCH_FLOWS")?),
        Err(_) => None,
    };
    let mut results = vec![[Vec::new(), Vec::new()]; rigs.len()];
    let mut delivered = vec![[1.0f64, 1.0f64]; rigs.len()];
    for round in 0..rounds {
        for (i, rig) in rigs.iter_mut().enumerate() {
            for (j, flows) in [1u64, 10_000].into_iter().enumerate() {
                if only.is_some_and(|o| o != flows) {
                    results[i][j].push(f64::NAN);
                    continue;
                }
                let (pps, frac) = rig.run(flows, count)?;
                results[i][j].push(pps);
                delivered[i][j] = delivered[i][j].min(frac);
            }
        }
        eprintln!("    round {}/{rounds} done", round + 1);
    }
    println!("\npackets/s through the node, 64-byte UDP, {count} frames per run, median of {rounds} interleaved rounds:");
    println!(
        "{:<24} {:>14} {:>14} {:>12} {:>12}",
        "path", "1 flow", "10,000 flows", "x iptables", "x IPVS"
    );
    let med: Vec<[f64; 2]> = results
        .iter_mut()
        .map(|r| [median(&mut r[0]), median(&mut r[1])])
        .collect();
    let ipt = rigs.len() - 1;
    let ratio =
        |i: usize, k: usize| format!("{:.2}/{:.2}", med[i][0] / med[k][0], med[i][1] / med[k][1]);
    for (i, rig) in rigs.iter().enumerate() {
        let vs_ipvs = if ipvs { ratio(i, 1) } else { "n/a".into() };
        println!(
            "{:<24} {:>14.0} {:>14.0} {:>12} {:>12}",
            rig.mode.name(),
            med[i][0],
            med[i][1],
            ratio(i, ipt),
            vs_ipvs,
        );
    }
    println!("(ratio columns: 1 flow / 10,000 flows; lowest delivered fraction per path: {delivered:.3?})");
    Ok(())
}
