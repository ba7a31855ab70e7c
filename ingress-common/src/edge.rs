//! Edge protection: sources blocked before they reach the ingress, and new TCP connections
//! rate-limited per source, on the node's ingress destinations (the HTTP and HTTPS listeners
//! and every L4 VIP).

/// `EdgeDest::vip_id` of a destination that is a listener of the node's own stack, not a VIP:
/// a packet that passes the checks goes to the stack.
pub const EDGE_LISTENER: u32 = u32::MAX;

/// Value of EDGE_DESTS, keyed by `l4::VipKey` (address, port, protocol): a protected
/// destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EdgeDest {
    /// The VIP's id, whose counters a drop is charged to and whose packets go on to the
    /// load balancer; `EDGE_LISTENER` for a listener.
    pub vip_id: u32,
    pub _pad: u32,
}

/// Slot 0 of EDGE_CONFIG: the per-source limit on new TCP connections, as a generic cell
/// rate algorithm (one timestamp per source).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EdgeConfig {
    /// Nanoseconds between SYNs a source may send at the sustained rate; 0: no limit.
    pub syn_interval_ns: u64,
    /// How far ahead of the sustained rate a source may run (the burst): `(burst - 1) *
    /// syn_interval_ns`.
    pub syn_tolerance_ns: u64,
}

/// Key of SYN_RATE: a source address (an IPv6 source as its /64, which one host holds).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SourceKey {
    pub addr: [u32; 4],
    /// A whole word, so the key has no padding bytes to zero.
    pub family: u32,
}

/// log2 of the bits in the edge prefilter bitmap, as the VIP prefilter.
pub const EDGE_FILTER_BITS_LOG2: u32 = 16;
/// Bits in the edge prefilter bitmap (an array of u64 words).
pub const EDGE_FILTER_BITS: u32 = 1 << EDGE_FILTER_BITS_LOG2;

/// Bit of a protected destination in the edge prefilter. Computed identically by the kernel
/// and by userspace.
#[inline(always)]
pub fn edge_filter_bit(addr: &[u32; 4], port: u16, proto: u8) -> u32 {
    crate::l4::vip_filter_bit(addr, port, proto)
        >> (crate::l4::VIP_FILTER_BITS_LOG2 - EDGE_FILTER_BITS_LOG2)
}

/// Bit of a protected destination's address alone (port 0, protocol 0): the kernel reads
/// the ports of packets to that address.
#[inline(always)]
pub fn edge_addr_filter_bit(addr: &[u32; 4]) -> u32 {
    edge_filter_bit(addr, 0, 0)
}

const _: () = assert!(core::mem::size_of::<EdgeDest>() == 8);
const _: () = assert!(core::mem::size_of::<EdgeConfig>() == 16);
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);
