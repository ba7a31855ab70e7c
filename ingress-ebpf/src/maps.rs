//! Every map of the kernel programs, one line each: what it maps and who writes it.
//! Names and value types are the contract in `ingress_common::maps`.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf, SockHash},
    macros::btf_map,
};
use ingress_common::{
    conntrack::{buckets_for, Bucket, FlowKey, FlowNat, Hop, ReplyNat},
    counters::{Counter, STAT_COUNT},
    edge::{EdgeConfig, EdgeDest, SourceKey, EDGE_FILTER_BITS},
    l4::{Backend, LbConfig, RetiredKey, VipAddrKey, VipKey, VipMeta, VIP_FILTER_BITS},
    maps::{
        DEFAULT_CONNTRACK_ENTRIES, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, JUMP_SLOTS,
        MAX_BLOCKED_PREFIXES, MAX_EDGE_DESTS, MAX_RETIRED, MAX_SPLICE_SOCKS, SYN_RATE_SOURCES,
    },
    passthrough::{SpliceCredit, SplicePeer},
};

use crate::lb::{
    nat::{Layout, Tuple},
    table::Table,
};

const MAX_VIPS: usize = DEFAULT_MAX_VIPS as usize;
const RING_ENTRIES: usize = (MAX_VIPS * ingress_common::l4::MAGLEV_RING_SIZE as usize).div_ceil(2);
/// Compiled-in buckets of each conntrack table; userspace sizes them at load.
pub const CT_BUCKETS: usize = buckets_for(DEFAULT_CONNTRACK_ENTRIES) as usize;

/// VIP address:port/proto -> id and backend count. Written by userspace.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipMeta, MAX_VIPS> = HashMap::new();

/// VIP address -> number of VIPs on it; identifies malformed traffic aimed at a VIP.
/// Written by userspace.
#[btf_map]
pub static VIP_ADDRS: HashMap<VipAddrKey, u32, MAX_VIPS> = HashMap::new();

/// Prefilter bitmap of VIPs (see `l4::vip_filter_bit`). Written by userspace.
#[btf_map]
pub static VIP_FILTER: Array<u64, { (VIP_FILTER_BITS / 64) as usize }> = Array::new();

/// Backend id -> cached next hop towards it. Written by the XDP program.
#[btf_map]
pub static BACKEND_HOPS: Array<Hop, { DEFAULT_MAX_BACKENDS as usize }> = Array::new();

/// Backend id -> backend endpoint. Written by userspace.
#[btf_map]
pub static BACKENDS: Array<Backend, { DEFAULT_MAX_BACKENDS as usize }> = Array::new();

/// (UDP VIP, backend that left it) -> 1: flows to such a backend move at their next check.
/// Written by userspace.
#[btf_map]
pub static RETIRED: HashMap<RetiredKey, u32, { MAX_RETIRED as usize }> = HashMap::new();

/// Maglev rings: global slot g = vip_id * MAGLEV_RING_SIZE + slot lives in lane g % 2 of
/// element g / 2 (array elements are 8-byte aligned, so pairs waste nothing). Written by
/// userspace through an mmap, hence BPF_F_MMAPABLE.
#[btf_map]
pub static MAGLEV: Array<[u32; 2], RING_ENTRIES, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Client-side flow -> its NAT, as a hash table in an array (see `lb::table`). Written by
/// the XDP program, read by userspace for inspection.
#[btf_map]
pub static CONNTRACK: Array<Bucket<FlowNat>, CT_BUCKETS> = Array::new();

/// Backend-side reply flow -> original client and VIP, laid out as CONNTRACK. Written by the
/// XDP program.
#[btf_map]
pub static REPLY_NAT: Array<Bucket<ReplyNat>, CT_BUCKETS> = Array::new();

/// CONNTRACK through its lookup and insert code.
pub static FLOWS: Table<FlowNat> = Table::new(&CONNTRACK, false);

/// REPLY_NAT through its lookup and insert code.
pub static REPLIES: Table<ReplyNat> = Table::new(&REPLY_NAT, true);

/// Slot 0: node-wide settings (SNAT addresses and ports). Written by userspace.
#[btf_map]
pub static LB_CONFIG: Array<LbConfig, 1> = Array::new();

/// Stat -> packets and bytes, per CPU. Written by the XDP program.
#[btf_map]
pub static STATS: PerCpuArray<Counter, { STAT_COUNT as usize }> = PerCpuArray::new();

/// vip_id -> packets and bytes, per CPU. Written by the XDP program.
#[btf_map]
pub static VIP_STATS: PerCpuArray<Counter, MAX_VIPS> = PerCpuArray::new();

/// Programs tail-called by `xdp_lb` (`JUMP_*` slots: `xdp_icmp`, `xdp_too_big`), each with its
/// own 512-byte stack, which the forwarding program has none to spare of. Written by userspace.
#[btf_map]
pub static JUMPS: ProgramArray<{ JUMP_SLOTS as usize }> = ProgramArray::new();

/// Protected destination (address, port, protocol) -> what it is. Written by userspace.
#[btf_map]
pub static EDGE_DESTS: HashMap<VipKey, EdgeDest, { MAX_EDGE_DESTS as usize }> = HashMap::new();

/// Prefilter bitmap of protected destinations and their addresses (see
/// `edge::edge_filter_bit`). Written by userspace.
#[btf_map]
pub static EDGE_FILTER: Array<u64, { (EDGE_FILTER_BITS / 64) as usize }> = Array::new();

/// Slot 0: the SYN rate limit. Written by userspace.
#[btf_map]
pub static EDGE_CONFIG: Array<EdgeConfig, 1> = Array::new();

