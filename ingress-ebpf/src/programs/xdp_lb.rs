//! XDP L4 load balancer: VIP traffic is NATed to a Maglev-chosen backend and forwarded from
//! the driver; replies are reverse-NATed; everything else goes to the stack untouched.
use aya_ebpf::{
    bindings::{xdp_action, BPF_EXIST, BPF_NOEXIST},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use ingress_common::{
    conntrack::{FlowKey, FlowNat, Hop, ReplyNat, SEEN_REPLIED, SEEN_SECS},
    counters::Stat,
    l4::{
        vip_filter_bit, LbConfig, VipAddrKey, VipKey, VipMeta, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6,
        PROTO_TCP, PROTO_UDP,
    },
    maps::{JUMP_ICMP, JUMP_TOO_BIG},
};

use crate::{
    counters,
    lb::{
        copy_addr, expiry,
        fib::FibQuery,
        hop, maglev, mtu,
        nat::{self, Layout, Tuple},
    },
    maps::{
        Scratch, BACKEND_HOPS, CONNTRACK, JUMPS, LB_CONFIG, REPLY_NAT, SCRATCH, VIPS, VIP_ADDRS,
        VIP_FILTER,
    },
    parse::{
        eth::{self, ETH_P_IP, ETH_P_IPV6},
        ip::{self, IpError, L3},
        l4, read,
    },
    verdict::{self, Outcome, NO_VIP},
};

/// SNAT port candidates tried per new flow before giving up: with a backend's ports 30% taken,
/// 16 random tries all fail once in 200 million new flows (8 tries: once in 15,000).
const PORT_TRIES: u32 = 16;

/// Whether the flow `scratch.key` with forward entry `nat` still owns its SNAT port, putting
/// its reply entry back if the LRU evicted it. Under table pressure the LRU evicts first the
/// reply entries of flows whose replies are rare (one-way UDP), and the port can then go to
/// another flow: a flow that lost its port has its forward entry deleted.
///
/// Out of line (a BPF-to-BPF call, taken once per hop TTL per flow) to keep its locals off
/// the main program's stack frame.
#[inline(never)]
fn owns_port(scratch: &mut Scratch, nat: &FlowNat) -> bool {
    let key = &scratch.key;
    let rkey = &mut scratch.rkey;
    let (backend, snat) = (&nat.backend, &nat.snat);
    set_key(rkey, backend, snat, nat.backend_port, nat.snat_port, key);
    // SAFETY: compared field by field immediately.
    if let Some(e) = unsafe { REPLY_NAT.get(&*rkey) } {
        let ours = e.client == key.src
            && e.client_port == key.sport
            && e.vip == key.dst
            && e.vip_port == key.dport;
        if !ours {
            let _ = CONNTRACK.remove(key);
        }
        return ours;
    }
    // A flow old enough to have lost its reply entry to the LRU is taken as answered: it
    // must not fall under the short timeout of flows nobody replied to.
    scratch.reply = reply_entry(key, nat.vip_id, (nat.seen & SEEN_SECS) | SEEN_REPLIED);
    if REPLY_NAT
        .insert(&scratch.rkey, &scratch.reply, BPF_NOEXIST as u64)
        .is_ok()
    {
        return true;
    }
    // Taken between the lookup and the insert.
    let _ = CONNTRACK.remove(&scratch.key);
    false
}

/// Fills `k` with a flow's addresses and ports and `like`'s protocol and family, field by
/// field: a whole-struct temporary would cost BPF stack the program lacks.
#[inline(always)]
fn set_key(
    k: &mut FlowKey,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    like: &FlowKey,
) {
    k.src = copy_addr(src);
    k.dst = copy_addr(dst);
    k.sport = sport;
    k.dport = dport;
    k.proto = like.proto;
    k.family = like.family;
    k._pad = 0;
}

/// The reply entry of the client flow `key`: replies go back to its client from its VIP.
#[inline(always)]
fn reply_entry(key: &FlowKey, vip_id: u32, seen: u32) -> ReplyNat {
    ReplyNat {
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        vip_id,
        hop: Hop::default(),
        seen,
    }
}

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
    let is_snat = if l3.family == FAMILY_V6 {
        l3.dst == copy_addr(&cfg.snat_v6)
    } else {
        l3.dst[0] == cfg.snat_v4
    };
    // The SNAT address is usually the node's own: its ssh, kubelet and API traffic must not
    // pay a hash lookup, and only ports we hand out can carry a reply.
    if is_snat && nat::in_snat_range(ports.dport, cfg) {
        return reply(ctx, &layout, &l3, &tuple, ports.closing);
    }
    Outcome::pass(Stat::PassNotOurs)
}

