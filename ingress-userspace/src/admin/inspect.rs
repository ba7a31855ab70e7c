//! `ingressd inspect`: the live kernel state in human terms, read from the pinned maps.
use std::{fmt::Write as _, net::SocketAddr, path::Path};

use ingress_common::{
    conntrack::{SEEN_FIN, SEEN_RST, SEEN_SECS},
    l4::{LbConfig, MAGLEV_RING_SIZE, PROTO_UDP},
};

use crate::{
    apply::maps::{backend_addr, vip_addr, words_addr},
    maps::{pinned::PinnedMaps, MapError},
};

/// Conntrack entries counted at most (counting walks the map key by key).
const COUNT_LIMIT: usize = 4_000_000;

fn snat_line(cfg: &LbConfig) -> String {
    let v4 = if cfg.snat_v4 == 0 {
        "-".to_string()
    } else {
        words_addr([cfg.snat_v4, 0, 0, 0], 2).to_string()
    };
    let v6 = if cfg.snat_v6 == [0; 4] {
        "-".to_string()
    } else {
        words_addr(cfg.snat_v6, 10).to_string()
    };
    let max = u32::from(cfg.port_min) + u32::from(cfg.port_count).saturating_sub(1);
    format!(
        "SNAT {v4} / {v6}, ports {}-{max}, {}; a port is reused after close {} s, \
         time-wait {} s, established {} s, udp {} s, unreplied {} s",
        cfg.port_min,
        if cfg.ready != 0 {
            "ready"
        } else {
            "not ready (VIP traffic passed to the stack)"
        },
        cfg.tcp_close_secs,
        cfg.tcp_time_wait_secs,
        cfg.tcp_established_secs,
        cfg.udp_secs,
        cfg.unreplied_secs,
    )
}

/// The kernel's clock for flow liveness (`bpf_ktime_get_coarse_ns`), in `SEEN_SECS` units.
fn kernel_secs_now() -> u32 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64 & u64::from(SEEN_SECS)) as u32
}

/// A flow direction's liveness as `seen` records it: "seen 12 s ago, fin".
fn liveness(seen: u32, now: u32) -> String {
    let mut s = format!("seen {} s ago", now.wrapping_sub(seen) & SEEN_SECS);
    if seen & SEEN_FIN != 0 {
        s.push_str(", fin");
    }
    if seen & SEEN_RST != 0 {
        s.push_str(", rst");
    }
    s
}

/// Prefixes and destinations listed before the rest is summed up.
const EDGE_LIST_LIMIT: usize = 20;

/// What edge protection guards and enforces.
fn edge_section(out: &mut String, maps: &Path) -> Result<(), MapError> {
    use crate::maps::edge::{AyaEdgeWriter, EdgeWriter};
    let edge = AyaEdgeWriter::from_pins(maps)?;
    let cfg = edge.config()?;
    let dests = edge.read_dests()?;
    let blocked = edge.read_blocked()?;
    let rate = if cfg.syn_interval_ns == 0 {
        "no SYN rate limit".to_string()
    } else {
        let per_second = 1e9 / cfg.syn_interval_ns as f64;
        let burst = cfg.syn_tolerance_ns / cfg.syn_interval_ns + 1;
        format!("SYN rate {per_second:.0}/s per source, burst {burst}")
    };
    let _ = writeln!(
        out,
        "\nedge: {} guarded destinations, {} blocked prefixes, {rate}",
        dests.len(),
        blocked.len()
    );
    for (k, d) in dests.iter().take(EDGE_LIST_LIMIT) {
        let what = if d.vip_id == ingress_common::edge::EDGE_LISTENER {
            "listener".to_string()
        } else {
            format!("VIP #{}", d.vip_id)
        };
        let proto = if k.proto == PROTO_UDP { "udp" } else { "tcp" };
        let _ = writeln!(out, "  guarded {}/{proto}  ({what})", vip_addr(k));
    }
    for net in blocked.iter().take(EDGE_LIST_LIMIT) {
        let _ = writeln!(out, "  blocked {net}");
    }
    let more =
        dests.len().saturating_sub(EDGE_LIST_LIMIT) + blocked.len().saturating_sub(EDGE_LIST_LIMIT);
    if more > 0 {
        let _ = writeln!(out, "  ... and {more} more");
    }
    Ok(())
}