/// Blocked IPv4 source prefixes. Written by userspace.
#[btf_map]
pub static BLOCK_V4: LpmTrie<[u8; 4], u32, { MAX_BLOCKED_PREFIXES as usize }> = LpmTrie::new();

/// Blocked IPv6 source prefixes. Written by userspace.
#[btf_map]
pub static BLOCK_V6: LpmTrie<[u8; 16], u32, { MAX_BLOCKED_PREFIXES as usize }> = LpmTrie::new();

/// Source -> when its next SYN is due at the sustained rate (ns). Written by `xdp_edge`.
#[btf_map]
pub static SYN_RATE: LruHashMap<SourceKey, u64, { SYN_RATE_SOURCES as usize }> = LruHashMap::new();

/// Socket cookie -> socket of a spliced passthrough connection. Written by userspace.
#[btf_map]
pub static SPLICE_SOCKS: SockHash<u64, { MAX_SPLICE_SOCKS as usize }> = SockHash::new();

/// Socket cookie -> cookie of the socket that receives its bytes. Written by userspace.
#[btf_map]
pub static SPLICE_PEERS: HashMap<u64, SplicePeer, { MAX_SPLICE_SOCKS as usize }> = HashMap::new();

/// Socket cookie -> how far its bytes may be redirected. Written by userspace.
#[btf_map]
pub static SPLICE_CREDIT: HashMap<u64, SpliceCredit, { MAX_SPLICE_SOCKS as usize }> =
    HashMap::new();

/// Cookies of spliced sockets that began to hold bytes, so userspace relays them without
/// watching every socket. Written by `sk_passthrough`.
#[btf_map]
pub static SPLICE_HELD: RingBuf<u64, { 256 * 1024 }> = RingBuf::new();

/// The 64-byte frame the benchmark generator rewrites into every buffer it sends (live-frame
/// buffers are recycled after the receiver rewrote them). Written by userspace.
#[btf_map]
pub static BENCH_FRAME: Array<[u64; 8], 1> = Array::new();

/// Generator and sink counters of the benchmark fixtures (programs/bench.rs), per CPU.
#[btf_map]
pub static BENCH: PerCpuArray<u64, 4> = PerCpuArray::new();

/// Per-CPU scratch space for the flow keys and entries of one packet, which do not fit the
/// 512-byte BPF stack together with everything else. Kernel-internal.
#[repr(C)]
pub struct Scratch {
    pub key: FlowKey,
    pub rkey: FlowKey,
    /// The forward key of a flow whose SNAT port is being taken over.
    pub okey: FlowKey,
    /// The `bpf_fib_lookup` parameter block (64 bytes, 8-aligned): on the stack it would
    /// push the program past the 512-byte limit.
    pub fib: [u64; 8],
    pub nat: FlowNat,
    pub reply: ReplyNat,
    /// The MTU handed to `xdp_too_big`.
    pub mtu: u32,
    /// The VIP a packet handed to `xdp_too_big` belongs to.
    pub vip_id: u32,
    /// For `xdp_flow`: whether the packet is a SYN (1) and its FIN/RST `seen` bits.
    pub syn: u32,
    pub closing: u32,
    /// For `xdp_flow`: the packet's VIP, if `vip_known` is 1 (new flows).
    pub vip: VipMeta,
    pub vip_known: u32,
    /// For `xdp_flow`, which forwards a new flow's first packet itself: the packet's headers
    /// as `xdp_lb` parsed them, and its addressing.
    pub layout: Layout,
    pub tuple: Tuple,
    /// For `xdp_flow`'s check of an established UDP flow: its VIP and backend.
    pub retired: RetiredKey,
    /// Set by `xdp_flow` just before it calls `xdp_lb` again for the same packet (`AGAIN_*`);
    /// `xdp_lb` clears it on reading.
    pub again: u32,
}

/// `Scratch::again`: a fresh packet.
pub const AGAIN_NONE: u32 = 0;
/// `Scratch::again`: the packet's flow passed its port check.
pub const AGAIN_CHECKED: u32 = 2;

/// An egress interface's MTU as one CPU last read it (see `lb::mtu`). Kernel-internal.
#[repr(C)]
pub struct MtuSlot {
    pub ifindex: u32,
    pub mtu: u32,
    /// `bpf_jiffies64` (low 32 bits) when read; 0 = never.
    pub stamp_jiffies: u32,
}

/// A CPU's last read of the coarse clock (see `lb::expiry::now_secs`). Kernel-internal.
#[repr(C)]
pub struct Clock {
    /// `bpf_jiffies64` (low 32 bits) at the read; 0 = never.
    pub jiffies: u32,
    pub secs: u32,
}

/// Per CPU: the coarse clock as last read. Written and read by the XDP programs only.
#[btf_map]
pub static CLOCK: PerCpuArray<Clock, 1> = PerCpuArray::new();

/// Slots of EGRESS_MTU (interface index modulo this).
pub const MTU_SLOTS: u32 = 64;

/// Egress interface -> MTU, per CPU, direct-mapped. Written and read by the XDP program only.
#[btf_map]
pub static EGRESS_MTU: PerCpuArray<MtuSlot, { MTU_SLOTS as usize }> = PerCpuArray::new();

/// Per CPU: the slot index a conntrack lookup found, stored and read back so the verifier
/// sees an index in 0..WAYS rather than one constant per slot (see `lb::table::opaque`).
/// Kernel-internal.
#[btf_map]
pub static TABLE_WAY: PerCpuArray<u32, 1> = PerCpuArray::new();

/// One Scratch per CPU. Written and read by the XDP program only.
#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();
