//! Next-hop cache: `bpf_fib_lookup` is the costliest step of forwarding, so its answer is kept
//! in the flow entry (or per backend for new flows) and trusted for `HOP_TTL_JIFFIES`.
use aya_ebpf::{helpers::bpf_jiffies64, programs::XdpContext};
use ingress_common::{
    conntrack::{Hop, HOP_TTL_JIFFIES},
    counters::Stat,
};

use super::fib::{self, FibMiss, FibQuery};

/// Monotonic time in jiffies, low 32 bits (the verifier inlines the helper into one load).
#[inline(always)]
pub fn now() -> u32 {
    // SAFETY: plain helper call.
    unsafe { bpf_jiffies64() as u32 }
}

/// Empties a hop (never looked up) word by word: zeroing it as a struct goes through a call
/// to the byte-loop `memset`.
#[inline(always)]
pub fn clear(h: &mut Hop) {
    const WORDS: usize = core::mem::size_of::<Hop>() / 4;
    let p = (h as *mut Hop).cast::<u32>();
    let mut i = 0;
    while i < WORDS {
        // SAFETY: Hop is 20 bytes of plain integers, 4-aligned: five u32 words.
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
        i += 1;
    }
}

/// Whether a cached hop can be used at `now`.
#[inline(always)]
pub fn fresh(h: &Hop, now: u32) -> bool {
    fresh_stamp(h.stamp_jiffies, now)
}

/// Whether something stamped at `stamp` (jiffies; 0 = never) is within the hop TTL at `now`.
#[inline(always)]
pub fn fresh_stamp(stamp: u32, now: u32) -> bool {
    stamp != 0 && now.wrapping_sub(stamp) < HOP_TTL_JIFFIES
}

/// The next hop for `q`: from `cache` when fresh, else looked up (and stored in `cache`).
/// Misses are returned as the stat explaining why the packet goes to the stack.
#[inline(always)]
pub fn resolve(ctx: &XdpContext, q: &FibQuery, cache: *mut Hop, now: u32) -> Result<Hop, Stat> {
    // SAFETY: cache points at a live map value; a concurrent writer can only store another
    // complete lookup result for the same destination.
    let cached = unsafe { *cache };
    if fresh(&cached, now) {
        return Ok(cached);
    }
    let hop = lookup(ctx, q, now)?;
    // SAFETY: as above.
    unsafe { *cache = hop };
    Ok(hop)
}

/// A fresh lookup, stamped with `now`.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, q: &FibQuery, now: u32) -> Result<Hop, Stat> {
    match fib::lookup(ctx, q) {
        Ok(n) => Ok(Hop {
            ifindex: n.ifindex,
            smac: n.smac,
            dmac: n.dmac,
            stamp_jiffies: now,
        }),
        Err(FibMiss::NoNeigh) => Err(Stat::PassNoNeigh),
        Err(FibMiss::Other) => Err(Stat::PassFibMiss),
    }
}
