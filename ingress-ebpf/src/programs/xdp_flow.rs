//! Records flows for `xdp_lb`: a new flow gets a Maglev backend, a SNAT port and both of its
//! conntrack entries, and its first packet is forwarded from here; an established flow due
//! for its once-per-hop-TTL check makes sure it still owns its SNAT port, and the packet goes
//! back to `xdp_lb`, which forwards it as it forwards every established flow.
//!
//! A program of its own (tail-called, with `Scratch` carrying the flow key) because this path
//! needs the table inserts' stack and verifier budget, which the forwarding program has no
//! room for.
use aya_ebpf::{macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use ingress_common::{
    conntrack::{FlowKey, FlowNat, Hop, ReplyNat, SEEN_REPLIED, SEEN_SECS},
    counters::Stat,
    l4::{LbConfig, VipKey, VipMeta, FAMILY_V6, PROTO_UDP},
    maps::JUMP_LB,
};

use crate::{
    counters,
    lb::{
        copy_addr,
        emit::emit,
        expiry,
        fib::FibQuery,
        hop, maglev,
        nat::{self, Tuple},
        table::InsertError,
    },
    maps::{
        Scratch, AGAIN_CHECKED, AGAIN_NONE, BACKEND_HOPS, FLOWS, JUMPS, LB_CONFIG, REPLIES,
        RETIRED, SCRATCH, VIPS,
    },
    verdict::{self, Outcome, NO_VIP},
};

#[xdp]
pub fn xdp_flow(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let out = try_flow(&ctx);
    verdict::finish(&out, bytes)
}

#[inline(always)]
fn try_flow(ctx: &XdpContext) -> Outcome {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::pass(Stat::PassNotReady);
    };
    // SAFETY: this CPU's scratch slot, filled by xdp_lb for this packet.
    let scratch = unsafe { &mut *scratch };
    let Some(cfg) = LB_CONFIG.get(0) else {
        return Outcome::pass(Stat::PassNotReady);
    };
    let now = hop::now();
    if scratch.syn == 0 {
        if let Some(e) = FLOWS.get_ptr_mut(cfg, &scratch.key) {
            // SAFETY: a live table value.
            let nat = unsafe { &*e };
            if owns_port(scratch, cfg, nat) {
                if !backend_left(scratch, nat) {
                    return back_to_lb(ctx, scratch);
                }
                // Forgotten in both directions, then recorded again below as a new flow:
                // Maglev picks among the backends the VIP has now.
                FLOWS.remove(cfg, &scratch.key);
                REPLIES.remove(cfg, &scratch.rkey);
                counters::count(Stat::FlowBackendGone, 0);
            }
        }
    }
    // xdp_lb looked the VIP up for a new flow; an established flow that lost its port looks
    // it up here.
    let meta = if scratch.vip_known != 0 {
        scratch.vip
    } else {
        let key = &scratch.key;
        let vip = VipKey {
            addr: key.dst,
            port: key.dport,
            proto: key.proto,
            family: key.family,
        };
        // SAFETY: VIPS values are plain data, copied at once.
        match unsafe { VIPS.get(&vip) } {
            Some(m) => *m,
            // An established flow that lost its port, of a VIP removed since.
            None => return Outcome::pass(Stat::PassNotOurs),
        }
    };
    let next = match new_flow(ctx, scratch, &meta, cfg, now) {
        Ok(next) => next,
        Err(s) => return Outcome::drop(s, meta.id),
    };
    let nat = &scratch.nat;
    let new = Tuple {
        src: copy_addr(&nat.snat),
        dst: copy_addr(&nat.backend),
        sport: nat.snat_port,
        dport: nat.backend_port,
    };
    // Sent from here rather than through xdp_lb again: that second pass (parse, lookup)
    // was a fifth of a new flow's cost. A miss passes the packet untranslated, as there.
    emit(
        ctx,
        &scratch.layout,
        &scratch.tuple,
        &new,
        next,
        Stat::FwdNewFlow,
        meta.id,
        false,
    )
}

