//! When a flow's SNAT port may go to another flow. Nothing deletes flow entries but a full
//! bucket's eviction, so without this a backend's ports would all stay taken by flows long
//! closed.
//! Each direction's entry keeps `seen`: seconds of its last packet (to within the hop TTL,
//! since it is refreshed with the hop cache, and exactly on FIN or RST) and FIN/RST bits; the
//! reply entry also marks that the backend ever answered.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use ingress_common::{
    conntrack::{SEEN_FIN, SEEN_FLAGS, SEEN_REPLIED, SEEN_RST, SEEN_SECS},
    l4::{LbConfig, PROTO_TCP},
};

use crate::maps::CLOCK;

/// Jiffies a CPU reuses its last clock read for: 16 ms at HZ=1000, 64 ms at HZ=250, 160 ms at
/// HZ=100. Timeouts are whole seconds, so a stamp this much early only keeps a port a little
/// longer.
const CLOCK_TTL_JIFFIES: u32 = 16;

/// Coarse monotonic seconds in the `SEEN_SECS` bits. The clock is a helper call (a chain of
/// kernel calls, each paying this host's return thunk); a CPU busy with new flows reads it
/// once per `CLOCK_TTL_JIFFIES`, the jiffies being one inlined load.
#[inline(always)]
pub fn now_secs() -> u32 {
    let jiffies = crate::lb::hop::now();
    let Some(c) = CLOCK.get_ptr_mut(0) else {
        return read_secs();
    };
    // SAFETY: this CPU's slot, used by one program run at a time.
    let c = unsafe { &mut *c };
    if c.jiffies != 0 && jiffies.wrapping_sub(c.jiffies) < CLOCK_TTL_JIFFIES {
        return c.secs;
    }
    let secs = read_secs();
    c.jiffies = jiffies;
    c.secs = secs;
    secs
}

#[inline(always)]
fn read_secs() -> u32 {
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
