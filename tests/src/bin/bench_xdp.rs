//! `cargo xtask bench xdp`, part 1: per-packet cost of the XDP program through
//! BPF_PROG_TEST_RUN, one packet per call, mean of the kernel-measured run time over many
//! calls, batches interleaved across cases, net of a trivial XDP_PASS program timed the same
//! way. Every timed call's verdict and output bytes are checked.
use std::{net::IpAddr, time::Duration};

use anyhow::{bail, ensure, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use ingress::{
    apply::edge::{EdgeApplier, EdgeSettings, SynRate},
    maps::edge::AyaEdgeWriter,
    snapshot::{L4Protocol, L4Service, ObjectRef},
};
use tests::{
    packet::{parse, Spec, ACK, SYN},
    xdp::{xdp_md, XdpLab, SNAT_V4},
};

const PASS: u32 = 2;
const REDIRECT: u32 = 4;
const BACKENDS: u8 = 64;
/// Output buffer of a test run: room for the largest frame timed.
const OUT_LEN: usize = 2048;

struct Args {
    /// Profile mode (for `perf record`): time only this case, `profile_calls` times, in the
    /// small configuration.
    profile: Option<Case>,
    profile_calls: usize,
    calls: usize,
    batches: usize,
    big_vips: u32,
    big_conntrack: u32,
    /// Capacity of the table of the steady-state configuration, filled with three times as
    /// many flows (so every bucket is full and each new flow evicts one); 0 skips it.
    full_table: u32,
    /// Another build of the kernel object, timed in the same batches as this one (before /
    /// after): `--baseline-object PATH`.
    baseline: Option<std::path::PathBuf>,
    /// `--edge on`: this build with edge protection configured, timed against itself without
    /// (the baseline side), in the 1-VIP configuration only.
    edge: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        profile: None,
        profile_calls: 300_000,
        calls: 20_000,
        batches: 5,
        big_vips: 10_000,
        big_conntrack: 1_000_000,
        full_table: 65_536,
        baseline: None,
        edge: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let raw = it.next().context("flag needs a value")?;
        if k == "--profile" {
            a.profile = Some(match raw.as_str() {
                "non-vip" => Case::NonVip,
                "node" => Case::NodeTraffic,
                "ct-hit" => Case::ConntrackHit,
                "ct-hit-v6" => Case::ConntrackHitV6,
                "new-flow" => Case::NewFlow,
                "reply" => Case::Reply,
                "ct-hit-large" => Case::ConntrackHitLarge,
                other => {
                    bail!("--profile {other}: expected non-vip, node, ct-hit, ct-hit-v6, ct-hit-large, new-flow or reply")
                }
            });
            continue;
        }
        if k == "--edge" {
            a.edge = raw == "on";
            continue;
        }
        if k == "--baseline-object" {
            a.baseline = Some(raw.into());
            continue;
        }
        let v: usize = raw.parse()?;
        match k.as_str() {
            "--calls" => a.calls = v,
            "--batches" => a.batches = v,
            "--vips" => a.big_vips = v as u32,
            "--conntrack" => a.big_conntrack = v as u32,
            "--full-table" => a.full_table = v as u32,
            "--profile-calls" => a.profile_calls = v,
            _ => bail!("unknown flag {k}"),
        }
    }
    Ok(a)
}

fn services(vips: u32) -> Vec<L4Service> {
    let backends: Vec<_> = (2..2 + BACKENDS)
        .map(|i| format!("198.18.1.{i}:8080").parse().unwrap())
        .collect();
    let mut all: Vec<L4Service> = (0..vips)
        .map(|i| L4Service {
            origin: ObjectRef::default(),
            vip: IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]),
            port: 80,
            protocol: L4Protocol::Tcp,
            backends: backends.clone(),
        })
        .collect();
    // One IPv6 VIP for the IPv6 conntrack hit (the lab's IPv6 backend has a neighbour).
    all.push(L4Service {
        origin: ObjectRef::default(),
        vip: VIP_V6.parse().unwrap(),
        port: 80,
        protocol: L4Protocol::Tcp,
        backends: vec!["[2001:2:1::2]:8080".parse().unwrap()],
    });
    all
}

const VIP_V6: &str = "2001:2:ff::10";

