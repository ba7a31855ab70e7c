//! A lab for running the XDP program through `BPF_PROG_TEST_RUN` with real route and neighbour
//! lookups: a namespace with a veth pair, routes, static neighbours, and the L4 maps programmed
//! through the real applier.
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use ingress::{
    apply::maps::{FlowTimeouts, L4Applier, SnatSettings},
    maps::{
        loader::{Datapath, LoaderOptions},
        writer::AyaMapWriter,
    },
    snapshot::{L4Protocol, L4Service, ObjectRef},
};

use crate::netns::{NetNs, NsGuard};

/// MAC of the client-facing interface `a`.
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
/// MAC of the backend-facing interface `b`.
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x01];
/// The client's MAC (static neighbour on `a`).
pub const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Backend MACs (static neighbours on `b`), by last address byte.
pub fn mac_backend(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, last]
}
/// MAC of the one-armed backend 198.18.0.3 on `a`.
pub const MAC_ONE_ARMED: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// SNAT addresses used by the lab.
pub const SNAT_V4: &str = "198.18.255.1";
/// IPv6 SNAT address.
pub const SNAT_V6: &str = "2001:2:ff::1";

/// The lab's services: VIP, port, protocol, backends.
pub fn lab_services() -> Vec<L4Service> {
    let svc = |vip: &str, port, protocol, backends: &[&str]| L4Service {
        origin: ObjectRef {
            kind: "ConfigMap",
            namespace: "lab".into(),
            name: "tcp-services".into(),
        },
        vip: vip.parse().expect("lab address"),
        port,
        protocol,
        backends: backends
            .iter()
            .map(|b| b.parse::<SocketAddr>().expect("lab address"))
            .collect(),
    };
    vec![
        svc(
            "198.19.0.10",
            80,
            L4Protocol::Tcp,
            &["198.18.1.2:8080", "198.18.1.3:8080"],
        ),
        svc("198.19.0.10", 53, L4Protocol::Udp, &["198.18.1.2:5353"]),
        svc("198.19.0.11", 80, L4Protocol::Tcp, &["198.18.0.3:8080"]),
        svc("198.19.0.12", 80, L4Protocol::Tcp, &[]),
        svc("198.19.0.13", 80, L4Protocol::Tcp, &["198.18.1.4:80"]),
        svc(
            "2001:2:ff::10",
            80,
            L4Protocol::Tcp,
            &["[2001:2:1::2]:8080"],
        ),
    ]
}

/// A loaded program inside a namespace, with maps programmed.
pub struct XdpLab {
    pub datapath: Datapath,
    pub applier: L4Applier<AyaMapWriter>,
    pub ifindex_a: u32,
    pub ifindex_b: u32,
    // Field order matters: leave the namespace before deleting it.
    _guard: NsGuard,
    pub ns: NetNs,
}

/// Interface index inside `ns` (sysfs of the test process shows the host's interfaces).
pub fn ifindex(ns: &NetNs, name: &str) -> Result<u32> {
    let text = ns
        .run(&format!("cat /sys/class/net/{name}/ifindex"))
        .with_context(|| format!("ifindex of {name}"))?;
    Ok(text.trim().parse()?)
}

impl XdpLab {
    /// Builds the namespace, loads the program (private maps) and applies `services`. The
    /// calling thread stays inside the namespace until the lab drops.
    pub fn new(services: &[L4Service], max_vips: u32, conntrack: u32) -> Result<Self> {
        Self::with_ports(services, max_vips, conntrack, (20000, 29999))
    }

    /// Like [`XdpLab::new`] with a chosen SNAT port range.
    pub fn with_ports(
        services: &[L4Service],
        max_vips: u32,
        conntrack: u32,
        ports: (u16, u16),
    ) -> Result<Self> {
        Self::with_build(services, max_vips, conntrack, ports, None)
    }

    /// Like [`XdpLab::with_ports`] running another build of the kernel object (`object`: the
    /// ELF bytes), e.g. a baseline timed against this build.
    pub fn with_object(
        services: &[L4Service],
        max_vips: u32,
        conntrack: u32,
        ports: (u16, u16),
        object: &[u8],
    ) -> Result<Self> {
        Self::with_build(services, max_vips, conntrack, ports, Some(object))
    }

    fn with_build(
        services: &[L4Service],
        max_vips: u32,
        conntrack: u32,
        ports: (u16, u16),
        object: Option<&[u8]>,
    ) -> Result<Self> {
        let timeouts = FlowTimeouts::default();
        Self::build(
            services, max_vips, conntrack, ports, timeouts, false, object,
        )
    }

    /// Like [`XdpLab::with_ports`] with chosen flow timeouts (when SNAT ports are reused).
    pub fn with_timeouts(
        services: &[L4Service],
        ports: (u16, u16),
        timeouts: FlowTimeouts,
    ) -> Result<Self> {
        Self::build(services, 16, 4096, ports, timeouts, false, None)
    }

