//! Load-balancing steps, each a small verb: pick a backend, allocate a SNAT port, look up the
//! next hop, rewrite headers and checksums.
pub mod csum;
pub mod emit;
pub mod expiry;
pub mod fib;
pub mod hop;
pub mod icmp;
pub mod maglev;
pub mod mtu;
pub mod nat;
pub mod table;

/// Copies an address out of map memory word by word. A plain copy of a 16-byte array from a
/// map value is lowered to a call to the byte-loop memmove.
#[inline(always)]
pub fn copy_addr(a: &[u32; 4]) -> [u32; 4] {
    // SAFETY: reading four initialised words of a live reference.
    unsafe {
        [
            core::ptr::read_volatile(&a[0]),
            core::ptr::read_volatile(&a[1]),
            core::ptr::read_volatile(&a[2]),
            core::ptr::read_volatile(&a[3]),
        ]
    }
}
