//! Every map of the kernel programs, one line each: what it maps and who writes it.
//! Names and value types are the contract in `ingress_common::maps`.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, SockHash},
    macros::btf_map,
};
use ingress_common::{
    conntrack::{FlowKey, FlowNat, ReplyNat},
    counters::{Counter, STAT_COUNT},
    l4::{Backend, LbConfig, VipAddrKey, VipKey, VipMeta},
    maps::{DEFAULT_CONNTRACK_ENTRIES, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, MAX_SPLICE_SOCKS},
    passthrough::SplicePeer,
};

const MAX_VIPS: usize = DEFAULT_MAX_VIPS as usize;
const RING_ENTRIES: usize = MAX_VIPS * ingress_common::l4::MAGLEV_RING_SIZE as usize;
const CT_ENTRIES: usize = DEFAULT_CONNTRACK_ENTRIES as usize;

/// VIP address:port/proto -> id and backend count. Written by userspace.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipMeta, MAX_VIPS> = HashMap::new();

/// VIP address -> number of VIPs on it; identifies malformed traffic aimed at a VIP.
/// Written by userspace.
#[btf_map]
pub static VIP_ADDRS: HashMap<VipAddrKey, u32, MAX_VIPS> = HashMap::new();

/// Backend id -> backend endpoint. Written by userspace.
#[btf_map]
pub static BACKENDS: Array<Backend, { DEFAULT_MAX_BACKENDS as usize }> = Array::new();

/// vip_id * MAGLEV_RING_SIZE + slot -> backend id. Written by userspace (Maglev tables).
#[btf_map]
pub static MAGLEV: Array<u32, RING_ENTRIES> = Array::new();

/// Client-side flow -> its NAT. Written by the XDP program, read by userspace for inspection.
#[btf_map]
pub static CONNTRACK: LruHashMap<FlowKey, FlowNat, CT_ENTRIES> = LruHashMap::new();

/// Backend-side reply flow -> original client and VIP. Written by the XDP program.
#[btf_map]
pub static REPLY_NAT: LruHashMap<FlowKey, ReplyNat, CT_ENTRIES> = LruHashMap::new();

/// Slot 0: node-wide settings (SNAT addresses and ports). Written by userspace.
#[btf_map]
pub static LB_CONFIG: Array<LbConfig, 1> = Array::new();

/// Stat -> packets and bytes, per CPU. Written by the XDP program.
#[btf_map]
pub static STATS: PerCpuArray<Counter, { STAT_COUNT as usize }> = PerCpuArray::new();

/// vip_id -> packets and bytes, per CPU. Written by the XDP program.
#[btf_map]
pub static VIP_STATS: PerCpuArray<Counter, MAX_VIPS> = PerCpuArray::new();

/// Socket cookie -> socket of a spliced passthrough connection. Written by userspace.
#[btf_map]
pub static SPLICE_SOCKS: SockHash<u64, { MAX_SPLICE_SOCKS as usize }> = SockHash::new();

/// Socket cookie -> cookie of the socket that receives its bytes. Written by userspace.
#[btf_map]
pub static SPLICE_PEERS: HashMap<u64, SplicePeer, { MAX_SPLICE_SOCKS as usize }> =
    HashMap::new();