    /// Like [`XdpLab::new`] with the kernel programs' log statements turned on.
    pub fn with_kernel_log(services: &[L4Service]) -> Result<Self> {
        let timeouts = FlowTimeouts::default();
        Self::build(services, 16, 4096, (20000, 29999), timeouts, true, None)
    }

    fn build(
        services: &[L4Service],
        max_vips: u32,
        conntrack: u32,
        ports: (u16, u16),
        timeouts: FlowTimeouts,
        kernel_log: bool,
        object: Option<&[u8]>,
    ) -> Result<Self> {
        crate::netns::require_privileges()?;
        let ns = NetNs::new("xl")?;
        for cmd in [
            "ip link add name xa type veth peer name xb",
            "ip link set xa address 02:00:00:00:aa:01",
            "ip link set xb address 02:00:00:00:bb:01",
            "ip link set xa up",
            "ip link set xb up",
            "ip addr add 198.18.0.1/24 dev xa",
            "ip addr add 198.18.1.1/24 dev xb",
            "ip addr add 2001:2::1/64 dev xa nodad",
            "ip addr add 2001:2:1::1/64 dev xb nodad",
            "sysctl -qw net.ipv4.ip_forward=1",
            "sysctl -qw net.ipv6.conf.all.forwarding=1",
            "ip neigh add 198.18.0.2 lladdr 02:00:00:00:00:02 dev xa nud permanent",
            "ip neigh add 198.18.0.3 lladdr 02:00:00:00:00:03 dev xa nud permanent",
            "ip neigh add 198.18.1.2 lladdr 02:00:00:00:01:02 dev xb nud permanent",
            "ip neigh add 198.18.1.3 lladdr 02:00:00:00:01:03 dev xb nud permanent",
            "ip neigh add 2001:2::2 lladdr 02:00:00:00:00:02 dev xa nud permanent",
            "ip neigh add 2001:2:1::2 lladdr 02:00:00:00:01:02 dev xb nud permanent",
        ] {
            ns.run(cmd)?;
        }
        let ifindex_a = ifindex(&ns, "xa")?;
        let ifindex_b = ifindex(&ns, "xb")?;
        let guard = ns.enter()?;
        let opts = LoaderOptions {
            pin_dir: None,
            max_vips,
            conntrack_entries: conntrack,
            kernel_log,
        };
        let mut datapath = match object {
            Some(o) => Datapath::load_object(&opts, o)?,
            None => Datapath::load(&opts)?,
        };
        let writer = datapath.map_writer()?;
        let snat = SnatSettings {
            v4: Some(SNAT_V4.parse()?),
            v6: Some(SNAT_V6.parse()?),
            port_min: ports.0,
            port_max: ports.1,
            timeouts,
        };
        let mut applier = L4Applier::new(writer, snat)?;
        let report = applier.apply(services)?;
        if !report.skipped.is_empty() {
            bail!("lab services skipped: {:?}", report.skipped);
        }
        Ok(XdpLab {
            datapath,
            applier,
            ifindex_a,
            ifindex_b,
            _guard: guard,
            ns,
        })
    }

    /// Adds static neighbours for backends 198.18.1.2 ..= 198.18.1.(n+1) on `xb`.
    pub fn add_backend_neighbours(&self, n: u8) -> Result<()> {
        let mut batch = String::new();
        for i in 4..n.saturating_add(2) {
            batch.push_str(&format!(
                "neigh replace 198.18.1.{i} lladdr 02:00:00:00:01:{i:02x} dev xb nud permanent\n"
            ));
        }
        let path = std::env::temp_dir().join(format!("{}.neigh", self.ns.name));
        std::fs::write(&path, batch)?;
        let res = self.ns.run(&format!("ip -batch {}", path.display()));
        let _ = std::fs::remove_file(&path);
        res.map(|_| ())
    }

    /// The XDP program.
    pub fn prog(&self) -> Result<&Xdp> {
        Ok(self.datapath.xdp()?)
    }

    /// Runs one frame arriving on `ifindex`; returns the verdict and the frame as left.
    pub fn run(&self, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>)> {
        run_once(self.prog()?, frame, ifindex)
    }
}

/// Runs `prog` once on `frame` as if received on `ifindex` (0: loopback default).
pub fn run_once(prog: &Xdp, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = xdp_md(frame.len(), ifindex);
    let mut ctx_out = [0u8; 24];
    let res = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: if ifindex == 0 { None } else { Some(&ctx) },
        ctx_out: if ifindex == 0 {
            None
        } else {
            Some(&mut ctx_out)
        },
        ..TestRunOptions::default()
    })?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// An `xdp_md` for test runs: data at 0, data_end at `len`, the given ingress interface.
pub fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}