/// Builds the report for the maps pinned under `pin_dir`; lists up to `flows` conntrack
/// entries.
pub fn report(pin_dir: &Path, flows: usize) -> Result<String, MapError> {
    let maps = PinnedMaps::open(pin_dir)?;
    let mut out = String::new();
    let _ = writeln!(out, "kernel state in {}", maps.dir.display());
    let _ = writeln!(out, "{}", snat_line(&maps.config()?));
    let vips = maps.vips()?;
    let _ = writeln!(out, "\nVIPs: {}", vips.len());
    for v in &vips {
        let proto = if v.key.proto == PROTO_UDP {
            "udp"
        } else {
            "tcp"
        };
        let c = maps.counters.vip(v.meta.id)?;
        let _ = writeln!(
            out,
            "  #{:<4} {}/{proto}  backends {}  packets {}  bytes {}",
            v.meta.id,
            vip_addr(&v.key),
            v.meta.backends,
            c.packets,
            c.bytes
        );
        for (b, slots) in &v.spread {
            let ep = backend_addr(b);
            let pct = f64::from(*slots) * 100.0 / f64::from(MAGLEV_RING_SIZE);
            let _ = writeln!(
                out,
                "         -> {ep:<28} {slots:>6} Maglev slots ({pct:5.2}%)"
            );
        }
    }
    let mut retired = maps.retired()?;
    retired.sort();
    if !retired.is_empty() {
        let _ = writeln!(
            out,
            "\nendpoints gone from UDP VIPs (their flows move): {}",
            retired.len()
        );
    }
    for r in retired.iter().take(EDGE_LIST_LIMIT) {
        let (vip, ep) = (vip_addr(&r.vip), backend_addr(&r.backend));
        let _ = writeln!(out, "  {vip}/udp  -x {ep}");
    }
    if retired.len() > EDGE_LIST_LIMIT {
        let _ = writeln!(out, "  ... and {} more", retired.len() - EDGE_LIST_LIMIT);
    }
    let n = maps.conntrack_count(COUNT_LIMIT);
    let _ = writeln!(
        out,
        "\nconntrack: {n} flows{}",
        if n >= COUNT_LIMIT { " (or more)" } else { "" }
    );
    let now = kernel_secs_now();
    for (k, nat) in maps.conntrack(flows) {
        let _ = writeln!(
            out,
            "  {} -> {}  via {} -> {}  ({})",
            SocketAddr::new(words_addr(k.src, k.family), u16::from_be(k.sport)),
            SocketAddr::new(words_addr(k.dst, k.family), u16::from_be(k.dport)),
            SocketAddr::new(words_addr(nat.snat, k.family), u16::from_be(nat.snat_port)),
            SocketAddr::new(
                words_addr(nat.backend, k.family),
                u16::from_be(nat.backend_port)
            ),
            liveness(nat.seen, now),
        );
    }
    edge_section(&mut out, &maps.dir)?;
    let _ = writeln!(out, "\ncounters (packets, bytes, all CPUs):");
    for (stat, c) in maps.counters.stats()? {
        if c.packets > 0 {
            let _ = writeln!(
                out,
                "  {:<18} {:>12} {:>14}",
                stat.name(),
                c.packets,
                c.bytes
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reads_age_and_close_bits() {
        assert_eq!(liveness(100, 112), "seen 12 s ago");
        assert_eq!(liveness(100 | SEEN_FIN, 100), "seen 0 s ago, fin");
        assert_eq!(
            liveness(5 | SEEN_FIN | SEEN_RST, 7),
            "seen 2 s ago, fin, rst"
        );
        // The seconds wrap in 30 bits.
        assert_eq!(liveness(SEEN_SECS, 1), "seen 2 s ago");
    }
}
