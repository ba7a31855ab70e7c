//! Edge protection for the node's ingress destinations (the HTTP and HTTPS listeners and every
//! L4 VIP): a packet from a blocked source is dropped, and a SYN (or a datagram starting a
//! UDP flow) over its source's new-connection rate is dropped, here in the driver, before the stack or the proxy spends
//! anything on it.
//!
//! Tail-called by `xdp_lb`, with the packet's addressing in `Scratch`, only for destinations
//! in the edge prefilter: for every packet to a guarded listener (what passes goes to the
//! stack), and for each packet that would start a flow on a guarded VIP (what passes goes on
//! to `xdp_flow`). Established VIP flows and other traffic never pay for it.
use core::{
    intrinsics::{atomic_cxchg, AtomicOrdering},
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::BPF_NOEXIST, btf_maps::lpm_trie::Key, helpers::bpf_ktime_get_ns, macros::xdp,
    programs::XdpContext,
};
use ingress_common::{
    counters::Stat,
    edge::{EdgeConfig, SourceKey, EDGE_LISTENER},
    l4::{VipKey, FAMILY_V6, PROTO_UDP},
    maps::JUMP_FLOW,
};

use crate::{
    lb::copy_addr,
    maps::{BLOCK_V4, BLOCK_V6, EDGE_CONFIG, EDGE_DESTS, JUMPS, SCRATCH, SYN_RATE},
    verdict::{self, Outcome, NO_VIP},
};

#[xdp]
pub fn xdp_edge(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let out = try_edge(&ctx);
    verdict::finish(&out, bytes)
}

#[inline(always)]
fn try_edge(ctx: &XdpContext) -> Outcome {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::pass(Stat::PassNotReady);
    };
    // SAFETY: this CPU's scratch slot, filled by xdp_lb for this packet.
    let scratch = unsafe { &*scratch };
    // xdp_lb found the VIP of a new flow; otherwise the packet is for a listener.
    let new_flow = scratch.vip_known != 0;
    let family = scratch.layout.family;
    let t = &scratch.tuple;
    let dest = VipKey {
        addr: copy_addr(&t.dst),
        port: t.dport,
        proto: scratch.layout.proto,
        family,
    };
    // SAFETY: plain data, copied at once.
    let vip_id = match unsafe { EDGE_DESTS.get(&dest) } {
        Some(d) => d.vip_id,
        // A prefilter false positive: not guarded.
        None if new_flow => return to_flow(ctx),
        None => return Outcome::pass(Stat::PassNotOurs),
    };
    let charged = if vip_id == EDGE_LISTENER {
        NO_VIP
    } else {
        vip_id
    };
    if blocked(family, &t.src) {
        return Outcome::drop(Stat::DropBlocked, charged);
    }
    // A connection starts with a SYN; a UDP flow with whichever datagram finds no flow.
    let starts = scratch.syn != 0 || (new_flow && dest.proto == PROTO_UDP);
    if starts {
        if let Some(cfg) = EDGE_CONFIG.get(0) {
            if cfg.syn_interval_ns != 0 && !syn_allowed(cfg, family, &t.src) {
                return Outcome::drop(Stat::DropSynRate, charged);
            }
        }
    }
    if new_flow {
        return to_flow(ctx);
    }
    Outcome::pass(Stat::PassEdgeChecked)
}

/// Hands a new flow's packet on to `xdp_flow`, as `xdp_lb` would have. Returns only if that
/// slot is empty.
#[inline(always)]
fn to_flow(ctx: &XdpContext) -> Outcome {
    // SAFETY: tail call into the program userspace put in the slot.
    unsafe { JUMPS.tail_call(ctx, JUMP_FLOW) };
    Outcome::pass(Stat::PassNotReady)
}

/// Whether `src` falls in a blocked prefix of its family.
#[inline(always)]
fn blocked(family: u8, src: &[u32; 4]) -> bool {
    if family == FAMILY_V6 {
        // SAFETY: four words in network order are the address's sixteen bytes in order.
        let data = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(copy_addr(src)) };
        BLOCK_V6.get(&Key::new(128, data)).is_some()
    } else {
        BLOCK_V4.get(&Key::new(32, src[0].to_ne_bytes())).is_some()
    }
}

/// Compare-and-swap attempts on one source's due time before its SYN is refused: losing that
/// many races means other CPUs are spending the same source's budget at this very moment.
const SYN_CAS_TRIES: u32 = 4;

/// Generic cell rate algorithm: a SYN is allowed unless its source's next one is due more
/// than the burst tolerance ahead of now; an allowed SYN moves that time one interval on, by
/// compare-and-swap, so SYNs of one source on several CPUs at once are counted one by one.
#[inline(always)]
fn syn_allowed(cfg: &EdgeConfig, family: u8, src: &[u32; 4]) -> bool {
    let mut addr = copy_addr(src);
    if family == FAMILY_V6 {
        // One host holds a /64: counting its addresses apart would let it multiply its rate.
        addr[2] = 0;
        addr[3] = 0;
    }
    let key = SourceKey {
        addr,
        family: family as u32,
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let due = match SYN_RATE.get_ptr_mut(&key) {
        Some(due) => due,
        None => {
            // A source's first SYN. Only one CPU can create the entry; one that finds it
            // created meanwhile counts against it like any later SYN.
            if SYN_RATE
                .insert(&key, now + cfg.syn_interval_ns, BPF_NOEXIST as u64)
                .is_ok()
            {
                return true;
            }
            match SYN_RATE.get_ptr_mut(&key) {
                Some(due) => due,
                // The map cannot hold it (or it was evicted at once): a limiter that cannot
                // count must not turn into a block.
                None => return true,
            }
        }
    };
    let mut tries = 0;
    while tries < SYN_CAS_TRIES {
        // SAFETY: a live map value; read once, then only swapped atomically.
        let seen = unsafe { read_volatile(due) };
        let next = seen.max(now);
        if next - now > cfg.syn_tolerance_ns {
            return false;
        }
        // SAFETY: as above. The intrinsic, as in the conntrack table's lock, for BPF_CMPXCHG.
        let (_, won) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                due,
                seen,
                next + cfg.syn_interval_ns,
            )
        };
        if won {
            return true;
        }
        tries += 1;
    }
    false
}
