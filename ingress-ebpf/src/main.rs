//! Kernel programs of the ingress data plane. No logic here: module list, panic handler,
//! license.
#![no_std]
#![no_main]
// BPF has compare-and-swap; the bpfel target spec does not expose it (see lb::table).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// An empty asm statement hides loop bounds from LLVM's unroller (see lb::table::ways).
#![feature(asm_experimental_arch)]

mod counters;
mod lb;
mod maps;
mod parse;
mod programs;
mod verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

/// GPL is required for bpf_fib_lookup and the sockmap redirect helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
