//! XDP L4 load balancer: VIP traffic is NATed to a Maglev-chosen backend and forwarded from
//! the driver; replies are reverse-NATed; everything else goes to the stack untouched.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use ingress_common::{
    conntrack::{FlowKey, FlowNat, SEEN_REPLIED},
    counters::Stat,
    edge::{edge_addr_filter_bit, edge_filter_bit},
    l4::{
        vip_addr_filter_bit, vip_filter_bit, LbConfig, VipAddrKey, VipKey, FAMILY_V6, PROTO_ICMP,
        PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    },
    maps::{JUMP_EDGE, JUMP_FLOW, JUMP_ICMP},
};

use crate::{
    lb::{
        copy_addr,
        emit::emit,
        fib::FibQuery,
        hop,
        nat::{self, Layout, Tuple},
    },
    maps::{
        Scratch, AGAIN_NONE, EDGE_FILTER, FLOWS, JUMPS, LB_CONFIG, REPLIES, SCRATCH, VIPS,
        VIP_ADDRS, VIP_FILTER,
    },
    parse::{
        eth::{self, ETH_P_IP, ETH_P_IPV6},
        ip::{self, IpError, L3},
        l4, read,
    },
    verdict::{self, Outcome, NO_VIP},
};

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let out = try_lb(&ctx);
    if out.action == xdp_action::XDP_DROP {
        // Dead code unless loaded with --kernel-log (AYA_LOG_LEVEL is a load-time constant).
        debug!(&ctx, "drop: stat {} vip {}", out.stat as u32, out.vip_id);
    }
    verdict::finish(&out, bytes)
}

#[inline(always)]
fn try_lb(ctx: &XdpContext) -> Outcome {
    let Ok(l2) = eth::parse(ctx) else {
        return Outcome::pass(Stat::PassNotIp);
    };
    let parsed = match l2.ethertype {
        ETH_P_IP => ip::parse_v4(ctx, l2.l3_off),
        ETH_P_IPV6 => ip::parse_v6(ctx, l2.l3_off),
        _ => return Outcome::pass(Stat::PassNotIp),
    };
    let l3 = match parsed {
        Ok(l3) => l3,
        Err(IpError::Unparsed) => return Outcome::pass(Stat::PassUnparsed),
        Err(IpError::Malformed { family, dst }) => return malformed(family, dst),
    };
    if l3.proto != PROTO_TCP && l3.proto != PROTO_UDP {
        if is_icmp_error(ctx, &l3) {
            // The ICMP program has a stack of its own; if the slot is empty (not loaded yet)
            // the call falls through and the packet goes to the stack as before.
            // SAFETY: tail call into a program userspace put in slot 0.
            unsafe { JUMPS.tail_call(ctx, JUMP_ICMP) };
            return Outcome::pass(Stat::PassNotOurs);
        }
        if l3.family == FAMILY_V6 && is_v6_ext(l3.proto) {
            return Outcome::pass(Stat::PassIpv6Ext);
        }
        return Outcome::pass(Stat::PassNotOurs);
    }
    if l3.fragment {
        return Outcome::pass(Stat::PassFragment);
    }
    let Some(cfg) = LB_CONFIG.get(0) else {
        return Outcome::pass(Stat::PassNotReady);
    };
    if cfg.ready == 0 {
        return Outcome::pass(Stat::PassNotReady);
    }
    let is_snat = if l3.family == FAMILY_V6 {
        l3.dst == copy_addr(&cfg.snat_v6)
    } else {
        l3.dst[0] == cfg.snat_v4
    };
    // Most traffic is for neither a VIP address, the SNAT address nor a protected address: it
    // leaves before its ports are read.
    if !is_snat && !may_be_vip_addr(&l3.dst) && !edge_has(edge_addr_filter_bit(&l3.dst)) {
        return Outcome::pass(Stat::PassNotOurs);
    }
    let l4_len = (l3.ip_len as usize).saturating_sub(l3.l4_off - l2.l3_off);
    let Ok(ports) = l4::parse(ctx, l3.l4_off, l3.proto, l4_len) else {
        return malformed(l3.family, l3.dst);
    };
    let layout = Layout {
        family: l3.family,
        proto: l3.proto,
        l3_off: l2.l3_off,
        l4_off: l3.l4_off,
        csum_off: ports.csum_off,
        vlan: l2.vlan,
        ip_len: l3.ip_len,
        dont_fragment: l3.dont_fragment,
    };
    let tuple = Tuple {
        src: l3.src,
        dst: l3.dst,
        sport: ports.sport,
        dport: ports.dport,
    };
    // One array read rules out most traffic before any hash lookup.
    if may_be_vip(&l3.dst, ports.dport, l3.proto) {
        if let Some(out) = forward(ctx, &layout, &l3, &tuple, cfg, ports.syn, ports.closing) {
            return out;
        }
    }
    // The SNAT address is usually the node's own: its ssh, kubelet and API traffic must not
    // pay a hash lookup, and only ports we hand out can carry a reply.
    if is_snat && nat::in_snat_range(ports.dport, cfg) {
        return reply(ctx, &layout, &l3, &tuple, cfg, ports.closing);
    }
    // A listener of the node's own stack the edge guards.
    if edge_has(edge_filter_bit(&l3.dst, ports.dport, l3.proto)) {
        to_edge(ctx, &layout, &tuple, ports.syn);
    }
    Outcome::pass(Stat::PassNotOurs)
}