#[inline(always)]
fn may_be_vip(addr: &[u32; 4], port: u16, proto: u8) -> bool {
    let bit = vip_filter_bit(addr, port, proto);
    VIP_FILTER
        .get(bit >> 6)
        .is_some_and(|w| *w & (1u64 << (bit & 63)) != 0)
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

/// Client -> VIP: established flows keep their NAT; new flows get a backend and a port.
/// `None` when the packet is not for a VIP after all (a prefilter false positive).
///
/// Conntrack is consulted before the VIP table: an established flow needs one hash lookup,
/// and keeps going even if its VIP was removed since, as established flows do in kube-proxy.
/// A SYN skips conntrack: it starts a connection, and a retransmitted one picks the same
/// backend (Maglev) and finds its own SNAT port again (see `reserve_port`).
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
    scratch.key = flow_key(l3, t);
    let now = hop::now();
    let existing = if syn {
        None
    } else {
        CONNTRACK.get_ptr_mut(&scratch.key)
    };
    // Once per hop TTL, an established flow makes sure it still owns its SNAT port; one
    // that lost it starts again as a new flow instead of joining another flow's connection.
    // SAFETY: entry points at a live map value.
    let existing = existing
        .filter(|&e| hop::fresh(unsafe { &(*e).hop }, now) || owns_port(scratch, unsafe { &*e }));
    let (new, next, stat, vip_id) = match existing {
        Some(entry) => {
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
                expiry::touch(seen, closing, expiry::now_secs());
            }
            // SAFETY: the hop field of the same live value.
            let next = hop::resolve(ctx, &query(l3, &new), unsafe { &raw mut (*entry).hop }, now);
            (new, next, Stat::FwdConntrack, vip_id)
        }
        None => {
            let vip = VipKey {
                addr: l3.dst,
                port: t.dport,
                proto: l3.proto,
                family: l3.family,
            };
            // SAFETY: VIPS values are plain data; a concurrent userspace update can only
            // swap in another valid VipMeta.
            let meta = unsafe { VIPS.get(&vip) }?;
            if l3.ttl <= 1 {
                return Some(Outcome::pass(Stat::PassTtl));
            }
            match new_flow(ctx, scratch, l3, meta, cfg, now, closing) {
                Ok(next) => {
                    let nat = &scratch.nat;
                    let new = Tuple {
                        src: copy_addr(&nat.snat),
                        dst: copy_addr(&nat.backend),
                        sport: nat.snat_port,
                        dport: nat.backend_port,
                    };
                    (new, next, Stat::FwdNewFlow, meta.id)
                }
                Err(s) => return Some(Outcome::drop(s, meta.id)),
            }
        }
    };
    // Forward misses pass the packet untranslated: the stack would reject a packet already
    // carrying our own address as its source (martian), and the flow entry keeps the
    // backend for the retransmission.
    Some(emit(ctx, layout, t, &new, next, stat, vip_id, false))
}

/// Picks a backend by Maglev, resolves its next hop, reserves a SNAT port and records both
/// directions. Builds the entries in `scratch` (`scratch.key` is the client flow) and leaves
/// the forward entry in `scratch.nat`.
#[inline(always)]
fn new_flow(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    l3: &L3,
    meta: &VipMeta,
    cfg: &LbConfig,
    now: u32,
    closing: u32,
) -> Result<Result<Hop, Stat>, Stat> {
    if meta.backends == 0 {
        return Err(Stat::DropNoBackend);
    }
    let v6 = l3.family == FAMILY_V6;
    let h = maglev::flow_hash(&scratch.key, v6);
    let (backend_id, backend) = maglev::pick(meta.id, h).ok_or(Stat::DropNoBackend)?;
    let key = &scratch.key;
    let secs = expiry::now_secs();
    scratch.reply = reply_entry(key, meta.id, secs);
    let snat = nat::snat_addr(cfg, v6);
    scratch.rkey = FlowKey {
        src: copy_addr(&backend.addr),
        dst: snat,
        sport: backend.port,
        dport: 0,
        proto: key.proto,
        family: key.family,
        _pad: 0,
    };
    let h = maglev::port_hash(h);
    let port = reserve_port(&mut scratch.rkey, &mut scratch.okey, &scratch.reply, cfg, h)?;
    debug!(
        ctx,
        "new flow: vip {} backend {} snat port {}",
        meta.id,
        backend_id,
        u16::from_be(port)
    );
    let to_backend = Tuple {
        src: snat,
        dst: scratch.rkey.src,
        sport: port,
        dport: scratch.rkey.sport,
    };
    let next = match BACKEND_HOPS.get_ptr_mut(backend_id) {
        Some(cache) => hop::resolve(ctx, &query(l3, &to_backend), cache, now),
        None => hop::lookup(ctx, &query(l3, &to_backend), now),
    };
    scratch.nat = FlowNat {
        backend: to_backend.dst,
        snat,
        backend_port: to_backend.dport,
        snat_port: port,
        vip_id: meta.id,
        hop: match next {
            Ok(h) => h,
            Err(_) => Hop::default(),
        },
        seen: secs | closing,
    };
    CONNTRACK
        .insert(&scratch.key, &scratch.nat, 0)
        .map_err(|_| Stat::DropMapError)?;
    Ok(next)
}

