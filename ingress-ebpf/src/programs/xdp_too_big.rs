//! A packet too big for its egress link, answered as a router would: turned in place into an
//! ICMP "fragmentation needed" (IPv4) or "packet too big" (ICMPv6) carrying the link's MTU,
//! from the address the packet was sent to, back to its sender out of the link it came in
//! on, quoting the start of the packet as the sender sent it. Tail-called by `xdp_lb`, which
//! leaves the MTU and the VIP in this CPU's scratch slot. Untagged frames only (`xdp_lb`
//! drops tagged ones it cannot forward).
use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use ingress_common::counters::Stat;

use crate::{
    lb::csum,
    maps::SCRATCH,
    parse::{
        eth::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6},
        ptr_at, read, write,
    },
    verdict::{self, Outcome, NO_VIP},
};

/// Bytes of the offending packet quoted, from its IP header on: at least the IP header and
/// the ports (RFC 792 asks for 64 bits past the header), and a multiple of 4 for
/// `bpf_csum_diff`. The packet is longer than `mtu::ALWAYS_FITS`, so they are there.
const QUOTE: usize = 128;
const ICMP_HLEN: usize = 8;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TTL: u8 = 64;

#[xdp]
pub fn xdp_too_big(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let out = answer(&ctx);
    verdict::finish(&out, bytes)
}

#[inline(always)]
fn answer(ctx: &XdpContext) -> Outcome {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::drop(Stat::DropTooBig, NO_VIP);
    };
    // SAFETY: this CPU's scratch slot, written by xdp_lb just before the tail call.
    let (mtu, vip_id) = unsafe { ((*scratch).mtu, (*scratch).vip_id) };
    let failed = Outcome::drop(Stat::DropTooBig, vip_id);
    match build(ctx, mtu) {
        Ok(()) => Outcome {
            action: xdp_action::XDP_TX,
            stat: Stat::IcmpTooBig,
            egress: Some(Stat::Tx),
            vip_id,
        },
        Err(()) => failed,
    }
}

/// Rewrites the frame into the ICMP answer.
#[inline(always)]
fn build(ctx: &XdpContext, mtu: u32) -> Result<(), ()> {
    // Everything the new headers need is read before the head moves.
    let macs = read::<[u8; 12]>(ctx, 0).map_err(|_| ())?;
    let ethertype = u16::from_be(read::<u16>(ctx, 12).map_err(|_| ())?);
    let v6 = match ethertype {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        _ => return Err(()),
    };
    let (src, dst) = if v6 {
        (
            read::<[u32; 4]>(ctx, ETH_HLEN + 8).map_err(|_| ())?,
            read::<[u32; 4]>(ctx, ETH_HLEN + 24).map_err(|_| ())?,
        )
    } else {
        (
            [read::<u32>(ctx, ETH_HLEN + 12).map_err(|_| ())?, 0, 0, 0],
            [read::<u32>(ctx, ETH_HLEN + 16).map_err(|_| ())?, 0, 0, 0],
        )
    };
    let ip_hlen = if v6 { IPV6_HLEN } else { IPV4_HLEN };
    let grow = ip_hlen + ICMP_HLEN;
    let old_len = ctx.data_end() - ctx.data();
    if old_len < ETH_HLEN + QUOTE {
        return Err(());
    }
    // Room for the new IP and ICMP headers in front; the old Ethernet header is overwritten,
    // the old IP header becomes the start of the quote. Then cut the frame after the quote.
    // SAFETY: plain helper calls on this packet; every access below is bounds-checked again.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) != 0 {
            return Err(());
        }
        if bpf_xdp_adjust_tail(ctx.ctx, -((old_len - ETH_HLEN - QUOTE) as i32)) != 0 {
            return Err(());
        }
    }
    let mut eth = [0u8; 14];
    eth[..6].copy_from_slice(&macs[6..12]);
    eth[6..12].copy_from_slice(&macs[..6]);
    eth[12..14].copy_from_slice(&ethertype.to_be_bytes());
    write(ctx, 0, eth).map_err(|_| ())?;
    let icmp_off = ETH_HLEN + ip_hlen;
    let msg_len = (ICMP_HLEN + QUOTE) as u16;
    // The answer comes from where the packet was going and goes back to where it came from.
    let mut sum: u64 = 0;
    if v6 {
        write(ctx, ETH_HLEN, [0x60u8, 0, 0, 0]).map_err(|_| ())?;
        write(ctx, ETH_HLEN + 4, msg_len.to_be()).map_err(|_| ())?;
        write(ctx, ETH_HLEN + 6, [58u8, TTL]).map_err(|_| ())?;
        write(ctx, ETH_HLEN + 8, dst).map_err(|_| ())?;
        write(ctx, ETH_HLEN + 24, src).map_err(|_| ())?;
        // Type 2 (packet too big), code 0, checksum, then the MTU.
        write(ctx, icmp_off, [2u8, 0, 0, 0]).map_err(|_| ())?;
        write(ctx, icmp_off + 4, mtu.to_be()).map_err(|_| ())?;
        // ICMPv6's checksum covers a pseudo-header: addresses, length, next header.
        let mut i = 0;
        while i < 4 {
            sum += src[i] as u64 + dst[i] as u64;
            i += 1;
        }
        sum += (msg_len as u32).to_be() as u64 + 58u32.to_be() as u64;
    } else {
        let total = (IPV4_HLEN as u16 + msg_len).to_be_bytes();
        let mut ip = [0u8; IPV4_HLEN];
        ip[0] = 0x45;
        ip[2] = total[0];
        ip[3] = total[1];
        ip[8] = TTL;
        ip[9] = 1;
        ip[12..16].copy_from_slice(&dst[0].to_ne_bytes());
        ip[16..20].copy_from_slice(&src[0].to_ne_bytes());
        let mut hsum: u64 = 0;
        let mut i = 0;
        while i < IPV4_HLEN {
            hsum += u16::from_ne_bytes([ip[i], ip[i + 1]]) as u64;
            i += 2;
        }
        let c = csum::finish(hsum).to_ne_bytes();
        ip[10] = c[0];
        ip[11] = c[1];
        write(ctx, ETH_HLEN, ip).map_err(|_| ())?;
        // Type 3 (unreachable), code 4 (fragmentation needed), checksum, unused, MTU.
        let m = (mtu as u16).to_be_bytes();
        write(ctx, icmp_off, [3u8, 4, 0, 0, 0, 0, m[0], m[1]]).map_err(|_| ())?;
    }
    let msg = ptr_at::<[u8; ICMP_HLEN + QUOTE]>(ctx, icmp_off).map_err(|_| ())?;
    // SAFETY: msg covers ICMP_HLEN + QUOTE bytes inside the packet (checked above); the
    // helper only reads them.
    let part = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            msg.cast(),
            (ICMP_HLEN + QUOTE) as u32,
            0,
        )
    };
    if part < 0 {
        return Err(());
    }
    sum += part as u32 as u64;
    write(ctx, icmp_off + 2, csum::finish(sum)).map_err(|_| ())
}
