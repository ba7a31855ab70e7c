//! ICMP errors about NATed flows: the quoted packet and the outer header are translated like
//! the flow they belong to, and the checksums kept right (the quoted IPv4 header's, ICMP's
//! over the quote, and ICMPv6's pseudo-header over the outer addresses).
use aya_ebpf::programs::XdpContext;
use ingress_common::l4::{PROTO_TCP, PROTO_UDP};

use super::{
    csum::Delta,
    nat::{self, Tuple},
};
use crate::parse::{
    ip::{IPV4_HLEN_MIN, IPV6_HLEN},
    read, write, Truncated,
};

/// Bytes of the ICMP header before the quoted packet.
pub const ICMP_HLEN: usize = 8;

/// The packet an ICMP error quotes, as it was sent. Addresses and ports in network order.
pub struct Quoted {
    pub proto: u8,
    pub tuple: Tuple,
    /// Offset of the quoted IP header.
    pub l3_off: usize,
    /// Offset of the quoted TCP/UDP header.
    pub l4_off: usize,
}

/// Reads the packet quoted at `off`: a TCP or UDP packet of the outer family whose ports are
/// inside the quote. `None` for anything else (other protocols, IPv6 extension headers, IPv4
/// fragments after the first, which carry no ports).
#[inline(always)]
pub fn quoted(ctx: &XdpContext, off: usize, v6: bool) -> Option<Quoted> {
    // Whole fixed headers in one read each: a one-byte read lets LLVM turn its bounds check
    // into a form the verifier does not take as a range proof.
    let (proto, src, dst, l4_off) = if v6 {
        let head = read::<[u8; 8]>(ctx, off).ok()?;
        if head[0] >> 4 != 6 {
            return None;
        }
        (
            head[6],
            read::<[u32; 4]>(ctx, off + 8).ok()?,
            read::<[u32; 4]>(ctx, off + 24).ok()?,
            off + IPV6_HLEN,
        )
    } else {
        let h = read::<[u32; 5]>(ctx, off).ok()?;
        // bpfel: the first byte of a word is its low byte.
        let (vihl, frag, proto) = (h[0] as u8, (h[1] >> 16) as u16, (h[2] >> 8) as u8);
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || ihl < IPV4_HLEN_MIN {
            return None;
        }
        if u16::from_be(frag) & 0x1fff != 0 {
            return None;
        }
        (proto, [h[3], 0, 0, 0], [h[4], 0, 0, 0], off + ihl)
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports = read::<[u16; 2]>(ctx, l4_off).ok()?;
    Some(Quoted {
        proto,
        tuple: Tuple {
            src,
            dst,
            sport: ports[0],
            dport: ports[1],
        },
        l3_off: off,
        l4_off,
    })
}

/// Rewrites an ICMP error at `icmp_off` whose IP header is at `l3_off`: the outer addresses
/// from `outer_old` to `outer_new` (TTL or hop limit decremented), the quoted packet from
/// `q.tuple` to `inner`. The quoted TCP/UDP checksum is left alone: the quote may end before
/// it, and receivers match the quote to a socket without checking it.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    v6: bool,
    l3_off: usize,
    icmp_off: usize,
    outer_old: &Tuple,
    outer_new: &Tuple,
    q: &Quoted,
    inner: &Tuple,
) -> Result<(), Truncated> {
    let mut icmp = Delta::new();
    icmp.addr(v6, &q.tuple.src, &inner.src);
    icmp.addr(v6, &q.tuple.dst, &inner.dst);
    icmp.word16(q.tuple.sport, inner.sport);
    icmp.word16(q.tuple.dport, inner.dport);
    if v6 {
        write(ctx, q.l3_off + 8, inner.src)?;
        write(ctx, q.l3_off + 24, inner.dst)?;
        // ICMPv6's checksum also covers a pseudo-header with the outer addresses.
        icmp.addr(true, &outer_old.src, &outer_new.src);
        icmp.addr(true, &outer_old.dst, &outer_new.dst);
    } else {
        let mut quoted_ip = Delta::new();
        quoted_ip.word32(q.tuple.src[0], inner.src[0]);
        quoted_ip.word32(q.tuple.dst[0], inner.dst[0]);
        let old = read::<u16>(ctx, q.l3_off + 10)?;
        let new = quoted_ip.apply(old);
        write(ctx, q.l3_off + 10, new)?;
        icmp.word16(old, new);
        write(ctx, q.l3_off + 12, inner.src[0])?;
        write(ctx, q.l3_off + 16, inner.dst[0])?;
    }
    write(ctx, q.l4_off, inner.sport)?;
    write(ctx, q.l4_off + 2, inner.dport)?;
    let csum = read::<u16>(ctx, icmp_off + 2)?;
    write(ctx, icmp_off + 2, icmp.apply(csum))?;
    nat::rewrite_ip(ctx, l3_off, v6, outer_old, outer_new)
}
