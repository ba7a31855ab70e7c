//! Bounds-checked packet access. Every read and write goes through `ptr_at`, which proves to
//! the verifier that `offset + size_of::<T>()` lies inside the packet.
pub mod eth;
pub mod ip;
pub mod l4;

use aya_ebpf::programs::XdpContext;

/// The packet ended before the header being read.
pub struct Truncated;

/// Pointer to a `T` at `offset` bytes into the packet, if the whole `T` is inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Truncated> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Truncated);
    }
    Ok((start + offset) as *mut T)
}

/// Reads a `T` at `offset` with one load of its natural width.
///
/// Packet headers are not always naturally aligned (IPv4 sits at offset 14), but BPF packet
/// loads of any width are allowed at any offset on the architectures we run on (the verifier
/// enforces alignment only where the CPU needs it), and `read_unaligned` would compile to a
/// byte-by-byte sequence costing tens of instructions per field.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Truncated> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: ptr_at checked that the whole T is inside the packet; see above for alignment.
    Ok(unsafe { p.read() })
}

/// Writes a `T` at `offset` with one store of its natural width (see [`read`]).
#[inline(always)]
pub fn write<T>(ctx: &XdpContext, offset: usize, v: T) -> Result<(), Truncated> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: ptr_at checked that the whole T is inside the packet.
    unsafe { p.write(v) };
    Ok(())
}
