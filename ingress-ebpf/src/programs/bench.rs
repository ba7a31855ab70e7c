//! Test and benchmark fixtures, never attached by `ingressd`: the trivial program used as the
//! timing floor, a live-frame traffic generator, and a counting sink.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{maps::BENCH, parse::ptr_at};

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

/// Transmits the frame it is run on (BPF_PROG_TEST_RUN live frames), cycling the UDP source
/// port of an untagged IPv4 frame through `BENCH[GEN_FLOWS]` values to make distinct flows.
/// The frame must carry a zero UDP checksum, so no checksum needs fixing.
#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
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

/// Counts and drops: the receiving end of throughput benchmarks.
#[xdp]
pub fn xdp_sink(_ctx: XdpContext) -> u32 {
    if let Some(p) = BENCH.get_ptr_mut(SINK_RECEIVED) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
    xdp_action::XDP_DROP
}
