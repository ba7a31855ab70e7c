//! XDP L4 load balancer: VIP traffic is NATed to a Maglev-chosen backend and forwarded from
//! the driver; replies are reverse-NATed; everything else goes to the stack untouched.
use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    helpers::bpf_redirect,
    macros::xdp,
    programs::XdpContext,
};
use ingress_common::{
    conntrack::{FlowKey, FlowNat, ReplyNat},
    counters::Stat,
    l4::{LbConfig, VipAddrKey, VipMeta, VipKey, FAMILY_V6, PROTO_TCP, PROTO_UDP},
};

use crate::{
    counters,
    lb::{
        fib::{self, FibMiss, FibQuery},
        maglev,
        nat::{self, Layout, Tuple},
    },
    maps::{CONNTRACK, LB_CONFIG, REPLY_NAT, VIPS, VIP_ADDRS},
    parse::{
        eth::{self, ETH_P_IP, ETH_P_IPV6},
        ip::{self, IpError, L3},
        l4,
    },
};

/// SNAT port candidates tried per new flow before giving up.
const PORT_TRIES: u32 = 8;
const NO_VIP: u32 = u32::MAX;

/// What happened to one packet: its verdict, what to count, and for which VIP.
struct Outcome {
    action: u32,
    stat: Stat,
    egress: Option<Stat>,
    vip_id: u32,
}

impl Outcome {
    const fn pass(stat: Stat) -> Self {
        Outcome { action: xdp_action::XDP_PASS, stat, egress: None, vip_id: NO_VIP }
    }
    const fn drop(stat: Stat, vip_id: u32) -> Self {
        Outcome { action: xdp_action::XDP_DROP, stat, egress: None, vip_id }
    }
}

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let out = try_lb(&ctx);
    counters::count(out.stat, bytes);
    if let Some(e) = out.egress {
        counters::count(e, bytes);
    }
    if out.vip_id != NO_VIP {
        counters::count_vip(out.vip_id, bytes);
    }
    out.action
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
        if l3.family == FAMILY_V6 && is_v6_ext(l3.proto) {
            return Outcome::pass(Stat::PassIpv6Ext);
        }
        return Outcome::pass(Stat::PassNotOurs);
    }
    if l3.fragment {
        return Outcome::pass(Stat::PassFragment);
    }
    let l4_len = (l3.ip_len as usize).saturating_sub(l3.l4_off - l2.l3_off);
    let Ok(ports) = l4::parse(ctx, l3.l4_off, l3.proto, l4_len) else {
        return malformed(l3.family, l3.dst);
    };
    let Some(cfg) = LB_CONFIG.get(0) else {
        return Outcome::pass(Stat::PassNotReady);
    };
    if cfg.ready == 0 {
        return Outcome::pass(Stat::PassNotReady);
    }
    let layout = Layout {
        family: l3.family,
        proto: l3.proto,
        l3_off: l2.l3_off,
        l4_off: l3.l4_off,
        csum_off: ports.csum_off,
        vlan: l2.vlan,
    };
    let tuple = Tuple { src: l3.src, dst: l3.dst, sport: ports.sport, dport: ports.dport };
    let vip = VipKey { addr: l3.dst, port: ports.dport, proto: l3.proto, family: l3.family };
    // SAFETY: VIPS values are plain data; a concurrent userspace update can only swap in
    // another valid VipMeta.
    if let Some(meta) = unsafe { VIPS.get(&vip) } {
        return forward(ctx, &layout, &l3, &tuple, meta, cfg);
    }
    let snat = if l3.family == FAMILY_V6 { cfg.snat_v6 } else { [cfg.snat_v4, 0, 0, 0] };
    if l3.dst == snat {
        return reply(ctx, &layout, &l3, &tuple);
    }
    Outcome::pass(Stat::PassNotOurs)
}

#[inline(always)]
fn is_v6_ext(next: u8) -> bool {
    // Hop-by-hop, routing, fragment, ESP, AH, destination options, mobility.
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135)
}

/// A header we could not trust: drop it if it was aimed at a VIP, else it is not ours.
#[inline(always)]
fn malformed(family: u8, dst: [u32; 4]) -> Outcome {
    let key = VipAddrKey { addr: dst, family, _pad: [0; 3] };
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
        _pad: [0; 2],
    }
}

/// Client -> VIP: established flows keep their NAT; new flows get a backend and a port.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    layout: &Layout,
    l3: &L3,
    t: &Tuple,
    meta: &VipMeta,
    cfg: &LbConfig,
) -> Outcome {
    let vip_id = meta.id;
    if l3.ttl <= 1 {
        return Outcome::pass(Stat::PassTtl);
    }
    let key = flow_key(l3, t);
    // SAFETY: the entry is copied out at once; LRU reuse after this point cannot affect it.
    let (nat, stat) = match unsafe { CONNTRACK.get(&key) } {
        Some(n) => (*n, Stat::FwdConntrack),
        None => match new_flow(&key, l3, meta, cfg) {
            Ok(n) => (n, Stat::FwdNewFlow),
            Err(s) => return Outcome::drop(s, vip_id),
        },
    };
    let new = Tuple { src: nat.snat, dst: nat.backend, sport: nat.snat_port, dport: nat.backend_port };
    // Forward misses pass the packet untranslated: the stack would reject a packet already
    // carrying our own address as its source (martian), and the flow entry keeps the
    // backend for the retransmission.
    emit(ctx, layout, l3, t, &new, stat, vip_id, false)
}