/// Claims a SNAT port towards this backend: the reply entry is inserted only if absent,
/// so two flows never share a port; a port already mapped to this very flow is reused
/// (its forward entry was evicted before its reply entry), and a port whose flow has
/// expired is taken over (`expiry`).
#[inline(always)]
fn reserve_port(
    rkey: &mut FlowKey,
    okey: &mut FlowKey,
    reply: &ReplyNat,
    cfg: &LbConfig,
    h: u32,
) -> Result<u16, Stat> {
    let count = cfg.port_count as u32;
    if count == 0 {
        return Err(Stat::DropNatExhausted);
    }
    let mut i = 0;
    let mut h = h;
    while i < PORT_TRIES {
        // Each try rehashes instead of probing the next port: taken ports cluster, and a
        // linear probe that lands in a cluster fails far more often than the load suggests.
        let port = (cfg.port_min as u32 + h % count) as u16;
        h = maglev::port_hash(h);
        rkey.dport = port.to_be();
        if REPLY_NAT.insert(&*rkey, reply, BPF_NOEXIST as u64).is_ok() {
            return Ok(rkey.dport);
        }
        // SAFETY: compared field by field immediately.
        if let Some(e) = unsafe { REPLY_NAT.get(&*rkey) } {
            if e.client == reply.client
                && e.client_port == reply.client_port
                && e.vip == reply.vip
                && e.vip_port == reply.vip_port
            {
                // A new connection on the same 5-tuple, or a flow whose forward entry was
                // evicted: its liveness starts afresh, without an old connection's FIN/RST.
                let _ = REPLY_NAT.insert(&*rkey, reply, BPF_EXIST as u64);
                return Ok(rkey.dport);
            }
            if take_over(rkey, okey, e, reply, cfg) {
                counters::count(Stat::NatPortReused, 0);
                return Ok(rkey.dport);
            }
        }
        i += 1;
    }
    Err(Stat::DropNatExhausted)
}

/// Takes the port of `old`'s flow if that flow has expired: its forward entry is deleted (when
/// it still points at this port, so a late packet of it cannot reach the new flow's backend
/// connection) and its reply entry is overwritten with `reply`.
///
/// Two CPUs taking over the same expired port in the same instant could both succeed: hash
/// maps have no compare-and-swap. The window is the few instructions between the read and
/// the write, for a port both picked among thousands; accepted.
///
/// Out of line (a BPF-to-BPF call on this rare path) to keep its locals off the main
/// program's stack frame; `reply.seen` is the current time.
#[inline(never)]
fn take_over(
    rkey: &FlowKey,
    okey: &mut FlowKey,
    old: &ReplyNat,
    reply: &ReplyNat,
    cfg: &LbConfig,
) -> bool {
    let now = reply.seen;
    set_key(
        okey,
        &old.client,
        &old.vip,
        old.client_port,
        old.vip_port,
        rkey,
    );
    // SAFETY: read-only look at the old flow's forward entry; fields are copied out at once.
    let fwd = unsafe { CONNTRACK.get(&*okey) }.filter(|f| {
        f.snat_port == rkey.dport && f.backend_port == rkey.sport && f.backend == rkey.src
    });
    let fwd_seen = fwd.map(|f| f.seen);
    if !expiry::expired(old.seen, fwd_seen, rkey.proto, cfg, now) {
        return false;
    }
    if fwd_seen.is_some() {
        let _ = CONNTRACK.remove(&*okey);
    }
    REPLY_NAT.insert(rkey, reply, BPF_EXIST as u64).is_ok()
}

/// Backend -> SNAT address: translate back to VIP -> client.
#[inline(always)]
fn reply(ctx: &XdpContext, layout: &Layout, l3: &L3, t: &Tuple, closing: u32) -> Outcome {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::pass(Stat::PassNotOurs);
    };
    // SAFETY: this CPU's scratch slot, used by this packet only.
    let scratch = unsafe { &mut *scratch };
    scratch.key = flow_key(l3, t);
    let Some(entry) = REPLY_NAT.get_ptr_mut(&scratch.key) else {
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
        expiry::touch(
            unsafe { &raw mut (*entry).seen },
            closing | SEEN_REPLIED,
            expiry::now_secs(),
        );
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

/// Rewrites the packet for its next hop and sends it on its way; a missing hop hands the
/// packet to the stack (translated or not, as the caller decides).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn emit(
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
    let mtu = mtu::exceeded(ctx, hop.ifindex, layout.ip_len, hop::now())?;
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
