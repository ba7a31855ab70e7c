//! IPv4 and IPv6 headers: addresses, protocol and where L4 starts.
use aya_ebpf::programs::XdpContext;
use ingress_common::l4::{FAMILY_V4, FAMILY_V6};

use super::{read, Truncated};

pub const IPV4_HLEN_MIN: usize = 20;
pub const IPV6_HLEN: usize = 40;

/// A parsed IP header. Addresses keep network byte order; IPv4 uses word 0 only.
pub struct L3 {
    pub family: u8,
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub l4_off: usize,
    /// Bytes from the start of the IP header to the end of the datagram.
    pub ip_len: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 only: fragment (MF set or offset non-zero).
    pub fragment: bool,
    /// Must not be fragmented: IPv4 with DF set, and every IPv6 packet.
    pub dont_fragment: bool,
}

/// What is wrong with an IP header, once the addresses are known.
pub enum IpError {
    /// Too short to read the addresses: whose packet it is cannot be told.
    Unparsed,
    /// Addresses readable, but the header is inconsistent or cut short.
    Malformed { family: u8, dst: [u32; 4] },
}

impl From<Truncated> for IpError {
    fn from(_: Truncated) -> Self {
        IpError::Unparsed
    }
}

/// Parses an IPv4 header at `off`, checking version, IHL and total length against the packet.
#[inline(always)]
pub fn parse_v4(ctx: &XdpContext, off: usize) -> Result<L3, IpError> {
    let vihl = read::<u8>(ctx, off)?;
    let dst = [read::<u32>(ctx, off + 16)?, 0, 0, 0];
    let malformed = IpError::Malformed {
        family: FAMILY_V4,
        dst,
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN_MIN {
        return Err(malformed);
    }
    let tot_len = u16::from_be(read::<u16>(ctx, off + 2)?);
    let avail = ctx.data_end() - ctx.data() - off;
    if (tot_len as usize) < ihl || tot_len as usize > avail {
        return Err(malformed);
    }
    let frag = u16::from_be(read::<u16>(ctx, off + 6)?);
    Ok(L3 {
        family: FAMILY_V4,
        proto: read::<u8>(ctx, off + 9)?,
        src: [read::<u32>(ctx, off + 12)?, 0, 0, 0],
        dst,
        l4_off: off + ihl,
        ip_len: tot_len,
        ttl: read::<u8>(ctx, off + 8)?,
        fragment: frag & 0x3fff != 0,
        dont_fragment: frag & 0x4000 != 0,
    })
}

/// Parses a fixed IPv6 header at `off`; extension headers are reported as `proto` as is.
#[inline(always)]
pub fn parse_v6(ctx: &XdpContext, off: usize) -> Result<L3, IpError> {
    let src = read::<[u32; 4]>(ctx, off + 8)?;
    let dst = read::<[u32; 4]>(ctx, off + 24)?;
    let malformed = IpError::Malformed {
        family: FAMILY_V6,
        dst,
    };
    if read::<u8>(ctx, off)? >> 4 != 6 {
        return Err(malformed);
    }
    let payload = u16::from_be(read::<u16>(ctx, off + 4)?) as usize;
    let avail = ctx.data_end() - ctx.data() - off;
    if payload + IPV6_HLEN > avail {
        return Err(malformed);
    }
    Ok(L3 {
        family: FAMILY_V6,
        proto: read::<u8>(ctx, off + 6)?,
        src,
        dst,
        l4_off: off + IPV6_HLEN,
        ip_len: (payload + IPV6_HLEN) as u16,
        ttl: read::<u8>(ctx, off + 7)?,
        fragment: false,
        dont_fragment: true,
    })
}
