//! Kernel maps: the MapWriter seam, the aya-backed writer, its fake, the loader and counters.

/// The kernel programs, built by build.rs (aya-build) and embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingress"));
