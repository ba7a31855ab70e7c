//! L4 service table: VIPs, backends and the Maglev lookup ring.

/// Address family tag stored in keys (`AF_INET`).
pub const FAMILY_V4: u8 = 2;
/// Address family tag stored in keys (`AF_INET6`).
pub const FAMILY_V6: u8 = 10;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IPv6 next-header number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// Maglev lookup table size per VIP; prime, so every skip value is a generator.
pub const MAGLEV_RING_SIZE: u32 = 65537;

/// Backend id that means "no backend": slot 0 of the backend array is never used.
pub const NO_BACKEND: u32 = 0;

/// Identifies a VIP: destination address, port and protocol.
///
/// Addresses are in network byte order; an IPv4 address lives in `addr[0]` with the other
/// words zero. `port` is in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// What the kernel needs to know about a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index of this VIP's ring in the Maglev map and of its counters.
    pub id: u32,
    /// Number of backends currently in the ring (0 means drop with `NoBackend`).
    pub backends: u32,
}

/// log2 of the bits in the VIP prefilter bitmap: 2^18 bits (32 KiB) keep false positives
/// under 4% with 10,000 VIPs.
pub const VIP_FILTER_BITS_LOG2: u32 = 18;
/// Bits in the VIP prefilter bitmap (an array of u64 words).
pub const VIP_FILTER_BITS: u32 = 1 << VIP_FILTER_BITS_LOG2;

/// Bit of a VIP in the prefilter: lets the kernel pass most non-VIP packets with one array
/// read instead of a hash lookup. Computed identically by the kernel and by userspace.
#[inline(always)]
pub fn vip_filter_bit(addr: &[u32; 4], port: u16, proto: u8) -> u32 {
    let mut h =
        addr[0] ^ addr[1].rotate_left(7) ^ addr[2].rotate_left(13) ^ addr[3].rotate_left(19);
    h ^= ((port as u32) << 8) ^ proto as u32;
    h = h.wrapping_mul(0x9e37_79b1);
    h >> (32 - VIP_FILTER_BITS_LOG2)
}

/// Bit of a VIP's address alone in the same prefilter (as port 0, protocol 0, which no VIP
/// has): the kernel passes traffic for other addresses before reading its ports.
#[inline(always)]
pub fn vip_addr_filter_bit(addr: &[u32; 4]) -> u32 {
    vip_filter_bit(addr, 0, 0)
}

/// A VIP address alone: tells "malformed packet aimed at a VIP" from "not ours".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VipAddrKey {
    pub addr: [u32; 4],
    /// A whole word, so the key has no padding bytes to zero.
    pub family: u32,
}

/// One backend endpoint (pod address and port).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Backend {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
}

/// A backend that left a UDP VIP: the VIP's flows still pinned to it move to another
/// backend at their next periodic check (a UDP client that keeps sending would otherwise
/// stay pinned to a pod that is gone, as long as it sends; kube-proxy clears such conntrack
/// entries for the same reason). TCP flows are left to drain, as a terminating pod may still
/// be finishing them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RetiredKey {
    pub vip: VipKey,
    pub backend: Backend,
}

/// Node-wide settings of the L4 path, slot 0 of the config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// Source address written into forwarded IPv4 packets (network byte order).
    pub snat_v4: u32,
    /// Source address written into forwarded IPv6 packets (network byte order).
    pub snat_v6: [u32; 4],
    /// First source port handed out by SNAT (host byte order).
    pub port_min: u16,
    /// Number of ports in the SNAT range (host byte order).
    pub port_count: u16,
    /// Non-zero once userspace has written this slot; until then VIP traffic is passed.
    pub ready: u32,
    /// Seconds after which the SNAT port of a TCP flow with no packets may be reused.
    pub tcp_established_secs: u32,
    /// Seconds after the last packet of a TCP flow that saw a FIN before its port is reused.
    pub tcp_time_wait_secs: u32,
    /// Seconds after the last packet of a TCP flow that saw an RST before its port is reused.
    pub tcp_close_secs: u32,
    /// Seconds after which the SNAT port of a UDP flow with no packets may be reused.
    pub udp_secs: u32,
    /// Seconds after which the SNAT port of a flow the backend never answered (TCP or UDP)
    /// may be reused, if shorter than the timeouts above.
    pub unreplied_secs: u32,
    /// Buckets in CONNTRACK (its max_entries; 0 until userspace writes this slot).
    pub conntrack_buckets: u32,
    /// Buckets in REPLY_NAT.
    pub reply_buckets: u32,
    /// Seed of the conntrack hash (`conntrack::place`): random, chosen once per set of maps.
    pub conntrack_seed: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipMeta>() == 8);
const _: () = assert!(core::mem::size_of::<VipAddrKey>() == 20);
const _: () = assert!(core::mem::size_of::<Backend>() == 20);
const _: () = assert!(core::mem::size_of::<LbConfig>() == 64);
const _: () = assert!(core::mem::size_of::<RetiredKey>() == 40);