/// The SYN of the `n`th distinct flow to `vip`.
fn flow_frame(n: u32, vip: &str) -> Vec<u8> {
    let src = format!(
        "198.18.{}.{}",
        64 + (n / 60000) % 128,
        1 + (n / 60000 / 128) % 250
    );
    Spec::tcp(&src, 1024 + (n % 60000) as u16, vip, 80, SYN).build()
}

/// One timed call: kernel-measured duration, verdict and output checked by `check`.
fn call(prog: &Xdp, frame: &[u8], ifindex: u32, out: &mut [u8]) -> Result<(u32, Duration, usize)> {
    let ctx = xdp_md(frame.len(), ifindex);
    let mut ctx_out = [0u8; 24];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ctx_in: Some(&ctx),
        ctx_out: Some(&mut ctx_out),
        ..TestRunOptions::default()
    })?;
    Ok((r.return_value, r.duration, r.data_size_out as usize))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Floor,
    NonVip,
    NodeTraffic,
    ConntrackHit,
    ConntrackHitV6,
    NewFlow,
    Reply,
    FloorLarge,
    ConntrackHitLarge,
}

impl Case {
    const ALL: [Case; 9] = [
        Case::Floor,
        Case::NonVip,
        Case::NodeTraffic,
        Case::ConntrackHit,
        Case::ConntrackHitV6,
        Case::NewFlow,
        Case::Reply,
        Case::FloorLarge,
        Case::ConntrackHitLarge,
    ];
    fn name(self) -> &'static str {
        match self {
            Case::Floor => "floor (XDP_PASS program)",
            Case::NonVip => "non-VIP packet",
            Case::NodeTraffic => "node address, not a SNAT port",
            Case::ConntrackHit => "conntrack hit (ACK)",
            Case::ConntrackHitV6 => "conntrack hit, IPv6 (ACK)",
            Case::NewFlow => "new flow (SYN, new 5-tuple)",
            Case::Reply => "reply (reverse NAT)",
            Case::FloorLarge => "floor, 1454-byte frame",
            Case::ConntrackHitLarge => "conntrack hit, 1454 bytes *",
        }
    }
}

struct Bench<'a> {
    lab: &'a XdpLab,
    pass: &'a Xdp,
    vip: String,
    ct_frame: Vec<u8>,
    ct_out: Vec<u8>,
    ct6_frame: Vec<u8>,
    ct6_out: Vec<u8>,
    reply_frame: Vec<u8>,
    reply_out: Vec<u8>,
    /// A full-size packet of the conntrack-hit flow: it pays the egress MTU check.
    large_frame: Vec<u8>,
    large_out: Vec<u8>,
    next_flow: u32,
}

impl<'a> Bench<'a> {
    fn new(lab: &'a XdpLab, pass: &'a Xdp, vip: String) -> Result<Self> {
        let prog = lab.prog()?;
        let mut out = vec![0u8; OUT_LEN];
        let syn = Spec::tcp("198.18.0.2", 40000, &vip, 80, SYN).build();
        let (v, _, _) = call(prog, &syn, lab.ifindex_a, &mut out)?;
        ensure!(v == REDIRECT, "seeding SYN verdict {v}");
        let ct_frame = Spec::tcp("198.18.0.2", 40000, &vip, 80, ACK).build();
        let (v, _, n) = call(prog, &ct_frame, lab.ifindex_a, &mut out)?;
        ensure!(v == REDIRECT, "seeding ACK verdict {v}");
        let ct_out = out[..n].to_vec();
        let syn6 = Spec::tcp("2001:2::2", 40000, VIP_V6, 80, SYN).build();
        let (v, _, _) = call(prog, &syn6, lab.ifindex_a, &mut out)?;
        ensure!(v == REDIRECT, "seeding IPv6 SYN verdict {v}");
        let ct6_frame = Spec::tcp("2001:2::2", 40000, VIP_V6, 80, ACK).build();
        let (v, _, n) = call(prog, &ct6_frame, lab.ifindex_a, &mut out)?;
        ensure!(v == REDIRECT, "seeding IPv6 ACK verdict {v}");
        let ct6_out = out[..n].to_vec();
        let fwd = parse(&ct_out).context("forwarded frame")?;
        let reply_frame = Spec::tcp(&fwd.dst.to_string(), 8080, SNAT_V4, fwd.sport, ACK).build();
        let (v, _, n) = call(prog, &reply_frame, lab.ifindex_b, &mut out)?;
        ensure!(v == REDIRECT, "seeding reply verdict {v}");
        let reply_out = out[..n].to_vec();
        let large_frame = Spec {
            payload: vec![b'x'; 1400],
            ..Spec::tcp("198.18.0.2", 40000, &vip, 80, ACK)
        }
        .build();
        let mut big_out = vec![0u8; OUT_LEN];
        let (v, _, n) = call(prog, &large_frame, lab.ifindex_a, &mut big_out)?;
        ensure!(v == REDIRECT, "seeding large ACK verdict {v}");
        let large_out = big_out[..n].to_vec();
        Ok(Bench {
            lab,
            pass,
            vip,
            ct_frame,
            ct_out,
            ct6_frame,
            ct6_out,
            reply_frame,
            reply_out,
            large_frame,
            large_out,
            next_flow: 0,
        })
    }

