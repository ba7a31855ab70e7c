//! Next hop for a rewritten packet: `bpf_fib_lookup` gives the egress interface and MACs.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use ingress_common::l4::FAMILY_V6;

use crate::maps::SCRATCH;

const _: () = assert!(core::mem::size_of::<FibParams>() == 64);
const _: () = assert!(core::mem::align_of::<FibParams>() <= 8);

/// Where a packet leaves, and the MACs to write.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// Why no next hop was found.
pub enum FibMiss {
    /// Route known, neighbour not resolved: the stack must resolve it.
    NoNeigh,
    /// No route, not forwardable, or forwarding disabled.
    Other,
}

/// The route lookup input: the packet as it will look after NAT.
pub struct FibQuery<'a> {
    pub family: u8,
    pub proto: u8,
    pub src: &'a [u32; 4],
    pub dst: &'a [u32; 4],
    pub sport: u16,
    pub dport: u16,
}

/// Looks up the route and neighbour for `q` in the ingress interface's namespace.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, q: &FibQuery) -> Result<NextHop, FibMiss> {
    let mut hop = NextHop {
        ifindex: 0,
        smac: [0; 6],
        dmac: [0; 6],
    };
    match lookup_into(ctx.as_ptr(), ctx.ingress_ifindex() as u32, q, &mut hop) {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(hop),
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(FibMiss::NoNeigh),
        _ => Err(FibMiss::Other),
    }
}

/// The lookup itself, kept out of line so its code is not repeated at every call site; its
/// parameter block lives in this CPU's scratch slot, not on the BPF stack (the program is
/// near the 512-byte limit). Returns the helper's code.
#[inline(never)]
fn lookup_into(ctx: *mut core::ffi::c_void, ifindex: u32, q: &FibQuery, out: &mut NextHop) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return u32::MAX;
    };
    // SAFETY: this CPU's scratch slot; the block is used only within this call.
    let words = unsafe { &raw mut (*scratch).fib }.cast::<u64>();
    // Zeroed with eight volatile word stores: `mem::zeroed` or a zero array is lowered to a
    // call to the byte-loop memset, the costliest part of this function.
    let mut i = 0;
    while i < 8 {
        // SAFETY: writing within the 8-word, 8-aligned block.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of integers),
    // and the block is 64 bytes, 8-aligned.
    let p = unsafe { &mut *words.cast::<FibParams>() };
    p.family = q.family;
    p.l4_protocol = q.proto;
    p.sport = q.sport;
    p.dport = q.dport;
    // tot_len stays 0: no MTU check here. The route's hop is cached for many packets of
    // every size, so the size is checked per packet against the egress device instead
    // (`mtu::exceeded`).
    p.ifindex = ifindex;
    if q.family == FAMILY_V6 {
        p.__bindgen_anon_3.ipv6_src = *q.src;
        p.__bindgen_anon_4.ipv6_dst = *q.dst;
    } else {
        p.__bindgen_anon_3.ipv4_src = q.src[0];
        p.__bindgen_anon_4.ipv4_dst = q.dst[0];
    }
    // SAFETY: p is a valid, fully initialised parameter block of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.cast(), p, core::mem::size_of::<FibParams>() as i32, 0) };
    let rc = rc as u32;
    if rc == BPF_FIB_LKUP_RET_SUCCESS {
        out.ifindex = p.ifindex;
        out.smac = p.smac;
        out.dmac = p.dmac;
    }
    rc
}
