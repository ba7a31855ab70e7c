//! Whether a packet fits its egress link. XDP cannot fragment, and a device drops a frame
//! longer than its MTU without a word, so a packet too big for the next link must be answered
//! with ICMP "too big" here, as a router would, or its sender never learns its path MTU.
//!
//! The device MTU (`bpf_check_mtu`, a helper call costing ~35 ns here) is cached per CPU and
//! egress interface and trusted for the next-hop TTL, as the next hop itself is.
use super::hop;
use crate::maps::{EGRESS_MTU, MTU_SLOTS};
use aya_ebpf::{helpers::bpf_check_mtu, programs::XdpContext, EbpfContext};

/// Every IP link carries this much (IPv6's minimum MTU; IPv4 links below it are not seen in
/// practice): smaller packets skip the check, so ACKs and small requests never pay for it.
pub const ALWAYS_FITS: u16 = 1280;

/// The MTU of `ifindex` if an IP datagram of `ip_len` bytes does not fit it.
#[inline(always)]
pub fn exceeded(ctx: &XdpContext, ifindex: u32, ip_len: u16, now: u32) -> Option<u32> {
    if ip_len <= ALWAYS_FITS {
        return None;
    }
    let slot = EGRESS_MTU.get_ptr_mut(ifindex % MTU_SLOTS)?;
    // SAFETY: this CPU's slot of a per-CPU array, used by this packet only.
    let s = unsafe { &mut *slot };
    if s.ifindex != ifindex || !hop::fresh_stamp(s.stamp_jiffies, now) {
        // In: 0, so the helper measures the frame itself; out: the device MTU, either way.
        s.mtu = 0;
        // SAFETY: plain helper call; it writes the u32 it is given, in this CPU's slot.
        if unsafe { bpf_check_mtu(ctx.as_ptr(), ifindex, &mut s.mtu, 0, 0) } < 0 {
            s.stamp_jiffies = 0;
            return None;
        }
        s.ifindex = ifindex;
        s.stamp_jiffies = now.max(1);
    }
    (ip_len as u32 > s.mtu).then_some(s.mtu)
}