#[inline(always)]
fn may_be_vip(addr: &[u32; 4], port: u16, proto: u8) -> bool {
    filter_has(vip_filter_bit(addr, port, proto))
}

#[inline(always)]
fn may_be_vip_addr(addr: &[u32; 4]) -> bool {
    filter_has(vip_addr_filter_bit(addr))
}

#[inline(always)]
fn filter_has(bit: u32) -> bool {
    VIP_FILTER
        .get(bit >> 6)
        .is_some_and(|w| *w & (1u64 << (bit & 63)) != 0)
}

#[inline(always)]
fn edge_has(bit: u32) -> bool {
    EDGE_FILTER
        .get(bit >> 6)
        .is_some_and(|w| *w & (1u64 << (bit & 63)) != 0)
}

/// Tail-calls `xdp_edge` for a packet to a guarded listener, which passes it to the stack or
/// drops it. Returns (and the packet is passed unchecked) only if that program is not loaded.
#[inline(always)]
fn to_edge(ctx: &XdpContext, layout: &Layout, t: &Tuple, syn: bool) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, used by this packet only.
    let scratch = unsafe { &mut *scratch };
    scratch.vip_known = 0;
    scratch.syn = syn as u32;
    scratch.layout = *layout;
    scratch.tuple = *t;
    // SAFETY: tail call into the program userspace put in the slot.
    unsafe { JUMPS.tail_call(ctx, JUMP_EDGE) };
}

/// Whether the packet is an ICMP or ICMPv6 error message (the kinds that quote a packet of a
/// flow we may have NATed): destination unreachable, packet too big, time exceeded, parameter
/// problem.
#[inline(always)]
fn is_icmp_error(ctx: &XdpContext, l3: &L3) -> bool {
    let v6 = l3.family == FAMILY_V6;
    if l3.fragment || l3.proto != if v6 { PROTO_ICMPV6 } else { PROTO_ICMP } {
        return false;
    }
    // Type, code and checksum in one read: a one-byte read lets LLVM turn the bounds check
    // into `ptr >= end`, which the verifier does not take as a range proof.
    match read::<[u8; 4]>(ctx, l3.l4_off) {
        Ok([t, ..]) if v6 => (1..=4).contains(&t),
        Ok([t, ..]) => matches!(t, 3 | 11 | 12),
        Err(_) => false,
    }
}

