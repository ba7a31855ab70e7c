//! Header rewrite: addresses, ports, TTL, MACs, with incremental checksum updates.
use aya_ebpf::programs::XdpContext;
use ingress_common::l4::{LbConfig, FAMILY_V6, PROTO_UDP};

use super::{copy_addr, csum::Delta};
use crate::parse::{read, write, Truncated};

/// The addressing of a packet: before or after translation. Ports in network byte order.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
}

/// Mask for header offsets (see `rewrite`).
const HEADER_BOUND: usize = 0x1ff;

/// Where the headers are and what kind they are.
#[derive(Clone, Copy)]
pub struct Layout {
    pub family: u8,
    pub proto: u8,
    pub l3_off: usize,
    pub l4_off: usize,
    pub csum_off: usize,
    /// Frame carries an 802.1Q tag.
    pub vlan: bool,
    /// Bytes from the start of the IP header to the end of the datagram.
    pub ip_len: u16,
    /// Must not be fragmented (IPv4 DF, or IPv6).
    pub dont_fragment: bool,
}

/// Writes the next hop's MACs into the Ethernet header.
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, smac: [u8; 6], dmac: [u8; 6]) -> Result<(), Truncated> {
    write(ctx, 0, dmac)?;
    write(ctx, 6, smac)
}

/// Rewrites `old` into `new`, decrements the TTL or hop limit, and fixes the IPv4 header
/// checksum and the TCP/UDP checksum (whose pseudo-header covers the addresses).
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, l: &Layout, old: &Tuple, new: &Tuple) -> Result<(), Truncated> {
    let v6 = l.family == FAMILY_V6;
    let mut l4 = Delta::new();
    l4.addr(v6, &old.src, &new.src);
    l4.addr(v6, &old.dst, &new.dst);
    l4.word16(old.sport, new.sport);
    l4.word16(old.dport, new.dport);

    // A layout handed from xdp_lb to xdp_flow through a map comes back with offsets the
    // verifier knows nothing of, and it refuses packet pointers moved by unbounded values:
    // bound them (every header we parse ends well within HEADER_BOUND).
    let (l3_off, l4_off, csum_off) = (
        l.l3_off & HEADER_BOUND,
        l.l4_off & HEADER_BOUND,
        l.csum_off & HEADER_BOUND,
    );
    rewrite_ip(ctx, l3_off, v6, old, new)?;
    write(ctx, l4_off, new.sport)?;
    write(ctx, l4_off + 2, new.dport)?;
    let csum = read::<u16>(ctx, csum_off)?;
    if l.proto == PROTO_UDP && csum == 0 && !v6 {
        // IPv4 UDP without checksum stays without one.
        return Ok(());
    }
    let mut out = l4.apply(csum);
    if l.proto == PROTO_UDP && out == 0 {
        out = 0xffff;
    }
    write(ctx, csum_off, out)
}

/// Rewrites the addresses of the IP header at `l3_off` from `old` to `new` (ports are not
/// looked at), decrements the TTL or hop limit, and fixes the IPv4 header checksum.
#[inline(always)]
pub fn rewrite_ip(
    ctx: &XdpContext,
    l3_off: usize,
    v6: bool,
    old: &Tuple,
    new: &Tuple,
) -> Result<(), Truncated> {
    if v6 {
        write(ctx, l3_off + 8, new.src)?;
        write(ctx, l3_off + 24, new.dst)?;
        let hop = read::<u8>(ctx, l3_off + 7)?;
        write(ctx, l3_off + 7, hop.wrapping_sub(1))?;
    } else {
        // TTL and protocol share one 16-bit word of the header checksum.
        let ttl_proto = read::<u16>(ctx, l3_off + 8)?;
        let ttl = read::<u8>(ctx, l3_off + 8)?;
        write(ctx, l3_off + 8, ttl.wrapping_sub(1))?;
        let new_ttl_proto = read::<u16>(ctx, l3_off + 8)?;
        let mut ip = Delta::new();
        ip.word32(old.src[0], new.src[0]);
        ip.word32(old.dst[0], new.dst[0]);
        ip.word16(ttl_proto, new_ttl_proto);
        let csum = read::<u16>(ctx, l3_off + 10)?;
        write(ctx, l3_off + 10, ip.apply(csum))?;
        write(ctx, l3_off + 12, new.src[0])?;
        write(ctx, l3_off + 16, new.dst[0])?;
    }
    Ok(())
}

/// The node's SNAT address for the family (`v6`), as an address array.
#[inline(always)]
pub fn snat_addr(cfg: &LbConfig, v6: bool) -> [u32; 4] {
    if v6 {
        copy_addr(&cfg.snat_v6)
    } else {
        [cfg.snat_v4, 0, 0, 0]
    }
}

/// Whether `port_be` (network order) is one of the SNAT ports handed out.
#[inline(always)]
pub fn in_snat_range(port_be: u16, cfg: &LbConfig) -> bool {
    (u16::from_be(port_be).wrapping_sub(cfg.port_min) as u32) < cfg.port_count as u32
}
