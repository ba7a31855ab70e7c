//! Connection tracking: forward flows (client -> VIP) and their reverse NAT entries.
//!
//! Both tables are set-associative hash tables laid out in plain BPF arrays (`Bucket`), not
//! kernel hash maps: an array lookup is inlined by the verifier, where every hash-map
//! operation is a chain of kernel calls (a new flow paid two LRU inserts, ~80% of its time).

/// A flow 5-tuple as seen on the wire; addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// A cached next hop: egress interface and MACs from `bpf_fib_lookup`, and when it was
/// looked up (`bpf_jiffies64`; 0 = never). Trusted for `HOP_TTL_JIFFIES`, so a route or
/// neighbour change takes effect within that time without a lookup per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// Low 32 bits of `bpf_jiffies64` at the lookup (compared with wrapping arithmetic).
    pub stamp_jiffies: u32,
}

/// How long a cached next hop is used before it is looked up again, in jiffies: 1.02 s at
/// HZ=250, 2.56 s at HZ=100, 0.26 s at HZ=1000. Jiffies because the verifier inlines
/// `bpf_jiffies64` into one load, where a nanosecond clock is a helper call costing ~15 ns
/// of a ~125 ns conntrack hit; the kernel's HZ is not known when the program is built, and
/// any of these bounds is short enough for a route change and long enough to be cheap.
pub const HOP_TTL_JIFFIES: u32 = 256;

/// `seen` of a flow entry: the seconds part (coarse monotonic clock, wrapping in 29 bits).
pub const SEEN_SECS: u32 = (1 << 29) - 1;

/// `seen` of a reply entry: the backend has answered (a packet came back through it, a
/// SYN-ACK included). Until then the flow is held only for `LbConfig::unreplied_secs` of
/// quiet, so SYNs to a dead backend or one-way datagrams cannot hold SNAT ports for the
/// established timeout (a SYN flood a live backend answers still can).
pub const SEEN_REPLIED: u32 = 1 << 29;
/// The flag bits of `seen`: they stay set once set.
pub const SEEN_FLAGS: u32 = !SEEN_SECS;
/// `seen` of a flow entry: a FIN was seen in this direction.
pub const SEEN_FIN: u32 = 1 << 30;
/// `seen` of a flow entry: an RST was seen in this direction.
pub const SEEN_RST: u32 = 1 << 31;

/// A bucket's stamp for a value last seen at `seen` (see `Bucket::stamps`).
#[inline(always)]
pub const fn stamp_of(seen: u32) -> u16 {
    seen as u16
}

/// Seconds between stamp `stamp` and `now` (a `seen` time), wrapping: a flow quiet for more
/// than 18 hours looks younger than it is, which only delays its eviction.
#[inline(always)]
pub const fn stamp_age(stamp: u16, now: u32) -> u16 {
    (now as u16).wrapping_sub(stamp)
}

/// Forward translation of a client flow: where it goes and which source it wears.
///
/// The backend address is copied here, not referenced by id, so an established flow keeps
/// its backend even when the backend table changes under it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowNat {
    pub backend: [u32; 4],
    pub snat: [u32; 4],
    /// Backend port, network byte order.
    pub backend_port: u16,
    /// Source port after SNAT, network byte order.
    pub snat_port: u16,
    pub vip_id: u32,
    /// Next hop towards the backend.
    pub hop: Hop,
    /// When a packet of this direction was last seen, to within the hop TTL (refreshed with
    /// the hop, and on FIN or RST), and the `SEEN_FIN`/`SEEN_RST` (and, in reply entries,
    /// `SEEN_REPLIED`) bits: what decides when the flow's SNAT port may go to another flow.
    pub seen: u32,
}

/// Reverse translation for replies arriving from a backend to the SNAT address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyNat {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    /// Client port, network byte order.
    pub client_port: u16,
    /// VIP port, network byte order.
    pub vip_port: u16,
    pub vip_id: u32,
    /// Next hop towards the client.
    pub hop: Hop,
    /// As `FlowNat::seen`, for the reply direction.
    pub seen: u32,
}

/// Slots per conntrack bucket: with the lock word, their tags fill two 64-byte cache lines
/// (their stamps a third).
/// Wide buckets keep overflow rare at twice the slots per flow (at a full table, ~2 buckets
/// in 10,000 evict a flow early), where 14 slots would need three times the memory.
pub const WAYS: usize = 30;

/// `Bucket::tags` value of a slot never used since the bucket was empty. Slots are taken
/// lowest first, so every slot after a free one is free too and a search stops at the first.
pub const TAG_FREE: u32 = 0;
/// `Bucket::tags` value of a slot whose flow was deleted: searches go on past it, inserts
/// take it.
pub const TAG_GONE: u32 = 1;
/// Bit set in every live slot's tag (see `place`), never in `TAG_FREE` or `TAG_GONE`.
pub const TAG_LIVE: u32 = 2;

/// Whether a slot's tag marks a live flow.
#[inline(always)]
pub const fn is_live(tag: u32) -> bool {
    tag & TAG_LIVE != 0
}

/// One entry of a conntrack table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Slot<V> {
    pub key: FlowKey,
    pub value: V,
}