#[inline(always)]
fn is_v6_ext(next: u8) -> bool {
    // Hop-by-hop, routing, fragment, ESP, AH, destination options, mobility.
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135)
}

/// A header we could not trust: drop it if it was aimed at a VIP, else it is not ours.
#[inline(always)]
fn malformed(family: u8, dst: [u32; 4]) -> Outcome {
    let key = VipAddrKey {
        addr: dst,
        family: family as u32,
    };
    // SAFETY: read-only peek at a plain counter.
    if unsafe { VIP_ADDRS.get(&key) }.is_some() {
        return Outcome::drop(Stat::DropMalformed, NO_VIP);
    }
    Outcome::pass(Stat::PassNotOurs)
}

#[inline(always)]
fn flow_key(l3: &L3, t: &Tuple) -> FlowKey {
    FlowKey {
        src: t.src,
        dst: t.dst,
        sport: t.sport,
        dport: t.dport,
        proto: l3.proto,
        family: l3.family,
        _pad: 0,
    }
}

#[inline(always)]
fn query<'a>(l3: &L3, t: &'a Tuple) -> FibQuery<'a> {
    FibQuery {
        family: l3.family,
        proto: l3.proto,
        src: &t.src,
        dst: &t.dst,
        sport: t.sport,
        dport: t.dport,
    }
}

/// Client -> VIP: established flows keep their NAT; everything else is handed to
/// `xdp_flow`, which records a new flow and forwards its packet, or checks that a flow due
/// for its once-per-hop-TTL port check still owns its port and calls this program again.
/// `None` when the packet is not for a VIP after all (a prefilter false positive).
///
/// Conntrack is consulted before the VIP table: an established flow needs one lookup, and
/// keeps going even if its VIP was removed since, as established flows do in kube-proxy.
/// A SYN skips conntrack: it starts a connection, and a retransmitted one picks the same
/// backend (Maglev) and finds its own SNAT port again (see `xdp_flow::reserve_port`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    layout: &Layout,
    l3: &L3,
    t: &Tuple,
    cfg: &LbConfig,
    syn: bool,
    closing: u32,
) -> Option<Outcome> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, used by this packet only.
    let scratch = unsafe { &mut *scratch };
    let again = scratch.again;
    scratch.again = AGAIN_NONE;
    scratch.key = flow_key(l3, t);
    let now = hop::now();
    // (A packet handed back after its port check is never a SYN.)
    let existing = if syn {
        None
    } else {
        FLOWS.get_ptr_mut(cfg, &scratch.key)
    };
    // SAFETY: entry points at a live map value.
    let ready = |e: *mut FlowNat| again != AGAIN_NONE || hop::fresh(unsafe { &(*e).hop }, now);
    let entry = match existing {
        Some(e) if ready(e) => e,
        // Checked a moment ago and gone already: never hand it over a second time.
        _ if again != AGAIN_NONE => return Some(Outcome::drop(Stat::DropMapError, NO_VIP)),
        _ => {
            return Some(hand_over(
                ctx,
                scratch,
                layout,
                l3,
                t,
                syn,
                closing,
                existing.is_some(),
            )?)
        }
    };
    if l3.ttl <= 1 {
        return Some(Outcome::pass(Stat::PassTtl));
    }
    // SAFETY: entry points at a live map value; fields are copied out at once.
    let nat = unsafe { &*entry };
    let new = Tuple {
        src: copy_addr(&nat.snat),
        dst: copy_addr(&nat.backend),
        sport: nat.snat_port,
        dport: nat.backend_port,
    };
    let vip_id = nat.vip_id;
    // Liveness is refreshed with the hop (rarely), and at once when the flow closes.
    if closing != 0 || !hop::fresh(&nat.hop, now) {
        // SAFETY: the seen field of the same live value.
        let seen = unsafe { &raw mut (*entry).seen };
        FLOWS.mark_seen(cfg, &scratch.key, seen, closing);
    }
    // SAFETY: the hop field of the same live value.
    let next = hop::resolve(ctx, &query(l3, &new), unsafe { &raw mut (*entry).hop }, now);
    // Forward misses pass the packet untranslated: the stack would reject a packet already
    // carrying our own address as its source (martian), and the flow entry keeps the
    // backend for the retransmission.
    Some(emit(
        ctx,
        layout,
        t,
        &new,
        next,
        Stat::FwdConntrack,
        vip_id,
        false,
    ))
}

