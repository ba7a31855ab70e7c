//! Kernel applier: brings the L4 maps in line with `Snapshot.l4`, by diff.
//!
//! Ids are stable: a VIP keeps its id (ring and counters) while it exists, a backend keeps
//! its id while any VIP uses it. A freed VIP id goes to a new VIP only after every id freed
//! before it, and with its counters zeroed. Maglev tables are rebuilt only for VIPs whose backend set
//! changed, and only slots that differ are written. Writes are ordered so the kernel never
//! sees a VIP whose ring or backends are not in place: backends, then ring, then the VIP entry;
//! removal goes the other way.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use ingress_common::l4::{
    vip_addr_filter_bit, vip_filter_bit, Backend, LbConfig, RetiredKey, VipAddrKey, VipKey,
    VipMeta, FAMILY_V4, FAMILY_V6, NO_BACKEND, PROTO_TCP, PROTO_UDP, VIP_FILTER_BITS,
};
use thiserror::Error;
use tracing::{debug, warn};

use ingress_common::maps::MAX_RETIRED;

use crate::{
    maps::{maglev, MapError, MapWriter},
    snapshot::{L4Protocol, L4Service},
};

/// Why an apply did not complete.
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error(transparent)]
    Map(#[from] MapError),
}

/// Node-wide SNAT settings written to the config slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatSettings {
    pub v4: Option<std::net::Ipv4Addr>,
    pub v6: Option<std::net::Ipv6Addr>,
    pub port_min: u16,
    pub port_max: u16,
    pub timeouts: FlowTimeouts,
}

/// When the SNAT port of an idle or closed flow may go to a new flow. Flow entries are never
/// deleted but by eviction, so without these a backend's ports would stay taken by
/// connections long gone and its new flows would be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// TCP flow without packets (no FIN or RST seen).
    pub tcp_established: Duration,
    /// TCP flow that saw a FIN, after its last packet.
    pub tcp_time_wait: Duration,
    /// TCP flow that saw an RST, after its last packet.
    pub tcp_close: Duration,
    /// UDP flow without packets.
    pub udp: Duration,
    /// Flow the backend never answered (a SYN flood, one-way datagrams), without packets,
    /// when shorter than the above.
    pub unreplied: Duration,
}

impl Default for FlowTimeouts {
    /// The `ingressd run` defaults.
    fn default() -> Self {
        FlowTimeouts {
            tcp_established: Duration::from_secs(3600),
            tcp_time_wait: Duration::from_secs(120),
            tcp_close: Duration::from_secs(10),
            udp: Duration::from_secs(120),
            unreplied: Duration::from_secs(30),
        }
    }
}

/// Whole seconds for the kernel, at least one: zero there means "not configured".
fn kernel_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// What one apply did, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub rings_rebuilt: usize,
    pub ring_slots_written: usize,
    pub backends_added: usize,
    pub backends_freed: usize,
    /// Backends marked as gone from a UDP VIP, whose flows the kernel moves.
    pub backends_retired: usize,
    /// VIPs left out: capacity exhausted or no SNAT address for their family.
    pub skipped: Vec<String>,
}

struct VipState {
    id: u32,
    /// Sorted backend addresses in its ring; `None` after adoption until the first apply
    /// recomputes it.
    backends: Option<Vec<SocketAddr>>,
    /// Some wanted backends found no slot (backend capacity): rebuilt at every apply until
    /// they fit.
    partial: bool,
    /// Its VIPS entry exists. A VIP with no backend has none: new flows pass to the node's
    /// stack, which refuses them, while its established flows go on through conntrack.
    live: bool,
    /// The backends its ring named when adopted after a restart (UDP VIPs only), so those
    /// that left meanwhile are marked at the first apply.
    adopted: Option<Vec<SocketAddr>>,
}

impl VipState {
    /// The sorted backends its ring names: as last applied, else as adopted.
    fn ring_backends(&self) -> Option<&[SocketAddr]> {
        self.backends.as_deref().or(self.adopted.as_deref())
    }
}

/// Converts an IP address to the kernel's 4-word network-order layout.
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// Converts the kernel's address layout back to an IP address.
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V6 {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    } else {
        IpAddr::from(words[0].to_ne_bytes())
    }
}

/// The map key of a service's VIP.
pub fn vip_key(svc: &L4Service) -> VipKey {
    let proto = match svc.protocol {
        L4Protocol::Tcp => PROTO_TCP,
        L4Protocol::Udp => PROTO_UDP,
    };
    dest_key(SocketAddr::new(svc.vip, svc.port), proto)
}

