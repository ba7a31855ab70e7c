//! Kernel maps: the [`MapWriter`] seam the appliers talk to, the aya-backed writer, a fake
//! that records operations, the loader that loads/pins/attaches, and counter readers.
//!
//! This is the only userspace module allowed `unsafe` (the mmap of the Maglev ring).

pub mod counters;
pub mod edge;
pub mod fake;
pub mod kernel_log;
pub mod loader;
pub mod local_addrs;
pub mod maglev;
pub mod neigh;
pub mod pinned;
pub mod writer;

use ingress_common::l4::{Backend, LbConfig, RetiredKey, VipAddrKey, VipKey, VipMeta};
use thiserror::Error;

/// The kernel programs, built by build.rs (aya-build) and embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingress"));

/// A failed map operation, naming the map and the operation.
#[derive(Debug, Error)]
pub enum MapError {
    #[error("{op} on map {map}: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the loaded object")]
    Missing(&'static str),
    #[error("mmap of map {map}: {source}")]
    Mmap {
        map: &'static str,
        source: std::io::Error,
    },
    #[error("counting possible CPUs for a per-CPU map: {0}")]
    Cpus(std::io::Error),
    #[error("{what} {index} out of range (capacity {capacity})")]
    OutOfRange {
        what: &'static str,
        index: u32,
        capacity: u32,
    },
}

/// What the maps hold now; read once when adopting pinned maps after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    pub vips: Vec<(VipKey, VipMeta)>,
    /// Non-empty backend slots.
    pub backends: Vec<(u32, Backend)>,
    pub vip_addrs: Vec<(VipAddrKey, u32)>,
    /// Backends that left a UDP VIP (see `RetiredKey`).
    pub retired: Vec<RetiredKey>,
}

/// Sizes the loaded maps were created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub max_vips: u32,
    pub max_backends: u32,
    pub ring_size: u32,
}

/// The one seam between the appliers and the kernel maps. Each call is one logical update;
/// callers order them so the kernel never sees a VIP whose ring or backends are missing.
pub trait MapWriter: Send {
    /// Map sizes.
    fn capacity(&self) -> Capacity;
    /// Current contents of the VIP and backend maps.
    fn read_state(&self) -> Result<KernelState, MapError>;
    /// Writes the node-wide settings.
    fn write_config(&mut self, cfg: &LbConfig) -> Result<(), MapError>;
    /// Adds or updates a VIP.
    fn put_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), MapError>;
    /// Removes a VIP.
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapError>;
    /// Sets how many VIPs live on an address.
    fn put_vip_addr(&mut self, key: &VipAddrKey, count: u32) -> Result<(), MapError>;
    /// Forgets a VIP address.
    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), MapError>;
    /// Makes the VIP prefilter bitmap equal `words`, writing only words that differ.
    fn write_vip_filter(&mut self, words: &[u64]) -> Result<(), MapError>;
    /// Writes backend slot `id` (an all-zero backend frees it).
    fn put_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapError>;
    /// Zeroes the per-VIP counters of `vip_id`, on every CPU (an id handed to a new VIP must
    /// not carry the traffic of the VIP that had it before).
    fn reset_vip_stats(&mut self, vip_id: u32) -> Result<(), MapError>;
    /// Makes the ring of `vip_id` equal to `ring` (backend ids, `ring_size` long), writing
    /// only slots that differ; returns how many were written.
    fn write_ring(&mut self, vip_id: u32, ring: &[u32]) -> Result<usize, MapError>;
    /// The backend ids the ring of `vip_id` names (read when adopting pinned maps).
    fn ring_ids(&self, vip_id: u32) -> Result<std::collections::BTreeSet<u32>, MapError>;
    /// Marks a backend as gone from a UDP VIP: the VIP's flows to it move elsewhere.
    fn put_retired(&mut self, key: &RetiredKey) -> Result<(), MapError>;
    /// Forgets such a mark (the backend is back, or the mark is dropped for room); one
    /// already gone is no error.
    fn remove_retired(&mut self, key: &RetiredKey) -> Result<(), MapError>;
}
