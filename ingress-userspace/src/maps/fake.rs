//! A [`MapWriter`] that keeps the maps in memory and records every operation, so the control
//! plane is tested without root.
use std::collections::{BTreeMap, BTreeSet};

use ingress_common::l4::{Backend, LbConfig, RetiredKey, VipAddrKey, VipKey, VipMeta};

use super::{Capacity, KernelState, MapError, MapWriter};

/// One recorded write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Config,
    PutVip(VipKey, VipMeta),
    RemoveVip(VipKey),
    PutVipAddr(VipAddrKey, u32),
    RemoveVipAddr(VipAddrKey),
    PutBackend(u32, Backend),
    /// vip id and number of slots written.
    Ring(u32, usize),
    /// Number of prefilter words written.
    Filter(usize),
    /// Per-VIP counters zeroed for this vip id.
    ResetVipStats(u32),
    PutRetired(RetiredKey),
    RemoveRetired(RetiredKey),
}

/// In-memory maps plus an operation log.
#[derive(Debug)]
pub struct FakeMapWriter {
    pub capacity: Capacity,
    pub config: LbConfig,
    pub vips: BTreeMap<[u8; 20], (VipKey, VipMeta)>,
    pub vip_addrs: BTreeMap<[u8; 20], (VipAddrKey, u32)>,
    pub backends: Vec<Backend>,
    pub rings: Vec<u32>,
    pub vip_filter: Vec<u64>,
    pub ops: Vec<Op>,
    /// VIP deletes still to fail, to test recovery from a kernel refusal.
    pub fail_vip_removals: u32,
    pub retired: BTreeSet<RetiredKey>,
    /// RETIRED's capacity: a put beyond it fails, as the kernel's does when the map is full.
    pub max_retired: usize,
}

fn vip_bytes(k: &VipKey) -> [u8; 20] {
    let mut b = [0u8; 20];
    for (i, w) in k.addr.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    b[16..18].copy_from_slice(&k.port.to_ne_bytes());
    b[18] = k.proto;
    b[19] = k.family;
    b
}

fn addr_bytes(k: &VipAddrKey) -> [u8; 20] {
    let mut b = [0u8; 20];
    for (i, w) in k.addr.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    b[16] = k.family as u8;
    b
}

impl FakeMapWriter {
    /// Empty maps of the given size.
    pub fn new(capacity: Capacity) -> Self {
        FakeMapWriter {
            capacity,
            config: LbConfig::default(),
            vips: BTreeMap::new(),
            vip_addrs: BTreeMap::new(),
            backends: vec![Backend::default(); capacity.max_backends as usize],
            rings: vec![0; (capacity.max_vips * capacity.ring_size) as usize],
            vip_filter: vec![0; (ingress_common::l4::VIP_FILTER_BITS / 64) as usize],
            ops: Vec::new(),
            fail_vip_removals: 0,
            retired: BTreeSet::new(),
            max_retired: ingress_common::maps::MAX_RETIRED as usize,
        }
    }

    /// The ring of one VIP.
    pub fn ring(&self, vip_id: u32) -> &[u32] {
        let n = self.capacity.ring_size as usize;
        &self.rings[vip_id as usize * n..(vip_id as usize + 1) * n]
    }

    /// Looks up a VIP.
    pub fn vip(&self, key: &VipKey) -> Option<VipMeta> {
        self.vips.get(&vip_bytes(key)).map(|(_, m)| *m)
    }

    /// VIP address counts.
    pub fn vip_addr(&self, key: &VipAddrKey) -> Option<u32> {
        self.vip_addrs.get(&addr_bytes(key)).map(|(_, c)| *c)
    }
}