/// Hands the packet of a flow that passed its port check back to `xdp_lb`, marked so.
/// Returns only if that slot is empty.
#[inline(always)]
fn back_to_lb(ctx: &XdpContext, scratch: &mut Scratch) -> Outcome {
    scratch.again = AGAIN_CHECKED;
    // SAFETY: tail call into the program userspace put in the slot.
    unsafe { JUMPS.tail_call(ctx, JUMP_LB) };
    scratch.again = AGAIN_NONE;
    Outcome::drop(Stat::DropMapError, NO_VIP)
}

/// SNAT port candidates tried per new flow before giving up: with a backend's ports 30% taken,
/// 16 random tries all fail once in 200 million new flows (8 tries: once in 15,000).
const PORT_TRIES: u32 = 16;

/// Whether the flow `scratch.key` with forward entry `nat` still owns its SNAT port, putting
/// its reply entry back if it was evicted. Under table pressure a full bucket evicts first the
/// reply entries of flows whose replies are rare (one-way UDP), and the port can then go to
/// another flow: a flow that lost its port has its forward entry deleted.
///
/// Out of line (a BPF-to-BPF call, taken once per hop TTL per flow) to keep its locals off
/// the main program's stack frame.
#[inline(never)]
fn owns_port(scratch: &mut Scratch, cfg: &LbConfig, nat: &FlowNat) -> bool {
    let key = &scratch.key;
    let rkey = &mut scratch.rkey;
    let (backend, snat) = (&nat.backend, &nat.snat);
    set_key(rkey, backend, snat, nat.backend_port, nat.snat_port, key);
    // SAFETY: compared field by field immediately.
    if let Some(e) = unsafe { REPLIES.get(cfg, &*rkey) } {
        let ours = e.client == key.src
            && e.client_port == key.sport
            && e.vip == key.dst
            && e.vip_port == key.dport;
        if !ours {
            FLOWS.remove(cfg, key);
        }
        return ours;
    }
    // A flow old enough to have lost its reply entry to eviction is taken as answered: it
    // must not fall under the short timeout of flows nobody replied to.
    let seen = (nat.seen & SEEN_SECS) | SEEN_REPLIED;
    set_reply_entry(&mut scratch.reply, key, nat.vip_id, seen);
    if REPLIES
        .insert_new(cfg, &scratch.rkey, &scratch.reply)
        .is_ok()
    {
        return true;
    }
    // Taken between the lookup and the insert.
    FLOWS.remove(cfg, &scratch.key);
    false
}

