//! Edge applier: keeps the kernel's edge protection (blocked sources, the SYN rate limit, and
//! the destinations they guard) in line with the settings and the current VIPs, by diff.
//!
//! Guarded destinations are the node's HTTP and HTTPS listeners and every L4 VIP. With no
//! block list and no rate limit nothing is guarded, and the kernel's fast path pays nothing.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use ingress_common::{
    edge::{
        edge_addr_filter_bit, edge_filter_bit, EdgeConfig, EdgeDest, EDGE_FILTER_BITS,
        EDGE_LISTENER,
    },
    l4::{VipKey, PROTO_TCP},
};
use ipnet::IpNet;
use tracing::{debug, warn};

use super::maps::{bitmap, dest_key, ApplyError};
use crate::maps::edge::EdgeWriter;

/// New TCP connections allowed per source address (an IPv6 /64) per second, and how many may
/// come at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynRate {
    pub per_second: u32,
    pub burst: u32,
}

/// What the flags ask the edge to do (the block list comes with each snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeSettings {
    /// The per-source SYN limit, if any.
    pub syn_rate: Option<SynRate>,
    /// The node's TCP listeners (exact addresses) guarded besides the VIPs.
    pub listeners: Vec<SocketAddr>,
}

impl EdgeSettings {
    /// The kernel's form of the SYN limit (zero: none).
    pub fn kernel_config(&self) -> EdgeConfig {
        match self.syn_rate {
            Some(r) if r.per_second > 0 => {
                let interval = Duration::from_secs(1) / r.per_second;
                let interval_ns = interval.as_nanos() as u64;
                EdgeConfig {
                    syn_interval_ns: interval_ns.max(1),
                    syn_tolerance_ns: interval_ns.saturating_mul(u64::from(r.burst.max(1) - 1)),
                }
            }
            _ => EdgeConfig::default(),
        }
    }
}

/// Owns the edge maps.
pub struct EdgeApplier<W: EdgeWriter> {
    writer: W,
    settings: EdgeSettings,
    /// Destinations as last written (or adopted from pinned maps).
    dests: BTreeMap<VipKey, EdgeDest>,
    /// Blocked prefixes as last written (or adopted), truncated.
    blocked: BTreeSet<IpNet>,
    /// Prefilter words as last written (`None` until the first write after start).
    filter: Option<Vec<u64>>,
}

fn listener_key(addr: &SocketAddr) -> VipKey {
    dest_key(*addr, PROTO_TCP)
}

impl<W: EdgeWriter> EdgeApplier<W> {
    /// Writes the rate setting and adopts the block list and guarded destinations pinned maps
    /// hold: a restart keeps blocking until its first apply says otherwise.
    pub fn new(mut writer: W, settings: EdgeSettings) -> Result<Self, ApplyError> {
        writer.write_config(&settings.kernel_config())?;
        let blocked = writer.read_blocked()?;
        let dests = writer.read_dests()?.into_iter().collect();
        Ok(EdgeApplier {
            writer,
            settings,
            dests,
            blocked,
            filter: None,
        })
    }

    /// The writer, e.g. to inspect a fake in tests.
    pub fn writer(&self) -> &W {
        &self.writer
    }

    /// Makes the prefilter mark exactly `keys` (and their addresses).
    fn write_filter(&mut self, keys: &[VipKey]) -> Result<(), ApplyError> {
        let words = bitmap(
            EDGE_FILTER_BITS,
            keys.iter().flat_map(|k| {
                [
                    edge_filter_bit(&k.addr, k.port, k.proto),
                    edge_addr_filter_bit(&k.addr),
                ]
            }),
        );
        if self.filter.as_ref() != Some(&words) {
            self.writer.write_filter(&words)?;
            self.filter = Some(words);
        }
        Ok(())
    }

    /// Gives the writer back, e.g. to start over with other settings on the same maps, as a
    /// restart adopting pinned maps does.
    pub fn into_writer(self) -> W {
        self.writer
    }

    /// Blocks exactly `block` and guards the listeners and `vips` (each with its id), and
    /// nothing else; returns how many destinations were added, changed or removed.
    pub fn apply(&mut self, vips: &[(VipKey, u32)], block: &[IpNet]) -> Result<usize, ApplyError> {
        // New prefixes go in before the destinations they are to guard; leaving ones after.
        let wanted: BTreeSet<IpNet> = block.iter().map(IpNet::trunc).collect();
        for net in wanted
            .difference(&self.blocked)
            .copied()
            .collect::<Vec<_>>()
        {
            self.writer.block(&net)?;
            self.blocked.insert(net);
        }
        let changed =
            self.apply_dests(vips, !wanted.is_empty() || self.settings.syn_rate.is_some())?;
        for net in self
            .blocked
            .difference(&wanted)
            .copied()
            .collect::<Vec<_>>()
        {
            self.writer.unblock(&net)?;
            self.blocked.remove(&net);
        }
        Ok(changed)
    }