impl MapWriter for FakeMapWriter {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn read_state(&self) -> Result<KernelState, MapError> {
        Ok(KernelState {
            vips: self.vips.values().copied().collect(),
            backends: self
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.family != 0)
                .map(|(i, b)| (i as u32, *b))
                .collect(),
            vip_addrs: self.vip_addrs.values().copied().collect(),
            retired: self.retired.iter().copied().collect(),
        })
    }

    fn write_config(&mut self, cfg: &LbConfig) -> Result<(), MapError> {
        self.config = *cfg;
        self.ops.push(Op::Config);
        Ok(())
    }

    fn put_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), MapError> {
        self.vips.insert(vip_bytes(key), (*key, *meta));
        self.ops.push(Op::PutVip(*key, *meta));
        Ok(())
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapError> {
        if self.fail_vip_removals > 0 {
            self.fail_vip_removals -= 1;
            return Err(MapError::Missing("VIPS (injected failure)"));
        }
        self.vips.remove(&vip_bytes(key));
        self.ops.push(Op::RemoveVip(*key));
        Ok(())
    }

    fn put_vip_addr(&mut self, key: &VipAddrKey, count: u32) -> Result<(), MapError> {
        self.vip_addrs.insert(addr_bytes(key), (*key, count));
        self.ops.push(Op::PutVipAddr(*key, count));
        Ok(())
    }

    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), MapError> {
        self.vip_addrs.remove(&addr_bytes(key));
        self.ops.push(Op::RemoveVipAddr(*key));
        Ok(())
    }

    fn write_vip_filter(&mut self, words: &[u64]) -> Result<(), MapError> {
        let mut n = 0;
        for (d, s) in self.vip_filter.iter_mut().zip(words) {
            if d != s {
                *d = *s;
                n += 1;
            }
        }
        if n > 0 {
            self.ops.push(Op::Filter(n));
        }
        Ok(())
    }

    fn put_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapError> {
        let cap = self.capacity.max_backends;
        let slot = self
            .backends
            .get_mut(id as usize)
            .ok_or(MapError::OutOfRange {
                what: "backend",
                index: id,
                capacity: cap,
            })?;
        *slot = *backend;
        self.ops.push(Op::PutBackend(id, *backend));
        Ok(())
    }

    fn reset_vip_stats(&mut self, vip_id: u32) -> Result<(), MapError> {
        if vip_id >= self.capacity.max_vips {
            return Err(MapError::OutOfRange {
                what: "vip counters",
                index: vip_id,
                capacity: self.capacity.max_vips,
            });
        }
        self.ops.push(Op::ResetVipStats(vip_id));
        Ok(())
    }

    fn put_retired(&mut self, key: &RetiredKey) -> Result<(), MapError> {
        if self.retired.len() >= self.max_retired && !self.retired.contains(key) {
            return Err(MapError::Missing("RETIRED (full)"));
        }
        self.retired.insert(*key);
        self.ops.push(Op::PutRetired(*key));
        Ok(())
    }

    fn ring_ids(&self, vip_id: u32) -> Result<BTreeSet<u32>, MapError> {
        Ok(self
            .ring(vip_id)
            .iter()
            .copied()
            .filter(|id| *id != 0)
            .collect())
    }

    fn remove_retired(&mut self, key: &RetiredKey) -> Result<(), MapError> {
        self.retired.remove(key);
        self.ops.push(Op::RemoveRetired(*key));
        Ok(())
    }

    fn write_ring(&mut self, vip_id: u32, ring: &[u32]) -> Result<usize, MapError> {
        let n = self.capacity.ring_size as usize;
        if vip_id >= self.capacity.max_vips || ring.len() != n {
            return Err(MapError::OutOfRange {
                what: "vip ring",
                index: vip_id,
                capacity: self.capacity.max_vips,
            });
        }
        let dst = &mut self.rings[vip_id as usize * n..(vip_id as usize + 1) * n];
        let mut written = 0;
        for (d, s) in dst.iter_mut().zip(ring) {
            if d != s {
                *d = *s;
                written += 1;
            }
        }
        self.ops.push(Op::Ring(vip_id, written));
        Ok(written)
    }
}
