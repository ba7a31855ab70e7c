//! The real [`MapWriter`]: aya map handles on the loaded (usually pinned) maps, and the Maglev
//! ring written through an mmap of the array so a table change costs a memory compare, not
//! 65,537 syscalls.
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use ingress_common::{
    conntrack::Hop,
    counters::Counter,
    l4::{Backend, LbConfig, RetiredKey, VipAddrKey, VipKey, VipMeta},
    maps as names,
};

use super::{Capacity, KernelState, MapError, MapWriter};

fn map_err(op: &'static str, map: &'static str) -> impl Fn(aya::maps::MapError) -> MapError {
    move |source| MapError::Map { op, map, source }
}

/// A shared, writable mapping of a `BPF_F_MMAPABLE` array of `u32`.
pub(crate) struct MmapRing {
    ptr: NonNull<u32>,
    len: usize,
    bytes: usize,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value and only ever accessed as atomics.
unsafe impl Send for MmapRing {}
// SAFETY: as above: shared access is through AtomicU32 only.
unsafe impl Sync for MmapRing {}

impl MmapRing {
    pub(crate) fn new(map: MapData, entries: u32) -> Result<Self, MapError> {
        let page = 4096usize;
        let bytes = (entries as usize * 4).div_ceil(page) * page;
        let fd = map.fd().as_fd();
        // SAFETY: mapping a BPF array fd of at least `bytes` bytes, shared and writable; the
        // kernel validates the length and flags and we check the result.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MapError::Mmap {
                map: names::MAGLEV,
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(p.cast::<u32>()).ok_or(MapError::Mmap {
            map: names::MAGLEV,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(MmapRing {
            ptr,
            len: entries as usize,
            bytes,
            _map: map,
        })
    }

    /// The ring words; atomics because the kernel reads them while we write.
    pub(crate) fn words(&self) -> &[AtomicU32] {
        // SAFETY: ptr covers len page-aligned u32 values for the life of self, and AtomicU32
        // has the layout of u32.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU32>(), self.len) }
    }
}

impl Drop for MmapRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}

/// Writes the L4 maps of a loaded object.
pub struct AyaMapWriter {
    vips: HashMap<MapData, VipKey, VipMeta>,
    vip_addrs: HashMap<MapData, VipAddrKey, u32>,
    backends: Array<MapData, Backend>,
    config: Array<MapData, LbConfig>,
    vip_filter: Array<MapData, u64>,
    backend_hops: Array<MapData, Hop>,
    ring: MmapRing,
    capacity: Capacity,
    /// Conntrack geometry and hash seed, stamped into every config written (see `conntrack`).
    tables: Tables,
    vip_stats: PerCpuArray<MapData, Counter>,
    retired: HashMap<MapData, RetiredKey, u32>,
}

/// What the kernel needs in `LbConfig` to find flows in the conntrack tables.
#[derive(Clone, Copy, Debug)]
struct Tables {
    conntrack_buckets: u32,
    reply_buckets: u32,
    seed: u32,
}

fn buckets(ebpf: &aya::Ebpf, name: &'static str) -> Result<u32, MapError> {
    match ebpf.map(name) {
        Some(Map::Array(d)) => Ok(d.info().map_err(map_err("info", name))?.max_entries()),
        _ => Err(MapError::Missing(name)),
    }
}

fn take(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Map, MapError> {
    ebpf.take_map(name).ok_or(MapError::Missing(name))
}

fn data(map: Map, name: &'static str) -> Result<MapData, MapError> {
    match map {
        Map::Array(d) | Map::HashMap(d) => Ok(d),
        _ => Err(MapError::Missing(name)),
    }
}

impl AyaMapWriter {
    /// Takes the L4 maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut aya::Ebpf) -> Result<Self, MapError> {
        let vips =
            HashMap::try_from(take(ebpf, names::VIPS)?).map_err(map_err("open", names::VIPS))?;
        let vip_addrs = HashMap::try_from(take(ebpf, names::VIP_ADDRS)?)
            .map_err(map_err("open", names::VIP_ADDRS))?;
        let backends: Array<MapData, Backend> = Array::try_from(take(ebpf, names::BACKENDS)?)
            .map_err(map_err("open", names::BACKENDS))?;
        let config: Array<MapData, LbConfig> = Array::try_from(take(ebpf, names::LB_CONFIG)?)
            .map_err(map_err("open", names::LB_CONFIG))?;
        // Flows already in pinned tables were placed with the seed in the pinned config: keep
        // it. A fresh set of maps gets a new random one.
        let seed = match config.get(&0, 0) {
            Ok(c) if c.conntrack_seed != 0 => c.conntrack_seed,
            _ => rand::random_range(1..=u32::MAX),
        };
        let tables = Tables {
            conntrack_buckets: buckets(ebpf, names::CONNTRACK)?,
            reply_buckets: buckets(ebpf, names::REPLY_NAT)?,
            seed,
        };
        let vip_filter = Array::try_from(take(ebpf, names::VIP_FILTER)?)
            .map_err(map_err("open", names::VIP_FILTER))?;
        let backend_hops = Array::try_from(take(ebpf, names::BACKEND_HOPS)?)
            .map_err(map_err("open", names::BACKEND_HOPS))?;
        let ring_map = data(take(ebpf, names::MAGLEV)?, names::MAGLEV)?;
        // Elements are [u32; 2]: the mapping is a flat u32 array of twice the entries.
        let slots = ring_map
            .info()
            .map_err(map_err("info", names::MAGLEV))?
            .max_entries()
            * 2;
        let max_backends = backends.len();
        let ring_size = ingress_common::l4::MAGLEV_RING_SIZE;
        let ring = MmapRing::new(ring_map, slots)?;
        let vip_stats = super::counters::open(ebpf, names::VIP_STATS)?;
        let retired = HashMap::try_from(take(ebpf, names::RETIRED)?)
            .map_err(map_err("open", names::RETIRED))?;
        Ok(AyaMapWriter {
            vips,
            vip_addrs,
            backends,
            config,
            vip_filter,
            backend_hops,
            ring,
            capacity: Capacity {
                max_vips: slots / ring_size,
                max_backends,
                ring_size,
            },
            tables,
            vip_stats,
            retired,
        })
    }
}

/// Makes a prefilter bitmap equal `words`, writing only words that differ (a word being
/// rewritten is never seen empty by the kernel).
pub(crate) fn write_bitmap(
    array: &mut Array<MapData, u64>,
    words: &[u64],
    name: &'static str,
) -> Result<(), MapError> {
    for (i, w) in words.iter().enumerate() {
        let i = i as u32;
        let cur = array.get(&i, 0).map_err(map_err("read", name))?;
        if cur != *w {
            array.set(i, w, 0).map_err(map_err("update", name))?;
        }
    }
    Ok(())
}

impl MapWriter for AyaMapWriter {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn read_state(&self) -> Result<KernelState, MapError> {
        let mut state = KernelState::default();
        for entry in self.vips.iter() {
            state
                .vips
                .push(entry.map_err(map_err("iterate", names::VIPS))?);
        }
        for entry in self.vip_addrs.iter() {
            state
                .vip_addrs
                .push(entry.map_err(map_err("iterate", names::VIP_ADDRS))?);
        }
        for (i, b) in self.backends.iter().enumerate() {
            let b = b.map_err(map_err("read", names::BACKENDS))?;
            if b.family != 0 {
                state.backends.push((i as u32, b));
            }
        }
        for key in self.retired.keys() {
            state
                .retired
                .push(key.map_err(map_err("iterate", names::RETIRED))?);
        }
        Ok(state)
    }