/// Picks a backend by Maglev, reserves a SNAT port and records both directions.
#[inline(always)]
fn new_flow(key: &FlowKey, l3: &L3, meta: &VipMeta, cfg: &LbConfig) -> Result<FlowNat, Stat> {
    if meta.backends == 0 {
        return Err(Stat::DropNoBackend);
    }
    let v6 = l3.family == FAMILY_V6;
    let h = maglev::flow_hash(key, v6);
    let backend = maglev::pick(meta.id, h).ok_or(Stat::DropNoBackend)?;
    let snat = if v6 { cfg.snat_v6 } else { [cfg.snat_v4, 0, 0, 0] };
    let reply = ReplyNat {
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        vip_id: meta.id,
    };
    let mut rkey = FlowKey {
        src: backend.addr,
        dst: snat,
        sport: backend.port,
        dport: 0,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    };
    let port = reserve_port(&mut rkey, &reply, maglev::port_hash(h), cfg)?;
    let nat = FlowNat {
        backend: backend.addr,
        snat,
        backend_port: backend.port,
        snat_port: port,
        vip_id: meta.id,
    };
    CONNTRACK.insert(key, &nat, 0).map_err(|_| Stat::DropMapError)?;
    Ok(nat)
}

/// Claims a SNAT port towards this backend: the reply entry is inserted only if absent,
/// so two flows never share a port; a port already mapped to this very flow is reused
/// (its forward entry was evicted before its reply entry).
#[inline(always)]
fn reserve_port(rkey: &mut FlowKey, reply: &ReplyNat, h: u32, cfg: &LbConfig) -> Result<u16, Stat> {
    let count = cfg.port_count as u32;
    if count == 0 {
        return Err(Stat::DropNatExhausted);
    }
    let mut i = 0;
    while i < PORT_TRIES {
        let port = (cfg.port_min as u32 + (h.wrapping_add(i)) % count) as u16;
        rkey.dport = port.to_be();
        if REPLY_NAT.insert(&*rkey, reply, BPF_NOEXIST as u64).is_ok() {
            return Ok(rkey.dport);
        }
        // SAFETY: compared by value immediately.
        if let Some(existing) = unsafe { REPLY_NAT.get(&*rkey) } {
            if existing == reply {
                return Ok(rkey.dport);
            }
        }
        i += 1;
    }
    Err(Stat::DropNatExhausted)
}

/// Backend -> SNAT address: translate back to VIP -> client.
#[inline(always)]
fn reply(ctx: &XdpContext, layout: &Layout, l3: &L3, t: &Tuple) -> Outcome {
    let key = flow_key(l3, t);
    // SAFETY: copied out at once.
    let Some(r) = (unsafe { REPLY_NAT.get(&key) }).copied() else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    if l3.ttl <= 1 {
        return Outcome::pass(Stat::PassTtl);
    }
    let new = Tuple { src: r.vip, dst: r.client, sport: r.vip_port, dport: r.client_port };
    // A reply whose neighbour is unknown is passed translated: its source is the VIP, not a
    // local address, so the stack forwards it and resolves the neighbour.
    emit(ctx, layout, l3, t, &new, Stat::FwdReply, r.vip_id, true)
}

/// Finds the next hop for the translated packet, rewrites it and sends it on its way.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn emit(
    ctx: &XdpContext,
    layout: &Layout,
    l3: &L3,
    old: &Tuple,
    new: &Tuple,
    stat: Stat,
    vip_id: u32,
    pass_translated: bool,
) -> Outcome {
    let q = FibQuery {
        family: l3.family,
        proto: l3.proto,
        src: &new.src,
        dst: &new.dst,
        sport: new.sport,
        dport: new.dport,
        ip_len: l3.ip_len,
    };
    // A tagged frame can only go back out tagged on the link it came from; any other
    // egress belongs to a VLAN device, which the stack must handle.
    let hop = match fib::lookup(ctx, &q) {
        Ok(hop) if !layout.vlan || hop.ifindex == ctx.ingress_ifindex() as u32 => Ok(hop),
        Ok(_) => Err(Stat::PassVlanEgress),
        Err(FibMiss::NoNeigh) => Err(Stat::PassNoNeigh),
        Err(FibMiss::Other) => Err(Stat::PassFibMiss),
    };
    let hop = match hop {
        Ok(hop) => hop,
        Err(s) => {
            if pass_translated && nat::rewrite(ctx, layout, old, new).is_err() {
                return Outcome::drop(Stat::DropMalformed, vip_id);
            }
            return Outcome { action: xdp_action::XDP_PASS, stat: s, egress: None, vip_id };
        }
    };
    if nat::rewrite(ctx, layout, old, new).is_err()
        || nat::set_macs(ctx, hop.smac, hop.dmac).is_err()
    {
        return Outcome::drop(Stat::DropMalformed, vip_id);
    }
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        return Outcome { action: xdp_action::XDP_TX, stat, egress: Some(Stat::Tx), vip_id };
    }
    // SAFETY: plain helper call; the verdict it returns is what we hand back.
    let action = unsafe { bpf_redirect(hop.ifindex, 0) } as u32;
    Outcome { action, stat, egress: Some(Stat::Redirect), vip_id }
}
