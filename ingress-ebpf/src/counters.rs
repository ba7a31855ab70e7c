//! Per-CPU counting of every verdict and drop reason, and of traffic per VIP.
use ingress_common::counters::{Counter, Stat};

use crate::maps::{STATS, VIP_STATS};

#[inline(always)]
fn add(slot: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = slot {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts one packet of `bytes` under `stat`.
#[inline(always)]
pub fn count(stat: Stat, bytes: u64) {
    add(STATS.get_ptr_mut(stat as u32), bytes);
}

/// Counts one packet of `bytes` against the VIP with this id.
#[inline(always)]
pub fn count_vip(vip_id: u32, bytes: u64) {
    add(VIP_STATS.get_ptr_mut(vip_id), bytes);
}
