//! Whether a packet fits its egress link. XDP cannot fragment, and a device drops a frame
//! longer than its MTU without a word, so a packet too big for the next link must be answered
//! with ICMP "too big" here, as a router would, or its sender never learns its path MTU.
use aya_ebpf::{
    bindings::bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED, helpers::bpf_check_mtu,
    programs::XdpContext, EbpfContext,
};

/// Every IP link carries this much (IPv6's minimum MTU; IPv4 links below it are not seen in
/// practice): smaller packets skip the check, so ACKs and small requests never pay for it.
pub const ALWAYS_FITS: u16 = 1280;

/// The MTU of `ifindex` if an IP datagram of `ip_len` bytes does not fit it. `mtu` is a
/// scratch word (a map value: the forwarding program has no stack to spare).
#[inline(always)]
pub fn exceeded(ctx: &XdpContext, ifindex: u32, ip_len: u16, mtu: *mut u32) -> Option<u32> {
    if ip_len <= ALWAYS_FITS {
        return None;
    }
    // SAFETY: mtu points at a live, aligned u32 in this CPU's scratch slot.
    unsafe { *mtu = ip_len as u32 };
    // SAFETY: plain helper call; it reads *mtu as the L3 length and writes the device MTU.
    let rc = unsafe { bpf_check_mtu(ctx.as_ptr(), ifindex, mtu, 0, 0) };
    if rc != BPF_MTU_CHK_RET_FRAG_NEEDED as i64 {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { *mtu })
}
