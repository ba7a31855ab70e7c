//! Ethernet with at most one 802.1Q tag.
use aya_ebpf::programs::XdpContext;

use super::{read, Truncated};

pub const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;

/// The network-layer protocol and where its header starts.
pub struct L2 {
    pub ethertype: u16,
    pub l3_off: usize,
    pub vlan: bool,
}

/// Parses the Ethernet header and one optional 802.1Q tag.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<L2, Truncated> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    if ethertype != ETH_P_8021Q {
        return Ok(L2 {
            ethertype,
            l3_off: ETH_HLEN,
            vlan: false,
        });
    }
    let inner = u16::from_be(read::<u16>(ctx, ETH_HLEN + 2)?);
    Ok(L2 {
        ethertype: inner,
        l3_off: ETH_HLEN + VLAN_HLEN,
        vlan: true,
    })
}