/// Whether the UDP flow `scratch.key`, forwarded by `nat`, goes to a backend that has left
/// its VIP (userspace lists those in RETIRED). Checked with the port, once per hop TTL.
#[inline(never)]
fn backend_left(scratch: &mut Scratch, nat: &FlowNat) -> bool {
    let key = &scratch.key;
    if key.proto != PROTO_UDP {
        return false;
    }
    let r = &mut scratch.retired;
    r.vip.addr = copy_addr(&key.dst);
    r.vip.port = key.dport;
    r.vip.proto = key.proto;
    r.vip.family = key.family;
    r.backend.addr = copy_addr(&nat.backend);
    r.backend.port = nat.backend_port;
    r.backend.family = key.family;
    r.backend._pad = 0;
    // SAFETY: presence only; the value is not read.
    unsafe { RETIRED.get(&*r) }.is_some()
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

/// Writes into `r` the reply entry of the client flow `key`: replies go back to its client
/// from its VIP. Field by field, with the hop cleared word by word: a struct literal zeroes
/// the hop through a call to the byte-loop `memset`.
#[inline(always)]
fn set_reply_entry(r: &mut ReplyNat, key: &FlowKey, vip_id: u32, seen: u32) {
    r.client = copy_addr(&key.src);
    r.vip = copy_addr(&key.dst);
    r.client_port = key.sport;
    r.vip_port = key.dport;
    r.vip_id = vip_id;
    hop::clear(&mut r.hop);
    r.seen = seen;
}

/// Picks a backend by Maglev, resolves its next hop, reserves a SNAT port and records both
/// directions. Builds the entries in `scratch` (`scratch.key` is the client flow); a next hop
/// that cannot be resolved is left unset, for `xdp_lb` to look up (and miss) again.
#[inline(always)]
fn new_flow(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    meta: &VipMeta,
    cfg: &LbConfig,
    now: u32,
) -> Result<Result<Hop, Stat>, Stat> {
    if meta.backends == 0 {
        return Err(Stat::DropNoBackend);
    }
    let closing = scratch.closing;
    let v6 = scratch.key.family == FAMILY_V6;
    let h = maglev::flow_hash(&scratch.key, v6);
    let (backend_id, backend) = maglev::pick(meta.id, h).ok_or(Stat::DropNoBackend)?;
    let key = &scratch.key;
    let secs = expiry::now_secs();
    set_reply_entry(&mut scratch.reply, key, meta.id, secs);
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
    // The flow's own bucket is fetched now, after the backend pick and just before the
    // reply bucket's insert, so the two misses overlap. Fetched earlier (in xdp_lb, or
    // before the pick) it stalled the pick's ring read behind it: 10-20% slower with 1M
    // flows (BENCHMARKS.md).
    FLOWS.touch(cfg, &scratch.key);
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
    let q = FibQuery {
        family: scratch.key.family,
        proto: scratch.key.proto,
        src: &to_backend.src,
        dst: &to_backend.dst,
        sport: to_backend.sport,
        dport: to_backend.dport,
    };
    let next = match BACKEND_HOPS.get_ptr_mut(backend_id) {
        Some(cache) => hop::resolve(ctx, &q, cache, now),
        None => hop::lookup(ctx, &q, now),
    };
    let nat = &mut scratch.nat;
    nat.backend = to_backend.dst;
    nat.snat = snat;
    nat.backend_port = to_backend.dport;
    nat.snat_port = port;
    nat.vip_id = meta.id;
    match next {
        Ok(h) => nat.hop = h,
        Err(_) => hop::clear(&mut nat.hop),
    }
    nat.seen = secs | closing;
    FLOWS
        .insert(cfg, &scratch.key, &scratch.nat)
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
        let e = match REPLIES.insert_new(cfg, &*rkey, reply) {
            Ok(()) => return Ok(rkey.dport),
            Err(InsertError::Exists(e)) => e,
            Err(InsertError::Busy) => {
                i += 1;
                continue;
            }
        };
        // SAFETY: compared field by field immediately.
        let old = unsafe { &*e };
        if old.client == reply.client
            && old.client_port == reply.client_port
            && old.vip == reply.vip
            && old.vip_port == reply.vip_port
        {
            // A new connection on the same 5-tuple, or a flow whose forward entry was
            // evicted: its liveness starts afresh, without an old connection's FIN/RST.
            // Through the lock, not through `e`: the slot may change hands once unlocked.
            let _ = REPLIES.insert(cfg, &*rkey, reply);
            return Ok(rkey.dport);
        }
        if take_over(rkey, okey, old, reply, cfg) {
            counters::count(Stat::NatPortReused, 0);
            return Ok(rkey.dport);
        }
        i += 1;
    }
    Err(Stat::DropNatExhausted)
}

/// Takes the port of `old`'s flow if that flow has expired: its forward entry is deleted (when
/// it still points at this port, so a late packet of it cannot reach the new flow's backend
/// connection) and its reply entry is overwritten with `reply`.
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
    let fwd = unsafe { FLOWS.get(cfg, &*okey) }.filter(|f| {
        f.snat_port == rkey.dport && f.backend_port == rkey.sport && f.backend == rkey.src
    });
    let fwd_seen = fwd.map(|f| f.seen);
    if !expiry::expired(old.seen, fwd_seen, rkey.proto, cfg, now) {
        return false;
    }
    if fwd_seen.is_some() {
        FLOWS.remove(cfg, &*okey);
    }
    // Through the lock, not through `old`: the slot may change hands once unlocked. Two
    // CPUs taking over the same expired port in the same instant could both succeed: the
    // window is the few instructions between the check and this write, for a port both
    // picked among thousands; accepted.
    REPLIES.insert(cfg, rkey, reply).is_ok()
}