    fn apply_dests(&mut self, vips: &[(VipKey, u32)], enabled: bool) -> Result<usize, ApplyError> {
        let mut desired: BTreeMap<VipKey, EdgeDest> = BTreeMap::new();
        if enabled {
            for l in &self.settings.listeners {
                desired.insert(
                    listener_key(l),
                    EdgeDest {
                        vip_id: EDGE_LISTENER,
                        _pad: 0,
                    },
                );
            }
            // A VIP on a listener's address and port takes it over: its packets must reach
            // the balancer.
            for (key, id) in vips {
                desired.insert(
                    *key,
                    EdgeDest {
                        vip_id: *id,
                        _pad: 0,
                    },
                );
            }
        }
        let mut changed = 0;
        // Bits are set after their entries are written and cleared before their entries go:
        // a packet the prefilter sends to the edge program always finds what it is. Leaving
        // entries go first, so a full map has room for the new ones.
        let leaving: Vec<VipKey> = self
            .dests
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        if !leaving.is_empty() {
            let staying: Vec<VipKey> = self
                .dests
                .keys()
                .filter(|k| desired.contains_key(k))
                .copied()
                .collect();
            self.write_filter(&staying)?;
            for key in &leaving {
                self.writer.remove_dest(key)?;
                self.dests.remove(key);
                changed += 1;
            }
        }
        let mut unwritten = Vec::new();
        for (key, dest) in &desired {
            if self.dests.get(key) != Some(dest) {
                // One destination that cannot be written (a pinned map smaller than the VIP
                // capacity now asks for) leaves that one unguarded, not the rest, and not the
                // L4 tables unapplied; it is tried again at the next apply.
                match self.writer.put_dest(key, dest) {
                    Ok(()) => changed += 1,
                    Err(e) => {
                        warn!(error = %e, "edge protection: a destination left unguarded");
                        unwritten.push(*key);
                    }
                }
            }
        }
        for key in &unwritten {
            desired.remove(key);
        }
        let keys: Vec<VipKey> = desired.keys().copied().collect();
        self.write_filter(&keys)?;
        if changed > 0 {
            debug!(
                guarded = desired.len(),
                changed, "edge destinations applied"
            );
        }
        self.dests = desired;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::maps::edge::FakeEdgeWriter;

    fn settings(rate: Option<SynRate>) -> EdgeSettings {
        EdgeSettings {
            syn_rate: rate,
            listeners: vec![
                "198.18.0.1:80".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap(),
            ],
        }
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn vip(addr: &str, port: u16) -> VipKey {
        dest_key(
            SocketAddr::new(addr.parse::<IpAddr>().unwrap(), port),
            PROTO_TCP,
        )
    }

    fn has_bit(w: &FakeEdgeWriter, bit: u32) -> bool {
        w.filter[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    #[test]
    fn nothing_is_guarded_without_a_block_list_or_a_rate() {
        let mut a = EdgeApplier::new(FakeEdgeWriter::default(), settings(None)).unwrap();
        assert_eq!(a.apply(&[(vip("198.18.1.1", 9000), 0)], &[]).unwrap(), 0);
        assert!(a.writer().dests.is_empty());
        assert!(a.writer().filter.iter().all(|w| *w == 0));
        assert_eq!(a.writer().config, EdgeConfig::default());
    }

    #[test]
    fn listeners_and_vips_are_guarded_and_diffed() {
        let block = nets(&["203.0.113.7/24", "2001:db8:bad::/48"]);
        let mut a = EdgeApplier::new(FakeEdgeWriter::default(), settings(None)).unwrap();
        let v = vip("198.18.1.1", 9000);
        assert_eq!(a.apply(&[(v, 3)], &block).unwrap(), 3);
        // Prefixes are stored truncated, as the trie matches them.
        let blocked: Vec<String> = a.writer().blocked.iter().map(|n| n.to_string()).collect();
        assert_eq!(blocked, ["203.0.113.0/24", "2001:db8:bad::/48"]);
        let w = a.writer();
        assert_eq!(w.dests.get(&v).map(|d| d.vip_id), Some(3));
        let l = listener_key(&"198.18.0.1:80".parse().unwrap());
        assert_eq!(w.dests.get(&l).map(|d| d.vip_id), Some(EDGE_LISTENER));
        for k in [v, l] {
            assert!(has_bit(w, edge_filter_bit(&k.addr, k.port, k.proto)));
            assert!(has_bit(w, edge_addr_filter_bit(&k.addr)));
        }
        // Unchanged: nothing written.
        let before = a.writer().writes;
        assert_eq!(a.apply(&[(v, 3)], &block).unwrap(), 0);
        assert_eq!(a.writer().writes, before);
        // The VIP goes: its entry and its bit go, the listeners stay.
        assert_eq!(a.apply(&[], &block).unwrap(), 1);
        let w = a.writer();
        assert!(!w.dests.contains_key(&v));
        assert!(!has_bit(w, edge_filter_bit(&v.addr, v.port, v.proto)));
        assert_eq!(w.dests.len(), 2);
        // One prefix goes (the controller ConfigMap changed): only it is deleted.
        a.apply(&[], &block[1..]).unwrap();
        let blocked: Vec<String> = a.writer().blocked.iter().map(|n| n.to_string()).collect();
        assert_eq!(blocked, ["2001:db8:bad::/48"]);
        assert_eq!(a.writer().dests.len(), 2);
        // The list emptied, no rate: nothing is guarded any more, nothing blocked.
        assert_eq!(a.apply(&[], &[]).unwrap(), 2);
        let w = a.writer();
        assert!(w.blocked.is_empty() && w.dests.is_empty());
        assert!(w.filter.iter().all(|word| *word == 0));
    }

    #[test]
    fn a_full_map_leaves_some_destinations_unguarded_not_the_apply_failed() {
        let w = FakeEdgeWriter {
            max_dests: Some(3),
            ..Default::default()
        };
        let block = nets(&["192.0.2.0/24"]);
        let mut a = EdgeApplier::new(w, settings(None)).unwrap();
        let vips = [(vip("198.18.1.1", 1), 0), (vip("198.18.1.2", 2), 1)];
        // Three of the four fit; the fourth is left out and unmarked.
        assert_eq!(a.apply(&vips, &block).unwrap(), 3);
        let w = a.writer();
        assert_eq!(w.dests.len(), 3);
        let mut all: Vec<VipKey> = vips.iter().map(|(k, _)| *k).collect();
        all.extend(settings(None).listeners.iter().map(listener_key));
        let left: Vec<VipKey> = all
            .into_iter()
            .filter(|k| !w.dests.contains_key(k))
            .collect();
        assert_eq!(left.len(), 1);
        let left = left[0];
        assert!(!has_bit(
            w,
            edge_filter_bit(&left.addr, left.port, left.proto)
        ));
        // Room again (a VIP went): the one left out is written this time.
        let gone = vips.iter().map(|(k, _)| *k).find(|k| *k != left).unwrap();
        let fewer: Vec<(VipKey, u32)> = vips.iter().filter(|(k, _)| *k != gone).copied().collect();
        a.apply(&fewer, &block).unwrap();
        assert!(a.writer().dests.contains_key(&left));
        assert!(has_bit(
            a.writer(),
            edge_filter_bit(&left.addr, left.port, left.proto)
        ));
    }

    #[test]
    fn a_restart_adopts_and_corrects_what_pinned_maps_hold() {
        let mut w = FakeEdgeWriter::default();
        w.blocked.insert("192.0.2.0/24".parse().unwrap());
        w.blocked.insert("198.51.100.0/24".parse().unwrap());
        let stale = vip("198.18.9.9", 53);
        w.dests.insert(stale, EdgeDest { vip_id: 7, _pad: 0 });
        let mut a = EdgeApplier::new(w, settings(None)).unwrap();
        // Until the first apply the pinned block list stays in force.
        assert_eq!(a.writer().blocked.len(), 2);
        a.apply(&[], &nets(&["192.0.2.0/24"])).unwrap();
        let blocked: Vec<String> = a.writer().blocked.iter().map(|n| n.to_string()).collect();
        assert_eq!(blocked, ["192.0.2.0/24"]);
        assert!(!a.writer().dests.contains_key(&stale));
    }

    #[test]
    fn syn_rate_becomes_an_interval_and_a_tolerance() {
        let s = settings(Some(SynRate {
            per_second: 10,
            burst: 5,
        }));
        let c = s.kernel_config();
        assert_eq!(c.syn_interval_ns, 100_000_000);
        assert_eq!(c.syn_tolerance_ns, 400_000_000);
        let one = settings(Some(SynRate {
            per_second: 1,
            burst: 1,
        }))
        .kernel_config();
        assert_eq!(
            (one.syn_interval_ns, one.syn_tolerance_ns),
            (1_000_000_000, 0)
        );
    }
}