/// One bucket of a conntrack table: a key lives in the bucket `place` gives it, in any slot.
///
/// Writers (new flows, deletions) take `lock` (compare-and-swap 0 -> 1); readers take no lock
/// and match `tags` first, then the key. A writer clears a slot's tag before it rewrites the
/// slot and sets it last, so a reader never matches a half-written new entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket<V> {
    /// 64 bits: BPF without ALU32 has only 64-bit compare-and-swap.
    pub lock: u64,
    /// Per slot: `TAG_FREE`, `TAG_GONE`, or the high half of the key's hash with `TAG_LIVE` set.
    pub tags: [u32; WAYS],
    /// Per slot: the low 16 bits of its value's `seen` seconds, written with it. A full bucket
    /// evicts its longest-quiet flow by these, reading no slot: once every bucket is full (flows
    /// are only evicted, never deleted when they close), every new flow evicts one.
    pub stamps: [u16; WAYS],
    pub _pad: [u16; 2],
    pub slots: [Slot<V>; WAYS],
}

impl<V: Default + Copy> Default for Bucket<V> {
    fn default() -> Self {
        Bucket {
            lock: 0,
            tags: [TAG_FREE; WAYS],
            stamps: [0; WAYS],
            _pad: [0; 2],
            slots: [Slot::default(); WAYS],
        }
    }
}

/// Buckets for a table meant to hold `entries` flows: twice the slots, so that a bucket
/// overflows (and evicts its longest-quiet flow early) in ~0.02% of buckets at full load.
pub const fn buckets_for(entries: u32) -> u32 {
    let b = (entries as u64 * 2).div_ceil(WAYS as u64);
    if b == 0 {
        1
    } else if b > u32::MAX as u64 {
        u32::MAX
    } else {
        b as u32
    }
}

/// Where a key lives: its bucket, and the tag its slot carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub bucket: u32,
    pub tag: u32,
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(h: u64, lo: u32, hi: u32) -> u64 {
    let h = (h ^ (lo as u64 | (hi as u64) << 32)).wrapping_mul(MIX);
    h ^ (h >> 32)
}

/// The bucket and tag of `key` in a table of `buckets` buckets hashed with `seed` (random per
/// node, kept in `LbConfig`, so flows cannot be aimed at one bucket without knowing it). A few
/// multiplies, cheap enough for the per-packet path; the same function on both sides lets
/// tests and tools find entries.
#[inline(always)]
pub fn place(key: &FlowKey, seed: u32, buckets: u32) -> Place {
    let mut h = MIX ^ seed as u64;
    h = mix(h, key.src[0], key.src[1]);
    h = mix(h, key.src[2], key.src[3]);
    h = mix(h, key.dst[0], key.dst[1]);
    h = mix(h, key.dst[2], key.dst[3]);
    let rest = key.proto as u32 | (key.family as u32) << 8 | (key._pad as u32) << 16;
    h = mix(h, key.sport as u32 | (key.dport as u32) << 16, rest);
    h = h.wrapping_mul(MIX);
    h ^= h >> 29;
    Place {
        // Multiply-shift maps the low half onto 0..buckets without a division.
        bucket: (((h & 0xffff_ffff) * buckets as u64) >> 32) as u32,
        tag: (h >> 32) as u32 | TAG_LIVE,
    }
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<Hop>() == 20);
const _: () = assert!(core::mem::size_of::<FlowNat>() == 64);
const _: () = assert!(core::mem::size_of::<ReplyNat>() == 64);
const _: () = assert!(core::mem::size_of::<Bucket<FlowNat>>() == 12 + WAYS * 110);
const _: () = assert!(core::mem::size_of::<Bucket<ReplyNat>>() == 12 + WAYS * 110);
/// The header (lock, tags, stamps) fills three cache lines exactly.
const _: () = assert!(core::mem::offset_of!(Bucket<FlowNat>, slots) == 192);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src: [0x0200_12c6 + (i >> 16), 0, 0, 0],
            dst: [0x0a00_13c6, 0, 0, 0],
            sport: (i as u16).to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: 2,
            _pad: 0,
        }
    }

    #[test]
    fn places_spread_evenly_and_depend_on_the_seed() {
        const BUCKETS: u32 = 1000;
        let mut load = [0u32; BUCKETS as usize];
        let mut moved = 0;
        for i in 0..100_000 {
            let p = place(&key(i), 7, BUCKETS);
            assert!(p.bucket < BUCKETS);
            assert!(is_live(p.tag));
            load[p.bucket as usize] += 1;
            moved += u32::from(place(&key(i), 8, BUCKETS).bucket != p.bucket);
        }
        // 100 per bucket on average; Poisson(100) stays within 55..150 in 1,000 draws.
        let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
        assert!(*min > 55 && *max < 150, "bucket loads {min}..{max}");
        assert!(moved > 99_000, "another seed moved only {moved} keys");
    }

    #[test]
    fn bucket_counts_give_twice_the_slots() {
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(15), 1);
        assert_eq!(buckets_for(16), 2);
        assert!(buckets_for(262_144) as usize * WAYS >= 2 * 262_144);
        assert_eq!(
            buckets_for(u32::MAX),
            (2 * u32::MAX as u64).div_ceil(WAYS as u64) as u32
        );
    }
}
