//! When a flow's SNAT port may go to another flow. Nothing deletes flow entries but LRU
//! eviction, so without this a backend's ports would all stay taken by flows long closed.
//! Each direction's entry keeps `seen`: seconds of its last packet (to within the hop TTL,
//! since it is refreshed with the hop cache, and exactly on FIN or RST) and FIN/RST bits; the
//! reply entry also marks that the backend ever answered.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use ingress_common::{
    conntrack::{SEEN_FIN, SEEN_FLAGS, SEEN_REPLIED, SEEN_RST, SEEN_SECS},
    l4::{LbConfig, PROTO_TCP},
};

/// Coarse monotonic seconds in the `SEEN_SECS` bits. A helper call: slow paths only.
#[inline(always)]
pub fn now_secs() -> u32 {
    // SAFETY: plain helper call.
    let ns = unsafe { bpf_ktime_get_coarse_ns() };
    (ns / 1_000_000_000) as u32 & SEEN_SECS
}

/// Records a packet at `now` carrying the `flags` bits; flag bits once set stay set.
#[inline(always)]
pub fn touch(seen: *mut u32, flags: u32, now: u32) {
    // SAFETY: seen points at a field of a live map value; a racing writer stores another
    // equally valid stamp.
    unsafe { *seen = now | (*seen & SEEN_FLAGS) | flags };
}

#[inline(always)]
fn age(seen: u32, now: u32) -> u32 {
    now.wrapping_sub(seen) & SEEN_SECS
}

/// Whether a flow whose reply entry was last `seen` as given (and its forward entry as
/// `fwd`, if that still exists) has been quiet longer than its timeout at `now`.
#[inline(always)]
pub fn expired(seen: u32, fwd: Option<u32>, proto: u8, cfg: &LbConfig, now: u32) -> bool {
    let replied = seen & SEEN_REPLIED != 0;
    let fwd = fwd.unwrap_or(seen);
    let flags = (seen | fwd) & (SEEN_FIN | SEEN_RST);
    let quiet = age(seen, now).min(age(fwd, now));
    let mut limit = if proto != PROTO_TCP {
        cfg.udp_secs
    } else if flags & SEEN_RST != 0 {
        cfg.tcp_close_secs
    } else if flags & SEEN_FIN != 0 {
        cfg.tcp_time_wait_secs
    } else {
        cfg.tcp_established_secs
    };
    if !replied && cfg.unreplied_secs != 0 && (limit == 0 || cfg.unreplied_secs < limit) {
        limit = cfg.unreplied_secs;
    }
    // A zero limit means "not configured", never "reuse at once".
    limit != 0 && quiet > limit
}
