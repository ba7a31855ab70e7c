//! Map names, sizes and the pin layout version: the kernel/userspace contract.

/// Bumped whenever a map's key or value layout or its flags change; pinned maps of another
/// version are never adopted.
pub const MAPS_VERSION: u32 = 15;

/// VipKey -> VipMeta.
pub const VIPS: &str = "VIPS";
/// VipAddrKey -> number of VIPs on that address.
pub const VIP_ADDRS: &str = "VIP_ADDRS";
/// Word i of the VIP prefilter bitmap (see `l4::vip_filter_bit`).
pub const VIP_FILTER: &str = "VIP_FILTER";
/// Backend id -> cached next hop towards that backend (written by the kernel).
pub const BACKEND_HOPS: &str = "BACKEND_HOPS";
/// Backend id -> Backend.
pub const BACKENDS: &str = "BACKENDS";
/// Maglev rings: slot g = vip_id * MAGLEV_RING_SIZE + slot is lane g % 2 of element g / 2
/// ([u32; 2] values); an mmap of the array reads as one flat u32 array indexed by g.
pub const MAGLEV: &str = "MAGLEV";
/// RetiredKey (a UDP VIP and a backend that left it) -> 1. Written by userspace.
pub const RETIRED: &str = "RETIRED";
/// Compiled-in capacity of RETIRED: when full, flows stay with backends that left.
pub const MAX_RETIRED: u32 = 16384;
/// Buckets of FlowKey (client side) -> FlowNat (`conntrack::Bucket`).
pub const CONNTRACK: &str = "CONNTRACK";
/// Buckets of FlowKey (backend side reply) -> ReplyNat.
pub const REPLY_NAT: &str = "REPLY_NAT";
/// Slot 0: LbConfig.
pub const LB_CONFIG: &str = "LB_CONFIG";
/// Stat -> Counter, per CPU.
pub const STATS: &str = "STATS";
/// vip_id -> Counter, per CPU.
pub const VIP_STATS: &str = "VIP_STATS";
/// The programs the XDP program tail-calls, by slot (`JUMP_*`).
pub const JUMPS: &str = "JUMPS";
/// Slot of the program translating ICMP errors about NATed flows.
pub const JUMP_ICMP: u32 = 0;
/// Slot of the program answering a packet too big for its egress link with ICMP "too big".
pub const JUMP_TOO_BIG: u32 = 1;
/// Slot of the program that records new flows (and re-checks established ones).
pub const JUMP_FLOW: u32 = 2;
/// Slot of the forwarding program itself, which `xdp_flow` calls back once a flow is recorded.
pub const JUMP_LB: u32 = 3;
/// Slot of the edge program (blocked sources, SYN rate), called for protected destinations.
pub const JUMP_EDGE: u32 = 4;
/// Slots in JUMPS.
pub const JUMP_SLOTS: u32 = 5;
/// Per CPU: what `xdp_lb` hands the programs it tail-calls (flow key, MTU, ...). Pinned with
/// the L4 maps: during a restart the old forwarding program tail-calls the new process's
/// programs, and both must read the same slot.
pub const SCRATCH: &str = "SCRATCH";
/// VipKey of a protected destination -> EdgeDest.
pub const EDGE_DESTS: &str = "EDGE_DESTS";
/// Word i of the edge prefilter bitmap (see `edge::edge_filter_bit`).
pub const EDGE_FILTER: &str = "EDGE_FILTER";
/// Slot 0: EdgeConfig.
pub const EDGE_CONFIG: &str = "EDGE_CONFIG";
/// Blocked IPv4 source prefixes (LPM trie, 4 data bytes in network order) -> 1.
pub const BLOCK_V4: &str = "BLOCK_V4";
/// Blocked IPv6 source prefixes (LPM trie, 16 data bytes) -> 1.
pub const BLOCK_V6: &str = "BLOCK_V6";
/// SourceKey -> the theoretical arrival time (ns) of its next SYN (LRU).
pub const SYN_RATE: &str = "SYN_RATE";
/// Socket cookie -> socket, for the passthrough splice.
pub const SPLICE_SOCKS: &str = "SPLICE_SOCKS";
/// Socket cookie -> SplicePeer.
pub const SPLICE_PEERS: &str = "SPLICE_PEERS";
/// Socket cookie -> SpliceCredit.
pub const SPLICE_CREDIT: &str = "SPLICE_CREDIT";
/// Ring buffer of socket cookies (u64) that began to hold bytes.
pub const SPLICE_HELD: &str = "SPLICE_HELD";

/// Compiled-in VIP capacity; userspace may resize VIPS, MAGLEV and VIP_STATS at load.
pub const DEFAULT_MAX_VIPS: u32 = 64;
/// Compiled-in backend capacity.
pub const DEFAULT_MAX_BACKENDS: u32 = 65536;
/// Compiled-in conntrack capacity (entries in each of CONNTRACK and REPLY_NAT).
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262144;
/// Compiled-in capacity of each block list (prefixes).
pub const MAX_BLOCKED_PREFIXES: u32 = 16384;
/// Compiled-in capacity of the guarded destinations; userspace sizes the map at load to the
/// VIP capacity plus room for the listeners.
pub const MAX_EDGE_DESTS: u32 = 1024;
/// Compiled-in number of sources whose SYN rate is tracked (least recently seen go first).
pub const SYN_RATE_SOURCES: u32 = 65536;
/// Compiled-in passthrough capacity (sockets).
pub const MAX_SPLICE_SOCKS: u32 = 65536;
