//! Next hop for a rewritten packet: `bpf_fib_lookup` gives the egress interface and MACs.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use ingress_common::l4::FAMILY_V6;

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
    pub ip_len: u16,
}

/// Looks up the route and neighbour for `q` in the ingress interface's namespace.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, q: &FibQuery) -> Result<NextHop, FibMiss> {
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of integers).
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = q.family;
    p.l4_protocol = q.proto;
    p.sport = q.sport;
    p.dport = q.dport;
    p.__bindgen_anon_1.tot_len = q.ip_len;
    p.ifindex = ctx.ingress_ifindex() as u32;
    if q.family == FAMILY_V6 {
        p.__bindgen_anon_3.ipv6_src = *q.src;
        p.__bindgen_anon_4.ipv6_dst = *q.dst;
    } else {
        p.__bindgen_anon_3.ipv4_src = q.src[0];
        p.__bindgen_anon_4.ipv4_dst = q.dst[0];
    }
    // SAFETY: p is a valid, fully initialised parameter block of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0)
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(NextHop { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(FibMiss::NoNeigh),
        _ => Err(FibMiss::Other),
    }
}
