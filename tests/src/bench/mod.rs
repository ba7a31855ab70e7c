//! Helpers of the benchmark binaries (`src/bin/bench_*.rs`): one module per benchmark, and
//! what they all use.
pub mod l7;
pub mod passthrough;

use anyhow::{bail, Result};

/// Pins the calling thread (and what it spawns afterwards) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity(0) affects only the
    // calling thread.
    #[allow(unsafe_code)]
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
