//! Kernel counters on `/metrics`: verdicts and drop reasons, traffic per VIP, conntrack size.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use ingress_common::l4::PROTO_UDP;

use super::MetricsSource;
use crate::{apply::maps::words_addr, maps::pinned::PinnedMaps};

/// How long a conntrack count is reused: counting walks the map key by key.
const CONNTRACK_TTL: Duration = Duration::from_secs(30);
const COUNT_LIMIT: usize = 4_000_000;

/// Renders the kernel counters from the pinned maps.
pub struct KernelMetrics {
    maps: PinnedMaps,
    /// vip id -> "addr:port/proto", refreshed on every render from the VIP map.
    names: ArcSwap<Vec<(u32, String)>>,
    conntrack: Mutex<Option<(Instant, usize)>>,
}

impl std::fmt::Debug for KernelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMetrics")
            .field("dir", &self.maps.dir)
            .finish()
    }
}

impl KernelMetrics {
    /// Reads the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &std::path::Path) -> Result<Arc<Self>, crate::maps::MapError> {
        Ok(Arc::new(KernelMetrics {
            maps: PinnedMaps::open(pin_dir)?,
            names: ArcSwap::from_pointee(Vec::new()),
            conntrack: Mutex::new(None),
        }))
    }

    fn conntrack(&self) -> usize {
        let mut cached = self.conntrack.lock().unwrap_or_else(|e| e.into_inner());
        match *cached {
            Some((at, n)) if at.elapsed() < CONNTRACK_TTL => n,
            _ => {
                let n = self.maps.conntrack_count(COUNT_LIMIT);
                *cached = Some((Instant::now(), n));
                n
            }
        }
    }
}

// Safe to share: aya map handles are file descriptors; reads do not mutate them.
impl MetricsSource for KernelMetrics {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ingress_xdp_packets_total Packets seen by the XDP program, by outcome."
        );
        let _ = writeln!(out, "# TYPE ingress_xdp_packets_total counter");
        let stats = self.maps.counters.stats().unwrap_or_default();
        for (s, c) in &stats {
            let _ = writeln!(
                out,
                "ingress_xdp_packets_total{{outcome=\"{}\"}} {}",
                s.name(),
                c.packets
            );
        }
        let _ = writeln!(
            out,
            "# HELP ingress_xdp_bytes_total Bytes seen by the XDP program, by outcome."
        );
        let _ = writeln!(out, "# TYPE ingress_xdp_bytes_total counter");
        for (s, c) in &stats {
            let _ = writeln!(
                out,
                "ingress_xdp_bytes_total{{outcome=\"{}\"}} {}",
                s.name(),
                c.bytes
            );
        }
        if let Ok(vips) = self.maps.vips() {
            let names: Vec<(u32, String)> = vips
                .iter()
                .map(|v| {
                    let proto = if v.key.proto == PROTO_UDP {
                        "udp"
                    } else {
                        "tcp"
                    };
                    let ep = SocketAddr::new(
                        words_addr(v.key.addr, v.key.family),
                        u16::from_be(v.key.port),
                    );
                    (v.meta.id, format!("{ep}/{proto}"))
                })
                .collect();
            self.names.store(Arc::new(names));
        }
        let _ = writeln!(
            out,
            "# HELP ingress_xdp_vip_packets_total Packets forwarded for a VIP (both directions)."
        );
        let _ = writeln!(out, "# TYPE ingress_xdp_vip_packets_total counter");
        let names = self.names.load();
        let mut bytes = String::new();
        for (id, name) in names.iter() {
            if let Ok(c) = self.maps.counters.vip(*id) {
                let _ = writeln!(
                    out,
                    "ingress_xdp_vip_packets_total{{vip=\"{name}\"}} {}",
                    c.packets
                );
                let _ = writeln!(
                    bytes,
                    "ingress_xdp_vip_bytes_total{{vip=\"{name}\"}} {}",
                    c.bytes
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ingress_xdp_vip_bytes_total Bytes forwarded for a VIP (both directions)."
        );
        let _ = writeln!(out, "# TYPE ingress_xdp_vip_bytes_total counter");
        out.push_str(&bytes);
        let _ = writeln!(
            out,
            "# HELP ingress_xdp_conntrack_entries Flows in the conntrack map (sampled every 30 s)."
        );
        let _ = writeln!(out, "# TYPE ingress_xdp_conntrack_entries gauge");
        let _ = writeln!(out, "ingress_xdp_conntrack_entries {}", self.conntrack());
    }
}