/// A prefilter bitmap of `n_bits` bits with `bits` set.
pub(super) fn bitmap(n_bits: u32, bits: impl IntoIterator<Item = u32>) -> Vec<u64> {
    let mut words = vec![0u64; (n_bits / 64) as usize];
    for bit in bits {
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// The map key of a destination address, port and IP protocol (VIPS, EDGE_DESTS).
pub fn dest_key(dest: SocketAddr, proto: u8) -> VipKey {
    let (addr, family) = addr_words(dest.ip());
    VipKey {
        addr,
        port: dest.port().to_be(),
        proto,
        family,
    }
}

/// The map value of a backend.
pub fn backend_value(addr: SocketAddr) -> Backend {
    let (a, family) = addr_words(addr.ip());
    Backend {
        addr: a,
        port: addr.port().to_be(),
        family,
        _pad: 0,
    }
}

/// A backend's address and port, from its map value.
pub fn backend_addr(b: &Backend) -> SocketAddr {
    SocketAddr::new(words_addr(b.addr, b.family), u16::from_be(b.port))
}

/// A VIP's address and port, from its map key.
pub fn vip_addr(k: &VipKey) -> SocketAddr {
    SocketAddr::new(words_addr(k.addr, k.family), u16::from_be(k.port))
}

/// The RETIRED key of `backend` on the VIP `vip`.
fn retired_key(vip: &VipKey, backend: SocketAddr) -> RetiredKey {
    RetiredKey {
        vip: *vip,
        backend: backend_value(backend),
    }
}

/// The marks for the backends of the UDP VIP `key` (as `state` had them, or its ring named
/// them when adopted) missing from `now` (sorted).
fn udp_left(key: &VipKey, state: Option<&VipState>, now: &[SocketAddr]) -> Vec<RetiredKey> {
    if key.proto != PROTO_UDP {
        return Vec::new();
    }
    let Some(before) = state.and_then(VipState::ring_backends) else {
        return Vec::new();
    };
    before
        .iter()
        .filter(|a| now.binary_search(a).is_err())
        .map(|a| retired_key(key, *a))
        .collect()
}

fn vip_name(k: &VipKey) -> String {
    let proto = if k.proto == PROTO_UDP { "udp" } else { "tcp" };
    format!("{}/{proto}", vip_addr(k))
}

/// Backends marked in RETIRED as gone from a UDP VIP. A mark is kept until its backend comes
/// back: a flow idle past the UDP timeout keeps its entry until evicted, and its next packet
/// must still move it. The oldest go first when the map is full (a mark dropped only leaves
/// that pod's flows pinned, as they were before marks).
#[derive(Debug)]
struct Marks {
    /// Each mark written, with the order it was written in, and the reverse.
    by_key: BTreeMap<RetiredKey, u64>,
    by_age: BTreeMap<u64, RetiredKey>,
    next: u64,
    /// RETIRED's size.
    capacity: usize,
    /// Departures seen but not written yet: kept across an apply that fails half-way, whose
    /// next attempt sees the VIP's new backends as unchanged.
    pending: BTreeSet<RetiredKey>,
}

impl Marks {
    fn adopt(written: Vec<RetiredKey>) -> Self {
        let by_key: BTreeMap<RetiredKey, u64> = written.into_iter().zip(0..).collect();
        Marks {
            by_age: by_key.iter().map(|(k, n)| (*n, *k)).collect(),
            next: by_key.len() as u64,
            by_key,
            capacity: MAX_RETIRED as usize,
            pending: BTreeSet::new(),
        }
    }

    fn insert(&mut self, mark: RetiredKey) {
        self.by_key.insert(mark, self.next);
        self.by_age.insert(self.next, mark);
        self.next += 1;
    }

    fn remove(&mut self, mark: &RetiredKey) {
        if let Some(n) = self.by_key.remove(mark) {
            self.by_age.remove(&n);
        }
    }
}

/// Owns the kernel's L4 tables and the id bookkeeping behind them.
pub struct L4Applier<W: MapWriter> {
    writer: W,
    vips: BTreeMap<VipKey, VipState>,
    backend_ids: BTreeMap<SocketAddr, u32>,
    /// Oldest freed first: flows of a removed VIP go on counting against its id until they
    /// end, so an id waits as long as it can before another VIP takes it over.
    free_vip_ids: VecDeque<u32>,
    free_backend_ids: BTreeSet<u32>,
    /// Prefilter words as last written (`None` until the first write after start).
    vip_filter: Option<Vec<u64>>,
    /// (address words, family) -> VIP count, as last written.
    vip_addrs: BTreeMap<([u32; 4], u8), u32>,
    /// VIPs removed, and when: they stay in the prefilter for as long as their established
    /// flows may live, or those would skip conntrack and be cut at once.
    lingering: BTreeMap<VipKey, Instant>,
    /// Backends marked in RETIRED as gone from a UDP VIP.
    marks: Marks,
    /// Whether a VIP is the node's own address (see `live`).
    is_local: fn(IpAddr) -> bool,
    snat: SnatSettings,
}

impl<W: MapWriter> L4Applier<W> {
    /// Adopts whatever the maps already hold (after a restart) and writes the SNAT settings.
    pub fn new(mut writer: W, snat: SnatSettings) -> Result<Self, ApplyError> {
        let cap = writer.capacity();
        let state = writer.read_state()?;
        let mut backend_ids = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (id, b) in state.backends {
            backend_ids.insert(backend_addr(&b), id);
            by_id.insert(id, backend_addr(&b));
        }
        let mut vips = BTreeMap::new();
        for (key, meta) in state.vips {
            let adopted = match key.proto {
                PROTO_UDP => {
                    let ids = writer.ring_ids(meta.id)?;
                    let mut named: Vec<SocketAddr> =
                        ids.iter().filter_map(|id| by_id.get(id).copied()).collect();
                    named.sort();
                    Some(named)
                }
                _ => None,
            };
            vips.insert(
                key,
                VipState {
                    id: meta.id,
                    backends: None,
                    partial: false,
                    live: true,
                    adopted,
                },
            );
        }
        let vip_addrs = state
            .vip_addrs
            .iter()
            .map(|(k, n)| ((k.addr, k.family as u8), *n))
            .collect();
        let used_vips: BTreeSet<u32> = vips.values().map(|v| v.id).collect();
        let used_backends: BTreeSet<u32> = backend_ids.values().copied().collect();
        let free_vip_ids = (0..cap.max_vips)
            .filter(|i| !used_vips.contains(i))
            .collect();
        let free_backend_ids = (1..cap.max_backends)
            .filter(|i| !used_backends.contains(i))
            .collect();
        if !vips.is_empty() {
            debug!(
                vips = vips.len(),
                backends = backend_ids.len(),
                "adopted kernel L4 state"
            );
        }
        let mut cfg = LbConfig {
            ready: 1,
            ..LbConfig::default()
        };
        if let Some(v4) = snat.v4 {
            cfg.snat_v4 = u32::from_ne_bytes(v4.octets());
        }
        if let Some(v6) = snat.v6 {
            cfg.snat_v6 = addr_words(IpAddr::V6(v6)).0;
        }
        cfg.tcp_established_secs = kernel_secs(snat.timeouts.tcp_established);
        cfg.tcp_time_wait_secs = kernel_secs(snat.timeouts.tcp_time_wait);
        cfg.tcp_close_secs = kernel_secs(snat.timeouts.tcp_close);
        cfg.udp_secs = kernel_secs(snat.timeouts.udp);
        cfg.unreplied_secs = kernel_secs(snat.timeouts.unreplied);
        cfg.port_min = snat.port_min;
        cfg.port_count = snat
            .port_max
            .saturating_sub(snat.port_min)
            .saturating_add(1);
        writer.write_config(&cfg)?;
        Ok(L4Applier {
            marks: Marks::adopt(state.retired),
            lingering: BTreeMap::new(),
            is_local: crate::maps::local_addrs::is_local,
            vip_filter: None,
            writer,
            vips,
            backend_ids,
            free_vip_ids,
            free_backend_ids,
            vip_addrs,
            snat,
        })
    }

    /// Decides with `f` whether a VIP is the node's own address (tests).
    pub fn with_local_check(mut self, f: fn(IpAddr) -> bool) -> Self {
        self.is_local = f;
        self
    }

    /// The writer, e.g. to inspect a fake in tests.
    pub fn writer(&self) -> &W {
        &self.writer
    }

    /// The writer, e.g. to make a fake fail in tests.
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// The id of a VIP, if present.
    pub fn vip_id(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).map(|v| v.id)
    }

    /// Every VIP with its id.
    pub fn vip_ids(&self) -> Vec<(VipKey, u32)> {
        self.vips.iter().map(|(k, v)| (*k, v.id)).collect()
    }

    /// Whether `svc` is on the SNAT address of its family with a port the SNAT hands out.
    fn in_snat_range(&self, svc: &L4Service) -> bool {
        let snat = match svc.vip {
            IpAddr::V4(_) => self.snat.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.snat.v6.map(IpAddr::V6),
        };
        snat == Some(svc.vip) && (self.snat.port_min..=self.snat.port_max).contains(&svc.port)
    }

    fn has_snat(&self, family: u8) -> bool {
        if family == FAMILY_V6 {
            self.snat.v6.is_some()
        } else {
            self.snat.v4.is_some()
        }
    }

    /// Makes the kernel tables equal `services`.
    pub fn apply(&mut self, services: &[L4Service]) -> Result<ApplyReport, ApplyError> {
        let mut report = self.apply_once(services)?;
        // Backends are freed only after no ring names them, so a VIP that found no slot for
        // some of its backends may fit once this pass freed others: one more pass, not a
        // wait for the next snapshot.
        if report.backends_freed > 0 && self.vips.values().any(|v| v.partial) {
            let again = self.apply_once(services)?;
            report.vips_added += again.vips_added;
            report.rings_rebuilt += again.rings_rebuilt;
            report.ring_slots_written += again.ring_slots_written;
            report.backends_added += again.backends_added;
            report.backends_freed += again.backends_freed;
            report.backends_retired += again.backends_retired;
            report.skipped = again.skipped;
        }
        if !report.skipped.is_empty() {
            warn!(skipped = ?report.skipped, "some L4 services were not programmed");
        }
        Ok(report)
    }

    fn apply_once(&mut self, services: &[L4Service]) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        let ring_size = self.writer.capacity().ring_size;

        // Desired state; the first service for a VIP wins.
        let mut desired: BTreeMap<VipKey, Vec<SocketAddr>> = BTreeMap::new();
        for svc in services {
            let key = vip_key(svc);
            if !self.has_snat(key.family) {
                report.skipped.push(format!(
                    "{} (no SNAT address for its family)",
                    vip_name(&key)
                ));
                continue;
            }
            if self.in_snat_range(svc) {
                // Replies come back to the SNAT address on these ports, and a VIP there
                // would take them for new flows of its own.
                report.skipped.push(format!(
                    "{} (its port is in the SNAT port range {}-{} of its address)",
                    vip_name(&key),
                    self.snat.port_min,
                    self.snat.port_max
                ));
                continue;
            }
            if desired.contains_key(&key) {
                continue;
            }
            let mut b: Vec<SocketAddr> = svc
                .backends
                .iter()
                .copied()
                .filter(|a| a.is_ipv6() == svc.vip.is_ipv6())
                .collect();
            b.sort();
            b.dedup();
            desired.insert(key, b);
        }

        // Remove VIPs no longer wanted: entry first, then its ring.
        let gone: Vec<VipKey> = self
            .vips
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            let Some(id) = self.vips.get(&key).map(|s| s.id) else {
                continue;
            };
            // (UDP VIP, backend) pairs that ended: marked once the rings no longer name them.
            self.marks
                .pending
                .extend(udp_left(&key, self.vips.get(&key), &[]));
            // Forgotten only once the kernel forgot it: a failed delete is retried by the
            // next apply, where forgetting first would have left the VIP live for good.
            if self.vips.get(&key).is_some_and(|s| s.live) {
                self.writer.remove_vip(&key)?;
            }
            self.vips.remove(&key);
            self.lingering.insert(key, Instant::now());
            report.vips_removed += 1;
            // The id is reused only over a cleared ring (a failure leaks it, never a ring
            // naming old backends).
            report.ring_slots_written += self
                .writer
                .write_ring(id, &vec![NO_BACKEND; ring_size as usize])?;
            self.free_vip_ids.push_back(id);
        }

        // Add or update the rest, in the order an operator reads them (address, then port in
        // host order): when VIP capacity runs out, the last ones by that order wait, not
        // whichever sort after others by the port's low byte.
        let mut order: Vec<(&VipKey, &Vec<SocketAddr>)> = desired.iter().collect();
        order.sort_by_key(|(k, _)| {
            (
                k.family,
                k.addr.map(u32::from_be),
                u16::from_be(k.port),
                k.proto,
            )
        });
        for (key, backends) in order {
            let unchanged = self
                .vips
                .get(key)
                .is_some_and(|s| !s.partial && s.backends.as_ref() == Some(backends));
            if unchanged {
                continue;
            }
            let id = match self.vips.get(key) {
                Some(s) => s.id,
                None => match self.free_vip_ids.pop_front() {
                    Some(id) => {
                        // Before the VIP entry exists, so nothing new counts against the id
                        // until its counters start from zero.
                        self.writer.reset_vip_stats(id)?;
                        report.vips_added += 1;
                        id
                    }
                    None => {
                        report
                            .skipped
                            .push(format!("{} (VIP capacity exhausted)", vip_name(key)));
                        continue;
                    }
                },
            };
            // The ring is built over the backends that got a slot: one without a slot has no
            // id for the ring to name.
            let mut admitted: Vec<(SocketAddr, u32)> = Vec::with_capacity(backends.len());
            for addr in backends {
                match self.ensure_backend(*addr, &mut report)? {
                    Some(bid) => admitted.push((*addr, bid)),
                    None => report
                        .skipped
                        .push(format!("backend {addr} (backend capacity exhausted)")),
                }
            }
            let ring: Vec<u32> = if admitted.is_empty() {
                vec![NO_BACKEND; ring_size as usize]
            } else {
                let names: Vec<String> = admitted.iter().map(|(a, _)| a.to_string()).collect();
                maglev::table(&names, ring_size)
                    .into_iter()
                    .map(|i| admitted[i as usize].1)
                    .collect()
            };
            let now_in: Vec<SocketAddr> = admitted.iter().map(|(a, _)| *a).collect();
            // A backend back in the ring first loses its mark, or its new flows would be
            // moved away from it again.
            self.unretire(key, &now_in)?;
            self.marks
                .pending
                .extend(udp_left(key, self.vips.get(key), &now_in));
            let meta = VipMeta {
                id,
                backends: admitted.len() as u32,
            };
            let refused = admitted.is_empty() && (self.is_local)(words_addr(key.addr, key.family));
            if admitted.is_empty() {
                // New flows stop before the ring is cleared. On the node's own address the
                // VIPS entry goes: a new flow passes to the node's stack, which refuses it (a
                // TCP reset, an ICMP port unreachable) as it would refuse a port
                // ingress-nginx does not listen on, where a drop would leave clients waiting
                // out their timeouts. Elsewhere the stack would route it on, so the kernel
                // path drops it (`drop_no_backend`).
                if !refused {
                    self.writer.put_vip(key, &meta)?;
                } else if self.vips.get(key).is_some_and(|s| s.live) {
                    self.writer.remove_vip(key)?;
                }
                let new_connections = if refused { "refused" } else { "dropped" };
                warn!(vip = %vip_name(key), new_connections, "L4 service has no endpoint: open connections go on");
                report.ring_slots_written += self.writer.write_ring(id, &ring)?;
            } else {
                report.ring_slots_written += self.writer.write_ring(id, &ring)?;
                self.writer.put_vip(key, &meta)?;
            }
            report.rings_rebuilt += 1;
            self.lingering.remove(key);
            self.vips.insert(
                *key,
                VipState {
                    id,
                    partial: admitted.len() < backends.len(),
                    live: !refused,
                    backends: Some(now_in),
                    adopted: None,
                },
            );
        }
        self.retire(&mut report)?;

        self.sync_vip_addrs()?;
        self.sync_vip_filter()?;
        self.free_unused_backends(&mut report)?;
        Ok(report)
    }

    /// Removes the marks (written or pending) of `backends` on the UDP VIP `key`.
    fn unretire(&mut self, key: &VipKey, backends: &[SocketAddr]) -> Result<(), ApplyError> {
        if key.proto != PROTO_UDP {
            return Ok(());
        }
        for addr in backends {
            let mark = retired_key(key, *addr);
            self.marks.pending.remove(&mark);
            if self.marks.by_key.contains_key(&mark) {
                self.writer.remove_retired(&mark)?;
                self.marks.remove(&mark);
            }
        }
        Ok(())
    }

    /// Writes the pending marks to RETIRED, dropping the oldest marks to make room. A mark
    /// that cannot be written is logged, not an error: its flows only stay where they are.
    fn retire(&mut self, report: &mut ApplyReport) -> Result<(), ApplyError> {
        while let Some(mark) = self.marks.pending.first().copied() {
            // A departure seen by a failed apply and undone since: the backend is in use.
            let back = self
                .vips
                .get(&mark.vip)
                .and_then(VipState::ring_backends)
                .is_some_and(|b| b.binary_search(&backend_addr(&mark.backend)).is_ok());
            if !back && !self.marks.by_key.contains_key(&mark) {
                while self.marks.by_key.len() >= self.marks.capacity {
                    let Some((_, oldest)) = self.marks.by_age.first_key_value() else {
                        break;
                    };
                    let oldest = *oldest;
                    self.writer.remove_retired(&oldest)?;
                    self.marks.remove(&oldest);
                }
                match self.writer.put_retired(&mark) {
                    Ok(()) => {
                        self.marks.insert(mark);
                        report.backends_retired += 1;
                    }
                    Err(e) => warn!(
                        vip = %vip_name(&mark.vip),
                        backend = %backend_addr(&mark.backend),
                        error = %e,
                        "UDP flows to a removed endpoint will stay with it"
                    ),
                }
            }
            self.marks.pending.remove(&mark);
        }
        Ok(())
    }

    fn ensure_backend(
        &mut self,
        addr: SocketAddr,
        report: &mut ApplyReport,
    ) -> Result<Option<u32>, ApplyError> {
        if let Some(id) = self.backend_ids.get(&addr) {
            return Ok(Some(*id));
        }
        let Some(id) = self.free_backend_ids.pop_first() else {
            return Ok(None);
        };
        self.writer.put_backend(id, &backend_value(addr))?;
        self.backend_ids.insert(addr, id);
        report.backends_added += 1;
        Ok(Some(id))
    }

    fn free_unused_backends(&mut self, report: &mut ApplyReport) -> Result<(), ApplyError> {
        let used: BTreeSet<SocketAddr> = self
            .vips
            .values()
            .filter_map(|v| v.backends.as_ref())
            .flatten()
            .copied()
            .collect();
        let unused: Vec<(SocketAddr, u32)> = self
            .backend_ids
            .iter()
            .filter(|(a, _)| !used.contains(a))
            .map(|(a, i)| (*a, *i))
            .collect();
        for (addr, id) in unused {
            self.writer.put_backend(id, &Backend::default())?;
            self.backend_ids.remove(&addr);
            self.free_backend_ids.insert(id);
            report.backends_freed += 1;
        }
        Ok(())
    }

    fn sync_vip_filter(&mut self) -> Result<(), ApplyError> {
        let linger = self
            .snat
            .timeouts
            .tcp_established
            .max(self.snat.timeouts.udp);
        self.lingering.retain(|_, at| at.elapsed() < linger);
        let words = bitmap(
            VIP_FILTER_BITS,
            self.vips.keys().chain(self.lingering.keys()).flat_map(|k| {
                [
                    vip_filter_bit(&k.addr, k.port, k.proto),
                    vip_addr_filter_bit(&k.addr),
                ]
            }),
        );
        if self.vip_filter.as_ref() != Some(&words) {
            self.writer.write_vip_filter(&words)?;
            self.vip_filter = Some(words);
        }
        Ok(())
    }

    fn sync_vip_addrs(&mut self) -> Result<(), ApplyError> {
        let mut counts: BTreeMap<([u32; 4], u8), u32> = BTreeMap::new();
        for key in self.vips.keys() {
            *counts.entry((key.addr, key.family)).or_default() += 1;
        }
        let key = |(addr, family): ([u32; 4], u8)| VipAddrKey {
            addr,
            family: u32::from(family),
        };
        for old in self.vip_addrs.keys() {
            if !counts.contains_key(old) {
                self.writer.remove_vip_addr(&key(*old))?;
            }
        }
        for (k, n) in &counts {
            if self.vip_addrs.get(k) != Some(n) {
                self.writer.put_vip_addr(&key(*k), *n)?;
            }
        }
        self.vip_addrs = counts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        maps::{
            fake::{FakeMapWriter, Op},
            Capacity,
        },
        snapshot::ObjectRef,
    };

    const RING: u32 = 251;

    fn fake() -> FakeMapWriter {
        FakeMapWriter::new(Capacity {
            max_vips: 4,
            max_backends: 16,
            ring_size: RING,
        })
    }

    fn snat() -> SnatSettings {
        SnatSettings {
            v4: Some("198.18.0.1".parse().unwrap()),
            v6: None,
            port_min: 20000,
            port_max: 20999,
            timeouts: FlowTimeouts::default(),
        }
    }

    fn svc(vip: &str, port: u16, backends: &[&str]) -> L4Service {
        L4Service {
            origin: ObjectRef::default(),
            vip: vip.parse().unwrap(),
            port,
            protocol: L4Protocol::Tcp,
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    fn backends_in_ring(w: &FakeMapWriter, id: u32) -> BTreeSet<SocketAddr> {
        w.ring(id)
            .iter()
            .map(|b| backend_addr(&w.backends[*b as usize]))
            .collect()
    }

    #[test]
    fn programs_vip_ring_backends_and_config() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        assert_eq!(a.writer().config.port_count, 1000);
        assert_eq!(a.writer().config.ready, 1);
        let s = svc("198.18.0.10", 80, &["198.18.1.2:8080", "198.18.2.2:8080"]);
        let r = a.apply(std::slice::from_ref(&s)).unwrap();
        assert_eq!((r.vips_added, r.backends_added, r.rings_rebuilt), (1, 2, 1));
        assert_eq!(r.ring_slots_written, RING as usize);
        let key = vip_key(&s);
        let meta = a.writer().vip(&key).unwrap();
        assert_eq!(meta.backends, 2);
        let want: BTreeSet<SocketAddr> = s.backends.iter().copied().collect();
        assert_eq!(backends_in_ring(a.writer(), meta.id), want);
        let addr = VipAddrKey {
            addr: key.addr,
            family: u32::from(FAMILY_V4),
        };
        assert_eq!(a.writer().vip_addr(&addr), Some(1));
    }

    /// A VIP on the SNAT address with a port the SNAT hands out would take the replies of
    /// flows given that port: it is left out, and said so; its other ports are programmed.
    #[test]
    fn a_vip_port_in_the_snat_range_of_its_address_is_left_out() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let r = a
            .apply(&[
                svc("198.18.0.1", 20500, &["198.18.1.2:8080"]),
                svc("198.18.0.1", 21000, &["198.18.1.2:8080"]),
                svc("198.18.0.10", 20500, &["198.18.1.2:8080"]),
            ])
            .unwrap();
        assert_eq!(r.vips_added, 2);
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
        assert!(r.skipped[0].contains("20000-20999"), "{:?}", r.skipped);
        let snat_port = svc("198.18.0.1", 20500, &[]);
        assert!(a.writer().vip(&vip_key(&snat_port)).is_none());
    }

    #[test]
    fn unchanged_snapshot_writes_nothing() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let s = vec![svc(
            "198.18.0.10",
            80,
            &["198.18.1.2:8080", "198.18.2.2:8080"],
        )];
        a.apply(&s).unwrap();
        let before = a.writer().ops.len();
        let r = a.apply(&s).unwrap();
        assert_eq!(r, ApplyReport::default());
        assert_eq!(a.writer().ops.len(), before);
    }

    #[test]
    fn removing_a_backend_rewrites_only_its_slots_and_frees_it() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let three = ["198.18.1.2:8080", "198.18.2.2:8080", "198.18.3.2:8080"];
        a.apply(&[svc("198.18.0.10", 80, &three)]).unwrap();
        let id = a.vip_id(&vip_key(&svc("198.18.0.10", 80, &[]))).unwrap();
        let before: Vec<u32> = a.writer().ring(id).to_vec();
        let removed_id = a.backend_ids[&"198.18.3.2:8080".parse().unwrap()];
        let owned = before.iter().filter(|b| **b == removed_id).count();
        let r = a.apply(&[svc("198.18.0.10", 80, &three[..2])]).unwrap();
        assert_eq!(r.backends_freed, 1);
        assert!(
            r.ring_slots_written >= owned && r.ring_slots_written <= owned * 13 / 10,
            "{r:?} owned={owned}"
        );
        assert!(!a.writer().ring(id).contains(&removed_id));
        assert_eq!(a.writer().backends[removed_id as usize], Backend::default());
        // Order: ring written before the VIP entry is updated, backend freed last.
        let ops = &a.writer().ops;
        let ring_pos = ops.iter().rposition(|o| matches!(o, Op::Ring(..))).unwrap();
        let vip_pos = ops
            .iter()
            .rposition(|o| matches!(o, Op::PutVip(..)))
            .unwrap();
        let free_pos = ops
            .iter()
            .rposition(|o| matches!(o, Op::PutBackend(..)))
            .unwrap();
        assert!(ring_pos < vip_pos && vip_pos < free_pos);
    }

    #[test]
    fn a_failed_vip_delete_is_retried_by_the_next_apply_not_forgotten() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        a.apply(&[svc("198.18.0.10", 80, &["198.18.1.2:80"])])
            .unwrap();
        a.writer_mut().fail_vip_removals = 1;
        assert!(a.apply(&[]).is_err());
        assert_eq!(a.writer().vips.len(), 1, "the kernel still has it");
        let r = a.apply(&[]).unwrap();
        assert_eq!(r.vips_removed, 1);
        assert!(a.writer().vips.is_empty());
        assert!(a.writer().ring(0).iter().all(|b| *b == NO_BACKEND));
    }

    #[test]
    fn removed_vip_is_deleted_before_its_ring_is_cleared_and_its_id_reused_last() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        a.apply(&[svc("198.18.0.10", 80, &["198.18.1.2:80"])])
            .unwrap();
        let r = a.apply(&[]).unwrap();
        assert_eq!(r.vips_removed, 1);
        assert!(a.writer().vips.is_empty());
        assert!(a.writer().vip_addrs.is_empty());
        assert!(a.writer().ring(0).iter().all(|b| *b == NO_BACKEND));
        let ops = &a.writer().ops;
        let rm = ops
            .iter()
            .position(|o| matches!(o, Op::RemoveVip(..)))
            .unwrap();
        assert!(matches!(ops[rm + 1], Op::Ring(0, _)));
        // Every never-used id goes before the freed one, and each id handed out has its
        // counters zeroed first.
        let max = a.writer().capacity.max_vips;
        let all: Vec<L4Service> = (1..=max)
            .map(|i| svc(&format!("198.18.2.{i}"), 80, &["198.18.1.2:80"]))
            .collect();
        for n in 1..=all.len() {
            a.apply(&all[..n]).unwrap();
        }
        let ids: Vec<Option<u32>> = all.iter().map(|s| a.vip_id(&vip_key(s))).collect();
        let want: Vec<Option<u32>> = (1..max).chain([0]).map(Some).collect();
        assert_eq!(ids, want);
        let resets: Vec<u32> = a
            .writer()
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::ResetVipStats(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(
            resets,
            [0].into_iter().chain(1..max).chain([0]).collect::<Vec<_>>()
        );
        let reset0 = a
            .writer()
            .ops
            .iter()
            .rposition(|o| matches!(o, Op::ResetVipStats(0)))
            .unwrap();
        let put0 = a
            .writer()
            .ops
            .iter()
            .rposition(|o| matches!(o, Op::PutVip(_, m) if m.id == 0))
            .unwrap();
        assert!(reset0 < put0, "counters zeroed after the VIP went live");
    }

    /// Past VIP capacity the VIPs left out are the last by address and port (host order),
    /// not an arbitrary set picked by the port's low byte.
    #[test]
    fn vips_past_capacity_are_the_last_by_port() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let many: Vec<L4Service> = [1000u16, 1024, 1025, 1001, 1002, 1026]
            .iter()
            .map(|p| svc("198.18.0.10", *p, &["198.18.1.2:80"]))
            .collect();
        let r = a.apply(&many).unwrap();
        let mut skipped = r.skipped.clone();
        skipped.sort();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0].contains(":1025") && skipped[1].contains(":1026"),
            "{skipped:?}"
        );
    }

    #[test]
    fn capacity_and_family_limits_are_reported_not_fatal() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let many: Vec<L4Service> = (0..6)
            .map(|i| svc(&format!("198.18.0.{}", 10 + i), 80, &["198.18.1.2:80"]))
            .collect();
        let r = a.apply(&many).unwrap();
        assert_eq!(r.vips_added, 4);
        assert_eq!(r.skipped.len(), 2);
        let v6 = svc("2001:db8::1", 80, &["[2001:db8::2]:80"]);
        let r = a.apply(&[v6]).unwrap();
        assert_eq!(r.skipped.len(), 1, "no IPv6 SNAT address configured");
    }

    /// More backends than backend slots: the ring names only backends that got a slot (it
    /// used to index past them and panic, for every later apply too), and the rest get in
    /// once slots free up.
    #[test]
    fn backends_beyond_capacity_are_left_out_of_the_ring_and_added_later() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let addrs: Vec<String> = (0..20).map(|i| format!("198.18.1.{}:80", i + 1)).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let big = svc("198.18.0.10", 80, &refs);
        let used = |w: &FakeMapWriter| -> Vec<u32> {
            w.backends
                .iter()
                .enumerate()
                .filter(|(_, b)| **b != Backend::default())
                .map(|(i, _)| i as u32)
                .collect()
        };
        let r = a.apply(std::slice::from_ref(&big)).unwrap();
        assert_eq!(r.skipped.len(), 5, "{r:?}");
        let admitted = used(a.writer());
        assert_eq!(admitted.len(), 15);
        let ring = a.writer().ring(0);
        assert!(
            ring.iter().all(|id| admitted.contains(id)),
            "ring names a backend without a slot"
        );
        // Applying again is not stuck, and once the VIP needs fewer backends all are in.
        a.apply(std::slice::from_ref(&big)).unwrap();
        let r = a.apply(&[svc("198.18.0.10", 80, &refs[5..])]).unwrap();
        assert!(r.skipped.is_empty(), "{r:?}");
        assert_eq!(used(a.writer()).len(), 15);
        assert_eq!(a.writer().vip(&vip_key(&big)).map(|m| m.backends), Some(15));
    }

    /// Whether the prefilter as written lets `key`'s packets on to conntrack.
    fn filtered_in(a: &L4Applier<FakeMapWriter>, key: &VipKey) -> bool {
        let bit = ingress_common::l4::vip_filter_bit(&key.addr, key.port, key.proto);
        a.writer().vip_filter[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// A VIP left with no backend loses its VIPS entry (new flows pass to the node's stack,
    /// which refuses them) before its ring is cleared, and stays in the prefilter for its
    /// established flows; with a backend again it is back under its own id.
    #[test]
    fn empty_backend_set_stops_new_flows_first() {
        let mut a = L4Applier::new(fake(), snat())
            .unwrap()
            .with_local_check(|_| true);
        let one = svc("198.18.0.10", 80, &["198.18.1.2:80"]);
        let key = vip_key(&one);
        a.apply(std::slice::from_ref(&one)).unwrap();
        let id = a.vip_id(&key);
        a.writer.ops.clear();
        a.apply(&[svc("198.18.0.10", 80, &[])]).unwrap();
        let ops = &a.writer().ops;
        assert!(matches!(ops[0], Op::RemoveVip(k) if k == key), "{ops:?}");
        assert!(matches!(ops[1], Op::Ring(..)), "{ops:?}");
        assert!(a.writer().vips.values().all(|(k, _)| *k != key));
        assert!(filtered_in(&a, &key));
        // Unchanged: nothing to remove twice.
        a.writer.ops.clear();
        a.apply(&[svc("198.18.0.10", 80, &[])]).unwrap();
        assert!(a.writer().ops.is_empty(), "{:?}", a.writer().ops);
        a.apply(&[one]).unwrap();
        assert_eq!(a.vip_id(&key), id);
        assert!(a
            .writer()
            .vips
            .values()
            .any(|(k, m)| *k == key && m.backends == 1));
    }

    /// A VIP that is not the node's address keeps its VIPS entry with no backend: the
    /// kernel drops its new flows, where the stack would route them on.
    #[test]
    fn a_vip_elsewhere_with_no_backend_drops_new_flows() {
        let mut a = L4Applier::new(fake(), snat())
            .unwrap()
            .with_local_check(|_| false);
        a.apply(&[svc("198.18.0.10", 80, &["198.18.1.2:80"])])
            .unwrap();
        a.writer.ops.clear();
        a.apply(&[svc("198.18.0.10", 80, &[])]).unwrap();
        let ops = &a.writer().ops;
        assert!(
            matches!(ops[0], Op::PutVip(_, VipMeta { backends: 0, .. })),
            "{ops:?}"
        );
        assert!(matches!(ops[1], Op::Ring(..)), "{ops:?}");
        // Removed later: its entry goes.
        a.apply(&[]).unwrap();
        assert!(a.writer().vips.is_empty());
    }

    /// A removed VIP keeps its prefilter bit for as long as its flows may live, so they
    /// still reach conntrack; a VIP never seen has none.
    #[test]
    fn a_removed_vip_stays_in_the_prefilter_for_its_flows() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let one = svc("198.18.0.10", 80, &["198.18.1.2:80"]);
        let key = vip_key(&one);
        a.apply(&[one]).unwrap();
        a.apply(&[]).unwrap();
        assert!(a.writer().vips.is_empty());
        assert!(filtered_in(&a, &key));
        let never = vip_key(&svc("198.18.0.99", 81, &[]));
        assert!(!filtered_in(&a, &never));
        // With no flow lifetime left, the next apply drops it.
        let mut quick = snat();
        quick.timeouts.tcp_established = Duration::ZERO;
        quick.timeouts.udp = Duration::ZERO;
        let mut b = L4Applier::new(fake(), quick).unwrap();
        b.apply(&[svc("198.18.0.10", 80, &["198.18.1.2:80"])])
            .unwrap();
        b.apply(&[]).unwrap();
        assert!(!filtered_in(&b, &key));
    }

    #[test]
    fn restart_adopts_state_without_rewriting() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let s = vec![
            svc("198.18.0.10", 80, &["198.18.1.2:80", "198.18.2.2:80"]),
            svc("198.18.0.10", 53, &["198.18.1.2:53"]),
        ];
        a.apply(&s).unwrap();
        let mut w = a.writer;
        w.ops.clear();
        let mut b = L4Applier::new(w, snat()).unwrap();
        let r = b.apply(&s).unwrap();
        assert_eq!(r.ring_slots_written, 0, "{r:?}");
        assert_eq!(
            (r.vips_added, r.backends_added, r.backends_freed),
            (0, 0, 0)
        );
    }

    fn udp(vip: &str, port: u16, backends: &[&str]) -> L4Service {
        L4Service {
            protocol: L4Protocol::Udp,
            ..svc(vip, port, backends)
        }
    }

    fn marks(a: &L4Applier<FakeMapWriter>) -> Vec<(SocketAddr, SocketAddr)> {
        a.writer()
            .retired
            .iter()
            .map(|k| (vip_addr(&k.vip), backend_addr(&k.backend)))
            .collect()
    }

    #[test]
    fn a_backend_leaving_a_udp_vip_is_marked_until_it_comes_back() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let vip: SocketAddr = "198.18.0.10:53".parse().unwrap();
        let (b1, b2): (SocketAddr, SocketAddr) = (
            "198.18.1.2:53".parse().unwrap(),
            "198.18.2.2:53".parse().unwrap(),
        );
        let both = ["198.18.1.2:53", "198.18.2.2:53"];
        let r = a
            .apply(&[
                udp("198.18.0.10", 53, &both),
                svc("198.18.0.10", 80, &["198.18.1.2:80", "198.18.2.2:80"]),
            ])
            .unwrap();
        assert_eq!(r.backends_retired, 0);
        // TCP VIPs are never marked: their flows drain on a terminating pod.
        let r = a
            .apply(&[
                udp("198.18.0.10", 53, &["198.18.2.2:53"]),
                svc("198.18.0.10", 80, &["198.18.2.2:80"]),
            ])
            .unwrap();
        assert_eq!(r.backends_retired, 1);
        assert_eq!(marks(&a), vec![(vip, b1)]);
        a.apply(&[udp("198.18.0.10", 53, &["198.18.2.2:53"])])
            .unwrap();
        assert_eq!(
            marks(&a),
            vec![(vip, b1)],
            "an unchanged VIP keeps its marks"
        );
        // Back in the ring: unmarked before the ring names it again.
        a.writer_mut().ops.clear();
        a.apply(&[udp("198.18.0.10", 53, &both)]).unwrap();
        assert!(marks(&a).is_empty());
        let ops = &a.writer().ops;
        let unmarked = ops
            .iter()
            .position(|o| matches!(o, Op::RemoveRetired(_)))
            .unwrap();
        let ring = ops.iter().position(|o| matches!(o, Op::Ring(..))).unwrap();
        assert!(unmarked < ring, "{ops:?}");
        // A VIP removed, or left without endpoints, marks every backend it had.
        a.apply(&[udp("198.18.0.10", 53, &[])]).unwrap();
        assert_eq!(marks(&a), vec![(vip, b1), (vip, b2)]);
        a.apply(&[udp("198.18.0.10", 53, &both)]).unwrap();
        a.apply(&[]).unwrap();
        assert_eq!(marks(&a), vec![(vip, b1), (vip, b2)]);
        // Marks outlive a restart, and a backend back after it is unmarked.
        let w = a.writer;
        let mut b = L4Applier::new(w, snat()).unwrap();
        b.apply(&[udp("198.18.0.10", 53, &["198.18.1.2:53"])])
            .unwrap();
        assert_eq!(marks(&b), vec![(vip, b2)]);
        // A backend that left while no ingressd ran is marked at the first apply after it,
        // from what the adopted ring named.
        b.apply(&[udp("198.18.0.10", 53, &both)]).unwrap();
        let mut c = L4Applier::new(b.writer, snat()).unwrap();
        assert!(marks(&c).is_empty());
        c.apply(&[udp("198.18.0.10", 53, &["198.18.2.2:53"])])
            .unwrap();
        assert_eq!(marks(&c), vec![(vip, b1)]);
    }

    /// An apply that fails half-way keeps the departures it saw: the next one sees the VIP's
    /// new backends as already in place and would not find them again.
    #[test]
    fn a_failed_apply_keeps_its_departures_for_the_next() {
        let mut a = L4Applier::new(fake(), snat())
            .unwrap()
            .with_local_check(|_| true);
        let vip: SocketAddr = "198.18.0.10:53".parse().unwrap();
        let b1: SocketAddr = "198.18.1.2:53".parse().unwrap();
        let both = ["198.18.1.2:53", "198.18.2.2:53"];
        a.apply(&[
            udp("198.18.0.10", 53, &both),
            udp("198.18.0.10", 54, &["198.18.3.2:54"]),
        ])
        .unwrap();
        // :53 loses b1 (its ring is rewritten), then :54's VIP entry fails to go.
        let wanted = [
            udp("198.18.0.10", 53, &["198.18.2.2:53"]),
            udp("198.18.0.10", 54, &[]),
        ];
        a.writer_mut().fail_vip_removals = 1;
        assert!(a.apply(&wanted).is_err());
        a.apply(&wanted).unwrap();
        let got = marks(&a);
        assert!(got.contains(&(vip, b1)), "{got:?}");
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn marks_make_room_by_dropping_the_oldest_and_a_refused_mark_is_no_error() {
        let mut a = L4Applier::new(fake(), snat()).unwrap();
        let backends: Vec<String> = (1..=4).map(|i| format!("198.18.{i}.2:53")).collect();
        let names: Vec<&str> = backends.iter().map(String::as_str).collect();
        a.apply(&[udp("198.18.0.10", 53, &names)]).unwrap();
        a.marks.capacity = 2;
        for keep in [3, 2, 1] {
            a.apply(&[udp("198.18.0.10", 53, &names[..keep])]).unwrap();
        }
        let marked = |a: &L4Applier<FakeMapWriter>| -> Vec<SocketAddr> {
            marks(a).into_iter().map(|(_, b)| b).collect()
        };
        let addr = |i: usize| -> SocketAddr { names[i].parse().unwrap() };
        assert_eq!(
            marked(&a),
            vec![addr(1), addr(2)],
            "the oldest mark made room"
        );
        // A mark the kernel refuses is logged; the apply goes on.
        a.marks.capacity = 10;
        a.writer_mut().max_retired = 2;
        a.apply(&[udp("198.18.0.10", 53, &[])]).unwrap();
        assert_eq!(marked(&a), vec![addr(1), addr(2)]);
        a.apply(&[udp("198.18.0.10", 53, &names[..1])]).unwrap();
        let key = vip_key(&udp("198.18.0.10", 53, &[]));
        assert_eq!(a.writer().vip(&key).map(|m| m.backends), Some(1));
    }

    /// The departures a failed apply saw are not written when the next apply puts the
    /// backends back: they are in use.
    #[test]
    fn departures_undone_after_a_failed_apply_are_not_marked() {
        let mut a = L4Applier::new(fake(), snat())
            .unwrap()
            .with_local_check(|_| true);
        let both = udp("198.18.0.10", 53, &["198.18.1.2:53", "198.18.2.2:53"]);
        a.apply(std::slice::from_ref(&both)).unwrap();
        a.writer_mut().fail_vip_removals = 1;
        assert!(a.apply(&[udp("198.18.0.10", 53, &[])]).is_err());
        a.apply(std::slice::from_ref(&both)).unwrap();
        assert!(marks(&a).is_empty(), "{:?}", marks(&a));
    }

    #[test]
    fn address_conversions_round_trip() {
        for ip in ["198.18.0.1", "2001:db8::1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (w, f) = addr_words(ip);
            assert_eq!(words_addr(w, f), ip);
        }
        let (w, _) = addr_words("1.2.3.4".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [1, 2, 3, 4]);
    }
}