/// Tail-calls `xdp_flow` for a packet of a new flow (`known` false: only if it is for a VIP)
/// or of a flow due for its port check. Returns only if that program is not loaded.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn hand_over(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    layout: &Layout,
    l3: &L3,
    t: &Tuple,
    syn: bool,
    closing: u32,
    known: bool,
) -> Option<Outcome> {
    scratch.vip_known = 0;
    if !known {
        let vip = VipKey {
            addr: l3.dst,
            port: t.dport,
            proto: l3.proto,
            family: l3.family,
        };
        // SAFETY: VIPS values are plain data, copied at once (for xdp_flow, which would
        // otherwise look it up again).
        scratch.vip = *unsafe { VIPS.get(&vip) }?;
        scratch.vip_known = 1;
    }
    if l3.ttl <= 1 {
        return Some(Outcome::pass(Stat::PassTtl));
    }
    scratch.syn = syn as u32;
    scratch.closing = closing;
    scratch.layout = *layout;
    scratch.tuple = *t;
    // A flow starting on a guarded VIP passes the edge checks first, which hand it on to
    // `xdp_flow`. Established flows never pay for them: as a stateful firewall accepting
    // established traffic, the edge judges a flow where it starts.
    if !known && edge_has(edge_filter_bit(&l3.dst, t.dport, l3.proto)) {
        // SAFETY: tail call into the program userspace put in the slot.
        unsafe { JUMPS.tail_call(ctx, JUMP_EDGE) };
    }
    // SAFETY: tail call into the program userspace put in the slot.
    unsafe { JUMPS.tail_call(ctx, JUMP_FLOW) };
    Some(Outcome::pass(Stat::PassNotReady))
}

/// Backend -> SNAT address: translate back to VIP -> client.
#[inline(always)]
fn reply(
    ctx: &XdpContext,
    layout: &Layout,
    l3: &L3,
    t: &Tuple,
    cfg: &LbConfig,
    closing: u32,
) -> Outcome {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    // SAFETY: this CPU's scratch slot, used by this packet only.
    let scratch = unsafe { &mut *scratch };
    scratch.key = flow_key(l3, t);
    let Some(entry) = REPLIES.get_ptr_mut(cfg, &scratch.key) else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    if l3.ttl <= 1 {
        return Outcome::pass(Stat::PassTtl);
    }
    // SAFETY: entry points at a live map value; fields are copied out at once.
    let r = unsafe { &*entry };
    let vip_id = r.vip_id;
    let now = hop::now();
    if closing != 0 || !hop::fresh(&r.hop, now) {
        // The first reply always lands here (a new entry has no hop): it marks the flow as
        // answered.
        // SAFETY: the seen field of the same live value.
        let seen = unsafe { &raw mut (*entry).seen };
        REPLIES.mark_seen(cfg, &scratch.key, seen, closing | SEEN_REPLIED);
    }
    let new = Tuple {
        src: copy_addr(&r.vip),
        dst: copy_addr(&r.client),
        sport: r.vip_port,
        dport: r.client_port,
    };
    // SAFETY: the hop field of the same live value.
    let next = hop::resolve(ctx, &query(l3, &new), unsafe { &raw mut (*entry).hop }, now);
    // A reply whose neighbour is unknown is passed translated: its source is the VIP, not a
    // local address, so the stack forwards it and resolves the neighbour.
    emit(ctx, layout, t, &new, next, Stat::FwdReply, vip_id, true)
}
