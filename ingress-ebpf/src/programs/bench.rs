//! Test and benchmark fixtures, never attached by `ingressd`: the trivial program used as the
//! timing floor, a live-frame traffic generator, and a counting sink.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    maps::{BENCH, BENCH_FRAME},
    parse::ptr_at,
};

/// Slot of BENCH holding the number of distinct flows the generator cycles through.
const GEN_FLOWS: u32 = 0;
/// Slot of BENCH counting generated frames.
const GEN_SENT: u32 = 1;
/// Slot of BENCH counting frames received by the sink.
const SINK_RECEIVED: u32 = 2;

/// Passes everything: the floor for per-call timings, and gives veth peers NAPI.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Transmits a frame (BPF_PROG_TEST_RUN live frames): rewrites the buffer with the 64-byte
/// template in BENCH_FRAME (buffers come back modified by the receiver), then cycles the UDP
/// source port of the untagged IPv4 frame through `BENCH[GEN_FLOWS]` values to make distinct
/// flows. The template carries a zero UDP checksum, so no checksum needs fixing.
#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    if let (Some(t), Ok(dst)) = (BENCH_FRAME.get(0), ptr_at::<[u64; 8]>(&ctx, 0)) {
        let mut i = 0;
        while i < 8 {
            // SAFETY: both are 64-byte buffers checked above.
            unsafe { (*dst)[i] = t[i] };
            i += 1;
        }
    }
    let flows = BENCH.get(GEN_FLOWS).map(|v| *v).unwrap_or(1);
    let sent = match BENCH.get_ptr_mut(GEN_SENT) {
        Some(p) => {
            // SAFETY: per-CPU slot.
            unsafe {
                *p += 1;
                *p
            }
        }
        None => 0,
    };
    if flows > 1 {
        if let Ok(p) = ptr_at::<u16>(&ctx, 14 + 20) {
            let port = 10000 + (sent % flows) as u16;
            // SAFETY: bounds checked by ptr_at.
            unsafe { p.write_unaligned(port.to_be()) };
        }
    }
    xdp_action::XDP_TX
}

/// Counts and drops IPv4 frames, the receiving end of throughput benchmarks; passes the
/// rest (ARP must reach the stack so the sender can resolve this host).
#[xdp]
pub fn xdp_sink(ctx: XdpContext) -> u32 {
    match crate::parse::read::<u16>(&ctx, 12) {
        Ok(t) if u16::from_be(t) == 0x0800 => {}
        _ => return xdp_action::XDP_PASS,
    }
    if let Some(p) = BENCH.get_ptr_mut(SINK_RECEIVED) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
    xdp_action::XDP_DROP
}
