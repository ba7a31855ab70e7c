//! TCP and UDP ports and the checksum field offset.
use aya_ebpf::programs::XdpContext;
use ingress_common::{
    conntrack::{SEEN_FIN, SEEN_RST},
    l4::PROTO_TCP,
};

use super::{read, Truncated};

const TCP_HLEN_MIN: usize = 20;
const UDP_HLEN: usize = 8;
/// Offset of the checksum inside the TCP header.
const TCP_CSUM_OFF: usize = 16;
/// Offset of the checksum inside the UDP header.
const UDP_CSUM_OFF: usize = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Ports (network byte order) and where the L4 checksum lives.
pub struct Ports {
    pub sport: u16,
    pub dport: u16,
    pub csum_off: usize,
    /// A TCP SYN without ACK: the first packet of a connection.
    pub syn: bool,
    /// `SEEN_FIN` and/or `SEEN_RST` when the TCP flags end the connection, else 0.
    pub closing: u32,
}

/// Reads the ports of a TCP or UDP header at `off`; the caller has checked `proto`.
/// The header must be complete (data offset for TCP) and fit in `l4_len`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, off: usize, proto: u8, l4_len: usize) -> Result<Ports, Truncated> {
    let sport = read::<u16>(ctx, off)?;
    let dport = read::<u16>(ctx, off + 2)?;
    if proto == PROTO_TCP {
        // Bytes 12..20 in one checked read: data offset, flags, window, checksum. Separate
        // reads let LLVM drop checks the verifier cannot relate to each other.
        let tail = read::<[u8; 8]>(ctx, off + 12)?;
        let doff = ((tail[0] >> 4) as usize) * 4;
        if doff < TCP_HLEN_MIN || doff > l4_len {
            return Err(Truncated);
        }
        Ok(Ports {
            sport,
            dport,
            csum_off: off + TCP_CSUM_OFF,
            syn: tail[1] & (TCP_SYN | TCP_ACK) == TCP_SYN,
            closing: closing_bits(tail[1]),
        })
    } else {
        let ulen = u16::from_be(read::<u16>(ctx, off + 4)?) as usize;
        if l4_len < UDP_HLEN || ulen < UDP_HLEN || ulen > l4_len {
            return Err(Truncated);
        }
        Ok(Ports {
            sport,
            dport,
            csum_off: off + UDP_CSUM_OFF,
            syn: false,
            closing: 0,
        })
    }
}

#[inline(always)]
fn closing_bits(flags: u8) -> u32 {
    let mut bits = 0;
    if flags & TCP_FIN != 0 {
        bits |= SEEN_FIN;
    }
    if flags & TCP_RST != 0 {
        bits |= SEEN_RST;
    }
    bits
}
