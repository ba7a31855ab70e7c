//! TCP and UDP ports and the checksum field offset.
use aya_ebpf::programs::XdpContext;
use ingress_common::l4::PROTO_TCP;

use super::{read, Truncated};

const TCP_HLEN_MIN: usize = 20;
const UDP_HLEN: usize = 8;
/// Offset of the checksum inside the TCP header.
const TCP_CSUM_OFF: usize = 16;
/// Offset of the checksum inside the UDP header.
const UDP_CSUM_OFF: usize = 6;

/// Ports (network byte order) and where the L4 checksum lives.
pub struct Ports {
    pub sport: u16,
    pub dport: u16,
    pub csum_off: usize,
}

/// Reads the ports of a TCP or UDP header at `off`; the caller has checked `proto`.
/// The header must be complete (data offset for TCP) and fit in `l4_len`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, off: usize, proto: u8, l4_len: usize) -> Result<Ports, Truncated> {
    let sport = read::<u16>(ctx, off)?;
    let dport = read::<u16>(ctx, off + 2)?;
    if proto == PROTO_TCP {
        let doff = ((read::<u8>(ctx, off + 12)? >> 4) as usize) * 4;
        if doff < TCP_HLEN_MIN || doff > l4_len {
            return Err(Truncated);
        }
        // Checksum is inside the first 20 bytes, which doff >= 20 guarantees present.
        read::<u16>(ctx, off + TCP_CSUM_OFF)?;
        Ok(Ports {
            sport,
            dport,
            csum_off: off + TCP_CSUM_OFF,
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
        })
    }
}