    fn write_config(&mut self, cfg: &LbConfig) -> Result<(), MapError> {
        let cfg = LbConfig {
            conntrack_buckets: self.tables.conntrack_buckets,
            reply_buckets: self.tables.reply_buckets,
            conntrack_seed: self.tables.seed,
            ..*cfg
        };
        self.config
            .set(0, cfg, 0)
            .map_err(map_err("update", names::LB_CONFIG))
    }

    fn put_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), MapError> {
        self.vips
            .insert(key, meta, 0)
            .map_err(map_err("update", names::VIPS))
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapError> {
        self.vips
            .remove(key)
            .map_err(map_err("delete", names::VIPS))
    }

    fn put_vip_addr(&mut self, key: &VipAddrKey, count: u32) -> Result<(), MapError> {
        self.vip_addrs
            .insert(key, count, 0)
            .map_err(map_err("update", names::VIP_ADDRS))
    }

    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), MapError> {
        self.vip_addrs
            .remove(key)
            .map_err(map_err("delete", names::VIP_ADDRS))
    }

    fn write_vip_filter(&mut self, words: &[u64]) -> Result<(), MapError> {
        write_bitmap(&mut self.vip_filter, words, names::VIP_FILTER)
    }

    fn put_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapError> {
        // A reused id must not inherit the next hop cached for its previous backend: cleared
        // before (so a lookup racing the write starts over) and after the write.
        let clear = |hops: &mut Array<MapData, Hop>| {
            hops.set(id, Hop::default(), 0)
                .map_err(map_err("update", names::BACKEND_HOPS))
        };
        clear(&mut self.backend_hops)?;
        self.backends
            .set(id, backend, 0)
            .map_err(map_err("update", names::BACKENDS))?;
        clear(&mut self.backend_hops)
    }

    fn reset_vip_stats(&mut self, vip_id: u32) -> Result<(), MapError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapError::Cpus(e))?;
        let zeros =
            PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(MapError::Cpus)?;
        self.vip_stats
            .set(vip_id, zeros, 0)
            .map_err(map_err("update", names::VIP_STATS))
    }

    fn put_retired(&mut self, key: &RetiredKey) -> Result<(), MapError> {
        self.retired
            .insert(key, 1, 0)
            .map_err(map_err("update", names::RETIRED))
    }

    fn remove_retired(&mut self, key: &RetiredKey) -> Result<(), MapError> {
        match self.retired.remove(key) {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            other => other.map_err(map_err("delete", names::RETIRED)),
        }
    }

    fn ring_ids(&self, vip_id: u32) -> Result<std::collections::BTreeSet<u32>, MapError> {
        let size = self.capacity.ring_size as usize;
        let start = vip_id as usize * size;
        let words = self.ring.words();
        let slots = words.get(start..start + size).ok_or(MapError::OutOfRange {
            what: "vip id",
            index: vip_id,
            capacity: self.capacity.max_vips,
        })?;
        Ok(slots
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|id| *id != ingress_common::l4::NO_BACKEND)
            .collect())
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
        let start = vip_id as usize * n;
        let dst = &self.ring.words()[start..start + n];
        let mut written = 0;
        for (d, s) in dst.iter().zip(ring) {
            if d.load(Ordering::Relaxed) != *s {
                d.store(*s, Ordering::Relaxed);
                written += 1;
            }
        }
        Ok(written)
    }
}
