//! TLS passthrough splice: every byte received on a paired socket is redirected to the egress
//! of its peer. Verdict only (no stream parser), no data is read.
use aya_ebpf::{
    bindings::sk_action, helpers::bpf_get_socket_cookie, macros::stream_verdict,
    programs::SkBuffContext, EbpfContext,
};
use aya_log_ebpf::debug;
use ingress_common::counters::Stat;

use crate::{
    counters::count,
    maps::{SPLICE_PEERS, SPLICE_SOCKS},
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
    // SAFETY: `peer` points into a live map value.
    let mut peer_cookie = unsafe { (*peer).peer_cookie };
    // bpf_sk_redirect_hash returns SK_PASS (queued to the peer) or SK_DROP (peer gone).
    let verdict = SPLICE_SOCKS.redirect_skb(&ctx, &mut peer_cookie, 0) as u32;
    if verdict == sk_action::SK_PASS {
        // Only bytes on their way to the peer count: userspace waits for the peer to have
        // sent this many before it passes a FIN on, and bytes dropped here never will be.
        // SAFETY: as above. The verdict of one socket runs under that socket's lock
        // (tcp_read_skb), so this entry has a single writer and a plain add is race-free;
        // userspace only reads it.
        unsafe { (*peer).redirected += u64::from(len) };
    } else {
        count(Stat::DropSplicePeerGone, u64::from(len));
    }
    verdict
}