    fn new_flow_frame(&mut self) -> Vec<u8> {
        let n = self.next_flow;
        self.next_flow += 1;
        flow_frame(n, &self.vip)
    }

    /// Mean kernel-measured ns per call over `calls` calls of one case.
    fn batch(&mut self, case: Case, calls: usize) -> Result<f64> {
        let prog = self.lab.prog()?;
        let mut out = vec![0u8; OUT_LEN];
        let non_vip = Spec::tcp("198.18.0.2", 40000, "198.18.0.1", 22, SYN).build();
        // The SNAT address is usually the node's own: its ssh or kubelet traffic.
        let node = Spec::tcp("198.18.0.2", 40000, SNAT_V4, 22, ACK).build();
        let mut total = Duration::ZERO;
        for _ in 0..calls {
            let (v, d, n) = match case {
                Case::Floor => {
                    let r = call(self.pass, &self.ct_frame, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        r.0 == PASS && out[..r.2] == self.ct_frame[..],
                        "floor output"
                    );
                    r
                }
                Case::NonVip => {
                    let r = call(prog, &non_vip, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        r.0 == PASS && out[..r.2] == non_vip[..],
                        "non-VIP must pass unchanged"
                    );
                    r
                }
                Case::NodeTraffic => {
                    let r = call(prog, &node, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        r.0 == PASS && out[..r.2] == node[..],
                        "node traffic must pass unchanged"
                    );
                    r
                }
                Case::ConntrackHit => {
                    let r = call(prog, &self.ct_frame, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        out[..r.2] == self.ct_out[..],
                        "conntrack hit output differs from run 1"
                    );
                    r
                }
                Case::ConntrackHitV6 => {
                    let r = call(prog, &self.ct6_frame, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        out[..r.2] == self.ct6_out[..],
                        "IPv6 conntrack hit output differs from run 1"
                    );
                    r
                }
                Case::Reply => {
                    let r = call(prog, &self.reply_frame, self.lab.ifindex_b, &mut out)?;
                    ensure!(
                        out[..r.2] == self.reply_out[..],
                        "reply output differs from run 1"
                    );
                    r
                }
                Case::FloorLarge => {
                    let r = call(self.pass, &self.large_frame, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        r.0 == PASS && out[..r.2] == self.large_frame[..],
                        "large floor output"
                    );
                    r
                }
                Case::ConntrackHitLarge => {
                    let r = call(prog, &self.large_frame, self.lab.ifindex_a, &mut out)?;
                    ensure!(
                        out[..r.2] == self.large_out[..],
                        "large conntrack hit output differs from run 1"
                    );
                    r
                }
                Case::NewFlow => {
                    let f = self.new_flow_frame();
                    let r = call(prog, &f, self.lab.ifindex_a, &mut out)?;
                    let p = parse(&out[..r.2]).context("new-flow output")?;
                    ensure!(
                        p.src.to_string() == SNAT_V4 && p.l4_csum_ok,
                        "new flow {} not translated: verdict {}, checksum ok {}, drops so far: {}",
                        self.next_flow - 1,
                        r.0,
                        p.l4_csum_ok,
                        self.drops()?
                    );
                    r
                }
            };
            ensure!(v == PASS || v == REDIRECT, "{}: verdict {v}", case.name());
            let _ = n;
            total += d;
        }
        Ok(total.as_nanos() as f64 / calls as f64)
    }

