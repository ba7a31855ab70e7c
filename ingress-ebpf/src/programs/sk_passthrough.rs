//! TLS passthrough splice: every byte received on a paired socket is redirected to the egress
//! of its peer, as far as userspace's credit allows; past it, bytes are held in the socket's
//! own receive queue (charged to it, so TCP's window closes) for userspace to relay. Verdict
//! only (no stream parser), no data is read.
use aya_ebpf::{
    bindings::sk_action, helpers::bpf_get_socket_cookie, macros::stream_verdict,
    programs::SkBuffContext, EbpfContext,
};
use aya_log_ebpf::debug;
use ingress_common::counters::Stat;

use crate::{
    counters::count,
    maps::{SPLICE_CREDIT, SPLICE_HELD, SPLICE_PEERS, SPLICE_SOCKS},
};

#[stream_verdict]
pub fn sk_passthrough(ctx: SkBuffContext) -> u32 {
    let len = ctx.len();
    if len == 0 {
        // A bare FIN. Redirected, it would reach the peer's send path after userspace shut
        // that down (EPIPE, reported as a socket error). Userspace passes FINs on itself.
        return sk_action::SK_DROP;
    }
    // SAFETY: the helper only reads the socket the skb belongs to.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(peer) = SPLICE_PEERS.get_ptr_mut(cookie) else {
        // Not (or no longer) paired: nothing sane to do with the bytes.
        debug!(&ctx, "unpaired socket {}: {} bytes dropped", cookie, len);
        count(Stat::DropSpliceUnpaired, u64::from(len));
        return sk_action::SK_DROP;
    };
    // SAFETY: `peer` points into a live map value; `passed` and `redirected` have the single
    // writer described below.
    let (mut peer_cookie, redirected, passed) =
        unsafe { ((*peer).peer_cookie, (*peer).redirected, (*peer).passed) };
    if let Some(first) = hold(cookie, redirected, passed, len) {
        // SK_PASS without a redirect: the skb joins this socket's receive queue, where
        // userspace reads it once the peer has taken everything redirected before it.
        // SAFETY: as above.
        unsafe { (*peer).passed = passed + u64::from(len) };
        count(Stat::SpliceHeld, u64::from(len));
        if first && SPLICE_HELD.output(cookie, 0).is_err() {
            // Userspace also sweeps every pair now and then: late, not lost.
            count(Stat::SpliceHeldUnnotified, u64::from(len));
        }
        return sk_action::SK_PASS;
    }
    // bpf_sk_redirect_hash returns SK_PASS (queued to the peer) or SK_DROP (peer gone).
    let verdict = SPLICE_SOCKS.redirect_skb(&ctx, &mut peer_cookie, 0) as u32;
    if verdict == sk_action::SK_PASS {
        // Only bytes on their way to the peer count: userspace waits for the peer to have
        // sent this many before it passes a FIN on, and bytes dropped here never will be.
        // SAFETY: as above. The verdict of one socket runs under that socket's lock
        // (tcp_read_skb), so this entry has a single writer and a plain add is race-free;
        // userspace only reads it.
        unsafe { (*peer).redirected = redirected + u64::from(len) };
    } else {
        count(Stat::DropSplicePeerGone, u64::from(len));
    }
    verdict
}

/// Whether `len` more bytes must be held (`Some(first of a hold)`): earlier bytes are still
/// held (order), or redirecting them would pass the credit. No credit entry holds too, so
/// memory stays bounded.
#[inline(always)]
fn hold(cookie: u64, redirected: u64, passed: u64, len: u32) -> Option<bool> {
    let Some(credit) = SPLICE_CREDIT.get_ptr(cookie) else {
        return Some(false);
    };
    // SAFETY: a live map value; userspace replaces it whole, never in place.
    let (limit, consumed) = unsafe { ((*credit).limit, (*credit).consumed) };
    // `>`, not `!=`: should userspace ever read more than was held (bytes that reached the
    // receive queue before the verdict ran), the splice resumes instead of holding for good.
    if passed > consumed {
        return Some(false);
    }
    (redirected + u64::from(len) > limit).then_some(true)
}
