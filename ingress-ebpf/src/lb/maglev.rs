//! Backend choice: a flow hash indexes the VIP's Maglev ring, built in userspace.
use ingress_common::{
    conntrack::FlowKey,
    l4::{Backend, MAGLEV_RING_SIZE, NO_BACKEND},
};

use crate::maps::{BACKENDS, MAGLEV};

#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a flow's 5-tuple; the same on every node, so every node picks the same backend.
#[inline(always)]
pub fn flow_hash(k: &FlowKey, v6: bool) -> u32 {
    let mut h = 0x9e37_79b9u32 ^ k.proto as u32;
    h = mix(h ^ k.src[0]);
    h = mix(h ^ k.dst[0]);
    if v6 {
        h = mix(h ^ k.src[1]);
        h = mix(h ^ k.src[2]);
        h = mix(h ^ k.src[3]);
        h = mix(h ^ k.dst[1]);
        h = mix(h ^ k.dst[2]);
        h = mix(h ^ k.dst[3]);
    }
    mix(h ^ (((k.sport as u32) << 16) | k.dport as u32))
}

/// A second, independent hash of the same flow, used to spread SNAT ports.
#[inline(always)]
pub fn port_hash(h: u32) -> u32 {
    mix(h ^ 0x7f4a_7c15)
}

/// The backend (id and endpoint) of the VIP with id `vip_id` for a flow with hash `h`.
#[inline(always)]
pub fn pick(vip_id: u32, h: u32) -> Option<(u32, &'static Backend)> {
    let slot = vip_id * MAGLEV_RING_SIZE + h % MAGLEV_RING_SIZE;
    let pair = MAGLEV.get(slot >> 1)?;
    let id = pair[(slot & 1) as usize];
    if id == NO_BACKEND {
        return None;
    }
    let b = BACKENDS.get(id)?;
    if b.family == 0 {
        return None;
    }
    Some((id, b))
}