    /// The drop counters that are not zero, for error messages.
    fn drops(&self) -> Result<String> {
        let stats = self.lab.datapath.counters()?.stats()?;
        Ok(stats
            .iter()
            .filter(|(s, c)| s.is_drop() && c.packets > 0)
            .map(|(s, c)| format!("{} {}", s.name(), c.packets))
            .collect::<Vec<_>>()
            .join(", "))
    }

    /// The optimistic figure: `repeat` runs in one call (valid only where output == input).
    fn repeated(&self, case: Case, repeat: u32) -> Result<f64> {
        let (prog, frame) = match case {
            Case::Floor => (self.pass, self.ct_frame.clone()),
            Case::NonVip => (
                self.lab.prog()?,
                Spec::tcp("198.18.0.2", 40000, "198.18.0.1", 22, SYN).build(),
            ),
            _ => bail!("repeat is only valid where the program leaves the packet unchanged"),
        };
        let ctx = xdp_md(frame.len(), self.lab.ifindex_a);
        let mut out = vec![0u8; OUT_LEN];
        let mut ctx_out = [0u8; 24];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..TestRunOptions::default()
        })?;
        ensure!(r.return_value == PASS && out[..r.data_size_out as usize] == frame[..]);
        Ok(r.duration.as_nanos() as f64)
    }
}

struct Row {
    case: Case,
    raw: Vec<f64>,
    net: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// A lab with its `xdp_pass` program loaded (the floor), running `object` or this build.
fn lab_for(vips: u32, conntrack: u32, object: Option<&[u8]>) -> Result<XdpLab> {
    let ports = (1024, 65535);
    let mut lab = match object {
        Some(o) => XdpLab::with_object(&services(vips), vips + 1, conntrack, ports, o)?,
        None => XdpLab::with_ports(&services(vips), vips + 1, conntrack, ports)?,
    };
    lab.add_backend_neighbours(BACKENDS)?;
    let pass: &mut Xdp = lab
        .datapath
        .ebpf_mut()
        .program_mut("xdp_pass")
        .context("xdp_pass")?
        .try_into()?;
    pass.load()?;
    Ok(lab)
}

fn pass_of(lab: &XdpLab) -> Result<&Xdp> {
    Ok(lab
        .datapath
        .ebpf()
        .program("xdp_pass")
        .context("xdp_pass")?
        .try_into()?)
}

/// One build under test in a configuration: its lab, its bench and its results.
struct Side<'a> {
    lab: &'a XdpLab,
    bench: Bench<'a>,
    rows: Vec<Row>,
}

impl<'a> Side<'a> {
    /// Fills conntrack with `prefill` distinct flows through the program itself, then seeds
    /// the bench flows (a second later: in a full table a flow's place is safe only while
    /// others have been quiet longer).
    fn new(lab: &'a XdpLab, vip: &str, prefill: u32) -> Result<Self> {
        let _ns = lab.ns.enter()?;
        let prog = lab.prog()?;
        let mut out = vec![0u8; OUT_LEN];
        let mut refused = 0u32;
        for n in 0..prefill {
            if call(prog, &flow_frame(n, vip), lab.ifindex_a, &mut out)?.0 != REDIRECT {
                refused += 1;
            }
        }
        if prefill > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let mut bench = Bench::new(lab, pass_of(lab)?, vip.to_string())?;
        bench.next_flow = prefill;
        ensure!(
            refused == 0,
            "{refused} of {prefill} prefill flows were not forwarded: {}",
            bench.drops()?
        );
        let rows = Case::ALL
            .iter()
            .map(|c| Row {
                case: *c,
                raw: vec![],
                net: vec![],
            })
            .collect();
        Ok(Side { lab, bench, rows })
    }

    /// One batch of case `case_idx`, net of this batch's floor (floors run first).
    fn batch_case(&mut self, case_idx: usize, calls: usize, floors: &mut (f64, f64)) -> Result<()> {
        let _ns = self.lab.ns.enter()?;
        let row = &mut self.rows[case_idx];
        let ns = self.bench.batch(row.case, calls)?;
        match row.case {
            Case::Floor => floors.0 = ns,
            Case::FloorLarge => floors.1 = ns,
            _ => {}
        }
        row.raw.push(ns);
        // The large packet is copied in and out of the test run: its own floor.
        row.net.push(if row.case == Case::ConntrackHitLarge {
            ns - floors.1
        } else {
            ns - floors.0
        });
        Ok(())
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)))
}

