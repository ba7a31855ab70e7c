//! What happens to one packet: its verdict, what is counted for it, and sending it to its next
//! hop. Shared by the XDP programs so every outcome is counted the same way.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
    EbpfContext,
};
use ingress_common::{conntrack::Hop, counters::Stat};

use crate::{counters, lb::nat};

/// `vip_id` of an outcome that belongs to no VIP.
pub const NO_VIP: u32 = u32::MAX;

/// One packet's verdict, what to count, and for which VIP.
pub struct Outcome {
    pub action: u32,
    pub stat: Stat,
    pub egress: Option<Stat>,
    pub vip_id: u32,
}

impl Outcome {
    /// Handed to the stack, counted under `stat`.
    pub const fn pass(stat: Stat) -> Self {
        Outcome::pass_vip(stat, NO_VIP)
    }

    /// Handed to the stack, counted under `stat` and against a VIP.
    pub const fn pass_vip(stat: Stat, vip_id: u32) -> Self {
        Outcome {
            action: xdp_action::XDP_PASS,
            stat,
            egress: None,
            vip_id,
        }
    }

    /// Dropped, counted under `stat` and against a VIP (or `NO_VIP`).
    pub const fn drop(stat: Stat, vip_id: u32) -> Self {
        Outcome {
            action: xdp_action::XDP_DROP,
            stat,
            egress: None,
            vip_id,
        }
    }
}

/// Counts `out` for a packet of `bytes` and returns its action.
#[inline(always)]
pub fn finish(out: &Outcome, bytes: u64) -> u32 {
    counters::count(out.stat, bytes);
    if let Some(e) = out.egress {
        counters::count(e, bytes);
    }
    if out.vip_id != NO_VIP {
        counters::count_vip(out.vip_id, bytes);
    }
    out.action
}

/// The hop a rewritten packet may take: a tagged frame can only leave by the link it came
/// from (untagged, see [`transmit`]); any other egress is a VLAN or other virtual device,
/// which the stack must handle.
#[inline(always)]
pub fn usable(next: Result<Hop, Stat>, vlan: bool, ingress: u32) -> Result<Hop, Stat> {
    match next {
        Ok(h) if vlan && h.ifindex != ingress => Err(Stat::PassVlanEgress),
        other => other,
    }
}

/// Writes the hop's MACs and sends the (already rewritten) packet out of its interface. A
/// `tagged` frame leaves untagged: its route names the parent device itself, which is the
/// untagged network (traffic for a VLAN is routed through its VLAN device instead).
#[inline(always)]
pub fn transmit(
    ctx: &XdpContext,
    hop: &Hop,
    ingress: u32,
    tagged: bool,
    stat: Stat,
    vip_id: u32,
) -> Outcome {
    // The inner EtherType already sits right before the IP header: moving the start of the
    // frame past the tag leaves it in place, and the MACs are written below.
    // SAFETY: plain helper call on this program's own context.
    if tagged && unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, 4) } != 0 {
        return Outcome::drop(Stat::DropMalformed, vip_id);
    }
    if nat::set_macs(ctx, hop.smac, hop.dmac).is_err() {
        return Outcome::drop(Stat::DropMalformed, vip_id);
    }
    if hop.ifindex == ingress {
        return Outcome {
            action: xdp_action::XDP_TX,
            stat,
            egress: Some(Stat::Tx),
            vip_id,
        };
    }
    // SAFETY: plain helper call; the verdict it returns is what we hand back.
    let action = unsafe { bpf_redirect(hop.ifindex, 0) } as u32;
    Outcome {
        action,
        stat,
        egress: Some(Stat::Redirect),
        vip_id,
    }
}
