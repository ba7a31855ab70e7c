//! ICMP errors about NATed flows. The stack has no socket for a flow `xdp_lb` translated, so
//! without this an unreachable backend port would never reach the client (a connected UDP
//! socket's ECONNREFUSED), nor a path MTU limit towards a client the backend that must shrink
//! its segments. Tail-called by `xdp_lb` for ICMP and ICMPv6 error messages; an error that
//! belongs to no flow of ours goes to the stack untouched.
use aya_ebpf::{macros::xdp, programs::XdpContext};
use ingress_common::{
    conntrack::FlowKey,
    counters::Stat,
    l4::{LbConfig, FAMILY_V6},
};

use crate::{
    lb::{
        copy_addr,
        fib::FibQuery,
        hop,
        icmp::{self, ICMP_HLEN},
        nat::{self, Tuple},
    },
    maps::{FLOWS, LB_CONFIG, REPLIES, SCRATCH},
    parse::{
        eth::{self, ETH_P_IP, ETH_P_IPV6},
        ip,
    },
    verdict::{self, Outcome},
};

#[xdp]
pub fn xdp_icmp(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let out = try_icmp(&ctx);
    verdict::finish(&out, bytes)
}

#[inline(always)]
fn try_icmp(ctx: &XdpContext) -> Outcome {
    let Ok(l2) = eth::parse(ctx) else {
        return Outcome::pass(Stat::PassNotIp);
    };
    let parsed = match l2.ethertype {
        ETH_P_IP => ip::parse_v4(ctx, l2.l3_off),
        ETH_P_IPV6 => ip::parse_v6(ctx, l2.l3_off),
        _ => return Outcome::pass(Stat::PassNotIp),
    };
    let Ok(l3) = parsed else {
        return Outcome::pass(Stat::PassUnparsed);
    };
    let Some(cfg) = LB_CONFIG.get(0) else {
        return Outcome::pass(Stat::PassNotReady);
    };
    if cfg.ready == 0 {
        return Outcome::pass(Stat::PassNotReady);
    }
    let v6 = l3.family == FAMILY_V6;
    let Some(q) = icmp::quoted(ctx, l3.l4_off + ICMP_HLEN, v6) else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    // The quoted packet's flow as its receiver keys it; in the scratch slot, as the stack
    // has no 40 bytes to spare.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    // SAFETY: this CPU's scratch slot, used by this packet only.
    let key = unsafe { &mut (*scratch).key };
    *key = FlowKey {
        src: q.tuple.dst,
        dst: q.tuple.src,
        sport: q.tuple.dport,
        dport: q.tuple.sport,
        proto: q.proto,
        family: l3.family,
        _pad: 0,
    };
    let Some((outer, inner, vip_id)) = translation(key, &q.tuple, cfg, v6) else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    if l3.ttl <= 1 {
        return Outcome::pass_vip(Stat::PassTtl, vip_id);
    }
    let query = FibQuery {
        family: l3.family,
        proto: l3.proto,
        src: &outer.src,
        dst: &outer.dst,
        sport: 0,
        dport: 0,
    };
    let next = hop::lookup(ctx, &query, hop::now());
    let old = Tuple {
        src: l3.src,
        dst: l3.dst,
        sport: 0,
        dport: 0,
    };
    if icmp::rewrite(ctx, v6, l2.l3_off, l3.l4_off, &old, &outer, &q, &inner).is_err() {
        return Outcome::drop(Stat::DropMalformed, vip_id);
    }
    let ingress = ctx.ingress_ifindex() as u32;
    match verdict::usable(next, l2.vlan, ingress) {
        Ok(h) => verdict::transmit(ctx, &h, ingress, l2.vlan, Stat::FwdIcmp, vip_id),
        // Passed translated: its destination is not local, so the stack forwards it and
        // resolves the neighbour.
        Err(s) => Outcome::pass_vip(s, vip_id),
    }
}

/// The outer addresses and quoted packet an ICMP error about `quoted` must carry, and the
/// VIP it belongs to; `None` if it is about no flow of ours.
#[inline(always)]
fn translation(
    key: &FlowKey,
    quoted: &Tuple,
    cfg: &LbConfig,
    v6: bool,
) -> Option<(Tuple, Tuple, u32)> {
    if quoted.src == nat::snat_addr(cfg, v6) && nat::in_snat_range(quoted.sport, cfg) {
        // About a packet we sent to a backend: the client hears of the packet it sent, from
        // the VIP it sent it to.
        // SAFETY: fields are copied out at once.
        let r = unsafe { REPLIES.get(cfg, key) }?;
        let outer = Tuple {
            src: copy_addr(&r.vip),
            dst: copy_addr(&r.client),
            sport: 0,
            dport: 0,
        };
        let inner = Tuple {
            src: copy_addr(&r.client),
            dst: copy_addr(&r.vip),
            sport: r.client_port,
            dport: r.vip_port,
        };
        return Some((outer, inner, r.vip_id));
    }
    // About a reply we sent to a client: the backend hears of the reply it sent, from us.
    // SAFETY: fields are copied out at once.
    let n = unsafe { FLOWS.get(cfg, key) }?;
    let outer = Tuple {
        src: copy_addr(&n.snat),
        dst: copy_addr(&n.backend),
        sport: 0,
        dport: 0,
    };
    let inner = Tuple {
        src: copy_addr(&n.backend),
        dst: copy_addr(&n.snat),
        sport: n.backend_port,
        dport: n.snat_port,
    };
    Some((outer, inner, n.vip_id))
}
