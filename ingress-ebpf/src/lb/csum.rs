//! Incremental Internet checksum updates (RFC 1624, eqn. 3).
//!
//! Words are summed as read from memory (native order); one's-complement addition does not
//! care about byte order as long as every word is read and written the same way.

/// A pending checksum change: the sum of removed (complemented) and added words.
#[derive(Clone, Copy)]
pub struct Delta(u64);

impl Delta {
    #[inline(always)]
    pub const fn new() -> Self {
        Delta(0)
    }

    /// Records that the 32-bit word `old` became `new`.
    #[inline(always)]
    pub fn word32(&mut self, old: u32, new: u32) {
        self.0 += (!old) as u64 + new as u64;
    }

    /// Records that the 16-bit word `old` became `new`.
    #[inline(always)]
    pub fn word16(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u64 + new as u64;
    }

    /// Records that an address (one word for IPv4, four for IPv6) changed.
    #[inline(always)]
    pub fn addr(&mut self, v6: bool, old: &[u32; 4], new: &[u32; 4]) {
        self.word32(old[0], new[0]);
        if v6 {
            self.word32(old[1], new[1]);
            self.word32(old[2], new[2]);
            self.word32(old[3], new[3]);
        }
    }

    /// The checksum field value after applying this change to `csum`.
    #[inline(always)]
    pub fn apply(self, csum: u16) -> u16 {
        !fold((!csum) as u64 + self.0)
    }
}

/// The checksum field value for data whose 16-bit words (as read from memory) sum to `sum`.
#[inline(always)]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}
