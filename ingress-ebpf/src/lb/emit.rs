//! The last step of forwarding a translated flow, shared by `xdp_lb` (established flows,
//! replies) and `xdp_flow` (a flow's first packet): MTU check, header rewrite, next hop.
use aya_ebpf::programs::XdpContext;
use ingress_common::{conntrack::Hop, counters::Stat, maps::JUMP_TOO_BIG};

use crate::{
    lb::{
        mtu,
        nat::{self, Layout, Tuple},
    },
    maps::{JUMPS, SCRATCH},
    verdict::{self, Outcome},
};

/// Rewrites the packet for its next hop and sends it on its way; a missing hop hands the
/// packet to the stack (translated or not, as the caller decides).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn emit(
    ctx: &XdpContext,
    layout: &Layout,
    old: &Tuple,
    new: &Tuple,
    next: Result<Hop, Stat>,
    stat: Stat,
    vip_id: u32,
    pass_translated: bool,
) -> Outcome {
    let ingress = ctx.ingress_ifindex() as u32;
    let hop = match verdict::usable(next, layout.vlan, ingress) {
        Ok(h) => h,
        Err(s) => return to_stack(ctx, layout, old, new, pass_translated, s, vip_id),
    };
    if let Some(out) = too_big(ctx, layout, old, new, &hop, vip_id, pass_translated) {
        return out;
    }
    if nat::rewrite(ctx, layout, old, new).is_err() {
        return Outcome::drop(Stat::DropMalformed, vip_id);
    }
    verdict::transmit(ctx, &hop, ingress, layout.vlan, stat, vip_id)
}

/// Hands the packet to the stack under `stat`: rewritten from `old` to `new` first when
/// `translated`, else as it came.
#[inline(always)]
fn to_stack(
    ctx: &XdpContext,
    layout: &Layout,
    old: &Tuple,
    new: &Tuple,
    translated: bool,
    stat: Stat,
    vip_id: u32,
) -> Outcome {
    if translated && nat::rewrite(ctx, layout, old, new).is_err() {
        return Outcome::drop(Stat::DropMalformed, vip_id);
    }
    Outcome::pass_vip(stat, vip_id)
}

/// A packet too big for its egress link, not yet rewritten: `xdp_too_big` answers its sender
/// with ICMP "too big" (it quotes the packet as the sender sent it). An IPv4 packet without DF
/// must be fragmented, which XDP cannot do: a reply is passed translated (its source is the
/// VIP, not a local address, so the stack forwards and fragments it); a client's packet
/// cannot be (translated, its source would be our own address) and is dropped. A packet
/// going back out of the link it came in on fits it (a one-armed node pays nothing; a tagged
/// frame never leaves by another link).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn too_big(
    ctx: &XdpContext,
    layout: &Layout,
    old: &Tuple,
    new: &Tuple,
    hop: &Hop,
    vip_id: u32,
    pass_translated: bool,
) -> Option<Outcome> {
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        return None;
    }
    let mtu = mtu::exceeded(ctx, hop.ifindex, layout.ip_len, crate::lb::hop::now())?;
    if !layout.dont_fragment {
        if !pass_translated {
            return Some(Outcome::drop(Stat::DropTooBig, vip_id));
        }
        return Some(to_stack(
            ctx,
            layout,
            old,
            new,
            true,
            Stat::PassTooBig,
            vip_id,
        ));
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, read by the tail-called program on this CPU.
    unsafe {
        (*scratch).mtu = mtu;
        (*scratch).vip_id = vip_id;
        JUMPS.tail_call(ctx, JUMP_TOO_BIG);
    }
    Some(Outcome::drop(Stat::DropTooBig, vip_id))
}