fn run_config(
    label: &str,
    vips: u32,
    conntrack: u32,
    prefill: u32,
    a: &Args,
    baseline: Option<&[u8]>,
) -> Result<Vec<Row>> {
    eprintln!(
        "==> {label}: {vips} VIPs, conntrack capacity {conntrack}, prefilling {prefill} flows"
    );
    let mut lab = lab_for(vips, conntrack, None)?;
    let _edge = a.edge.then(|| with_edge(&mut lab)).transpose()?;
    let base_lab = if a.edge {
        Some(lab_for(vips, conntrack, None)?)
    } else {
        baseline
            .map(|o| lab_for(vips, conntrack, Some(o)))
            .transpose()?
    };
    let last = vips - 1;
    let vip = format!("198.19.{}.{}", last / 250, last % 250 + 1);
    let mut this = Side::new(&lab, &vip, prefill)?;
    let mut base = base_lab
        .as_ref()
        .map(|l| Side::new(l, &vip, prefill))
        .transpose()?;
    for b in 0..a.batches {
        let (mut f_this, mut f_base) = ((0.0, 0.0), (0.0, 0.0));
        for i in 0..Case::ALL.len() {
            // Builds alternate which goes first, so a drift within a batch cancels out.
            match base.as_mut() {
                Some(base) if b % 2 == 1 => {
                    base.batch_case(i, a.calls, &mut f_base)?;
                    this.batch_case(i, a.calls, &mut f_this)?;
                }
                Some(base) => {
                    this.batch_case(i, a.calls, &mut f_this)?;
                    base.batch_case(i, a.calls, &mut f_base)?;
                }
                None => this.batch_case(i, a.calls, &mut f_this)?,
            }
        }
        eprintln!("    batch {}/{} done", b + 1, a.batches);
    }
    println!(
        "\n{label} ({} calls per batch, {} batches, mean of kernel-measured ns per call):",
        a.calls, a.batches
    );
    println!(
        "{:<30} {:>9} {:>9} {:>19}",
        "case", "raw ns", "net ns", "net min..max"
    );
    for r in &this.rows {
        let (lo, hi) = min_max(&r.net);
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>9.1}..{:<9.1}",
            r.case.name(),
            median(&r.raw),
            median(&r.net),
            lo,
            hi
        );
    }
    println!("* net of the XDP_PASS program timed on the same 1454-byte frame");
    if let Some(base) = &base {
        println!(
            "\nthis build against the baseline object, same batches (net ns; ratio = this / \
             baseline per batch, median and min..max over batches):"
        );
        println!(
            "{:<30} {:>9} {:>9} {:>7} {:>15}",
            "case", "this", "baseline", "ratio", "min..max"
        );
        for (t, bl) in this.rows.iter().zip(&base.rows) {
            if matches!(t.case, Case::Floor | Case::FloorLarge) {
                continue;
            }
            let ratios: Vec<f64> = t
                .net
                .iter()
                .zip(&bl.net)
                .map(|(x, y)| x / y.max(1.0))
                .collect();
            let (lo, hi) = min_max(&ratios);
            println!(
                "{:<30} {:>9.1} {:>9.1} {:>7.3} {:>7.3}..{:<7.3}",
                t.case.name(),
                median(&t.net),
                median(&bl.net),
                median(&ratios),
                lo,
                hi
            );
        }
    }
    let _ns = lab.ns.enter()?;
    let floor_rep = this.bench.repeated(Case::Floor, 100_000)?;
    let nonvip_rep = this.bench.repeated(Case::NonVip, 100_000)?;
    println!(
        "optimistic (repeat=100000, output == input): floor {floor_rep:.1} ns, non-VIP {nonvip_rep:.1} ns, net {:.1} ns",
        nonvip_rep - floor_rep
    );
    Ok(this.rows)
}

/// Edge protection as an operator would configure it: a block list of 1,000 prefixes (none
/// of them the bench's sources), a SYN rate no bench source reaches, and a listener on the
/// node address the non-VIP case talks to (another port), so that case pays the port check.
fn with_edge(lab: &mut XdpLab) -> Result<EdgeApplier<AyaEdgeWriter>> {
    let block: Vec<ipnet::IpNet> = (0..1000u32)
        .map(|i| format!("100.{}.{}.0/24", 64 + i / 256, i % 256).parse())
        .collect::<Result<Vec<_>, _>>()?;
    let settings = EdgeSettings {
        syn_rate: Some(SynRate {
            per_second: 1_000_000_000,
            burst: 1_000_000_000,
        }),
        listeners: vec!["198.18.0.1:443".parse()?],
    };
    let mut edge = EdgeApplier::new(lab.datapath.edge_writer()?, settings)?;
    edge.apply(&lab.applier.vip_ids(), &block)?;
    Ok(edge)
}

/// Conntrack capacity that holds `flows` entries without evicting: a table gets twice the
/// slots of its capacity, and the margin keeps bucket overflow out of the measured runs.
fn capacity_for(flows: u32) -> u32 {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u32;
    flows
        .saturating_add(flows / 8)
        .saturating_add(4096)
        .saturating_add(256 * cpus)
}

fn main() -> Result<()> {
    let a = args()?;
    // One CPU for every call: the same scratch slot and free-entry batch each time, and the
    // other core free for the rest of the machine.
    tests::bench::pin_to_cpu(aya::util::nr_cpus().map_or(0, |n| n.saturating_sub(1)))?;
    if let Some(case) = a.profile {
        let lab = lab_for(1, capacity_for(a.profile_calls as u32), None)?;
        let pass = pass_of(&lab)?;
        let mut bench = Bench::new(&lab, pass, "198.19.0.1".into())?;
        let ns = bench.batch(case, a.profile_calls)?;
        println!(
            "{}: {ns:.1} ns raw per call over {} calls",
            case.name(),
            a.profile_calls
        );
        return Ok(());
    }
    let baseline = match &a.baseline {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            // ELF parsing reads 8-byte fields in place; the allocator aligns to 16.
            ensure!(
                (bytes.as_ptr() as usize).is_multiple_of(8),
                "object buffer not aligned"
            );
            Some(bytes)
        }
        None => None,
    };
    let baseline = baseline.as_deref();
    // New flows created by the timed batches also stay in the table.
    let timed_flows = (a.calls * a.batches) as u32;
    if a.edge {
        println!("edge protection on (this) against off (baseline), same build:");
        run_config("1 VIP", 1, capacity_for(timed_flows), 0, &a, None)?;
        return Ok(());
    }
    let small = run_config("1 VIP", 1, capacity_for(timed_flows), 0, &a, baseline)?;
    let big = run_config(
        &format!("{} VIPs, {} conntrack entries", a.big_vips, a.big_conntrack),
        a.big_vips,
        capacity_for(a.big_conntrack.saturating_add(timed_flows)),
        a.big_conntrack,
        &a,
        baseline,
    )?;
    // Steady state: flows are never deleted when they close, only evicted, so after about
    // twice the capacity of new flows every bucket is full and each new flow evicts one.
    let full = if a.full_table > 0 {
        // The timed new flows evict at most half of the table: the seeded flows (newer than
        // the prefill) keep their places.
        let capacity = a.full_table.max(timed_flows.saturating_mul(2));
        let rows = run_config(
            &format!("1 VIP, full table of capacity {capacity}"),
            1,
            capacity,
            capacity.saturating_mul(3),
            &a,
            baseline,
        )?;
        Some(rows)
    } else {
        None
    };
    println!("\nflatness (large / small, net ns; target within 1.10):");
    for (s, b) in small.iter().zip(&big) {
        if matches!(s.case, Case::Floor | Case::FloorLarge) {
            continue;
        }
        println!(
            "{:<30} {:>6.2}",
            s.case.name(),
            median(&b.net) / median(&s.net).max(1.0)
        );
    }
    if let Some(full) = full {
        println!("\nfull table / 1 VIP (net ns):");
        for (s, f) in small.iter().zip(&full) {
            if matches!(s.case, Case::Floor | Case::FloorLarge) {
                continue;
            }
            println!(
                "{:<30} {:>6.2}",
                s.case.name(),
                median(&f.net) / median(&s.net).max(1.0)
            );
        }
    }
    Ok(())
}
