//! Lookups, inserts and deletes on the conntrack tables (`conntrack::Bucket` arrays).
//!
//! Everything here is inlined BPF code: the array lookup is rewritten by the verifier into a
//! bounds check and an add, so a flow lookup makes no kernel call at all, and an insert only
//! an atomic compare-and-swap for the bucket lock.
use core::{
    intrinsics::{atomic_cxchg, AtomicOrdering},
    ptr::{read_volatile, write_volatile},
    sync::atomic::{compiler_fence, Ordering},
};

use aya_ebpf::btf_maps::Array;
use ingress_common::{
    conntrack::{
        is_live, place, stamp_age, stamp_of, Bucket, FlowKey, FlowNat, ReplyNat, TAG_FREE,
        TAG_GONE, WAYS,
    },
    l4::LbConfig,
};

use crate::{
    lb::expiry,
    maps::{CT_BUCKETS, TABLE_WAY},
};

/// Tries at the bucket lock before an insert gives up: a holder keeps it for a few dozen
/// instructions, so failing means another CPU is inserting into this very bucket right now.
const LOCK_TRIES: u32 = 64;

/// A table value that says when its flow last saw a packet (`conntrack::SEEN_SECS` bits).
pub trait Aged {
    fn seen(&self) -> u32;
}

impl Aged for FlowNat {
    #[inline(always)]
    fn seen(&self) -> u32 {
        self.seen
    }
}

impl Aged for ReplyNat {
    #[inline(always)]
    fn seen(&self) -> u32 {
        self.seen
    }
}

/// One of the two conntrack tables and where its geometry lives in `LbConfig`.
pub struct Table<V: 'static> {
    map: &'static Array<Bucket<V>, CT_BUCKETS>,
    reply: bool,
}

// SAFETY: a table only holds a reference to a map, which BPF programs share by design.
unsafe impl<V> Sync for Table<V> {}

/// Why an insert did not happen.
pub enum InsertError<V> {
    /// The key is there already (only for `insert_new`): its value.
    Exists(*mut V),
    /// Another CPU held the bucket lock throughout, or the bucket is out of the map.
    Busy,
}

impl<V: Aged + Copy + 'static> Table<V> {
    pub const fn new(map: &'static Array<Bucket<V>, CT_BUCKETS>, reply: bool) -> Self {
        Table { map, reply }
    }

    #[inline(always)]
    fn bucket(&self, cfg: &LbConfig, key: &FlowKey) -> Option<(*mut Bucket<V>, u32)> {
        let buckets = if self.reply {
            cfg.reply_buckets
        } else {
            cfg.conntrack_buckets
        };
        let p = place(key, cfg.conntrack_seed, buckets);
        Some((self.map.get_ptr_mut(p.bucket)?, p.tag))
    }

    /// The value stored for `key`.
    #[inline(always)]
    pub fn get_ptr_mut(&self, cfg: &LbConfig, key: &FlowKey) -> Option<*mut V> {
        let (b, tag) = self.bucket(cfg, key)?;
        find(b, tag, key)
    }

    /// Starts loading the cache lines of `key`'s bucket header (its lock word, first tags and
    /// stamps), so a later insert does not wait for them: in a big table they are a memory
    /// access away, and the insert's compare-and-swap would stall on them.
    #[inline(always)]
    pub fn touch(&self, cfg: &LbConfig, key: &FlowKey) {
        if let Some((b, _)) = self.bucket(cfg, key) {
            // SAFETY: reading words of a live array element; the values are not used. The
            // first tags and the stamps: an insert writes a stamp.
            let _ = unsafe { read_volatile(&raw const (*b).tags[0]) };
            let _ = unsafe { read_volatile(&raw const (*b).stamps[0]) };
        }
    }

    /// The value stored for `key`, as a reference.
    ///
    /// # Safety
    /// Another CPU may rewrite the slot under the reference (as with a preallocated kernel
    /// hash map): copy fields out at once.
    #[inline(always)]
    pub unsafe fn get(&self, cfg: &LbConfig, key: &FlowKey) -> Option<&V> {
        // SAFETY: a live array element; see the function's contract.
        self.get_ptr_mut(cfg, key).map(|v| unsafe { &*v })
    }

    /// Stores `value` for `key`, replacing any value there.
    #[inline(always)]
    pub fn insert(&self, cfg: &LbConfig, key: &FlowKey, value: &V) -> Result<(), ()> {
        match self.put(cfg, key, value, true) {
            Ok(()) => Ok(()),
            Err(_) => Err(()),
        }
    }

    /// Stores `value` for `key` only if the key is absent; atomically, so two CPUs can never
    /// both succeed for one key.
    #[inline(always)]
    pub fn insert_new(
        &self,
        cfg: &LbConfig,
        key: &FlowKey,
        value: &V,
    ) -> Result<(), InsertError<V>> {
        self.put(cfg, key, value, false)
    }

    /// Inlined: it runs only in `xdp_flow`, whose stack has room, and a BPF-to-BPF call
    /// cost a new flow ~60 ns on this host (the return thunk).
    #[inline(always)]
    fn put(
        &self,
        cfg: &LbConfig,
        key: &FlowKey,
        value: &V,
        replace: bool,
    ) -> Result<(), InsertError<V>> {
        let (b, tag) = self.bucket(cfg, key).ok_or(InsertError::Busy)?;
        if !lock(b) {
            return Err(InsertError::Busy);
        }
        let out = match scan(b, tag, key) {
            Scan::Found(i) if !replace => {
                // SAFETY: i < WAYS, in a live array element.
                Err(InsertError::Exists(unsafe { &raw mut (*b).slots[i].value }))
            }
            Scan::Found(i) | Scan::Open(i) => {
                write_slot(b, i, tag, key, value);
                Ok(())
            }
            Scan::Full => {
                write_slot(b, oldest(b, value.seen()), tag, key, value);
                Ok(())
            }
        };
        unlock(b);
        out
    }

    /// Records a packet of `key`'s flow, carrying the `flags` bits, at the current time: in
    /// its value's `seen` (`seen` points at that field of the value found for `key`) and in
    /// its bucket's stamp, which eviction reads instead of the value.
    #[inline(always)]
    pub fn mark_seen(&self, cfg: &LbConfig, key: &FlowKey, seen: *mut u32, flags: u32) {
        let secs = expiry::now_secs();
        expiry::touch(seen, flags, secs);
        self.stamp(cfg, key, secs);
    }

    /// Records in `key`'s bucket header that its flow was seen at `seen` (the time just
    /// written into its value). No lock: only this slot's stamp is written, and a racing
    /// writer stores an equally recent one.
    ///
    /// Out of line: it runs once per hop TTL per flow, and inlined, its second search of the
    /// bucket kept the first one's results alive across the forwarding path (~5% of a
    /// conntrack hit).
    #[inline(never)]
    fn stamp(&self, cfg: &LbConfig, key: &FlowKey, seen: u32) {
        let Some((b, tag)) = self.bucket(cfg, key) else {
            return;
        };
        if let Some(i) = find_way(b, tag, key) {
            // SAFETY: i < WAYS, in a live array element.
            unsafe { write_volatile(&raw mut (*b).stamps[i], stamp_of(seen)) };
        }
    }

    /// Deletes `key` if present. Out of line: rare, and it keeps its locals off the stack
    /// frame of its callers.
    #[inline(never)]
    pub fn remove(&self, cfg: &LbConfig, key: &FlowKey) {
        let Some((b, tag)) = self.bucket(cfg, key) else {
            return;
        };
        if !lock(b) {
            // Left to age out: its flow's port is re-checked once per hop TTL anyway.
            return;
        }
        if let Some(i) = find_way(b, tag, key) {
            // SAFETY: i < WAYS, in a live array element.
            unsafe { write_volatile(&raw mut (*b).tags[i], TAG_GONE) };
        }
        unlock(b);
    }
}

/// WAYS as a loop bound LLVM cannot see through: unrolled, the slot loops spill a pointer
/// per slot onto the stack, which the forwarding program has none of to spare. The verifier
/// still knows the bound: the register is untouched.
#[inline(always)]
fn ways() -> usize {
    let mut w = WAYS;
    // SAFETY: an empty instruction that claims to change a register (libbpf's barrier_var).
    unsafe { core::arch::asm!("/* {0} */", inout(reg) w) };
    w
}

/// The slot of `key` in bucket `b`, if there.
#[inline(always)]
fn find_way<V>(b: *mut Bucket<V>, tag: u32, key: &FlowKey) -> Option<usize> {
    match scan(b, tag, key) {
        Scan::Found(i) => Some(i),
        Scan::Open(_) | Scan::Full => None,
    }
}

/// `i` as the verifier sees a value read from memory: some index below WAYS. Returned as a
/// constant, each slot would give the rest of the program a pointer of its own offset, and
/// the verifier would walk all of it once per slot (past its 1M-instruction budget).
#[inline(always)]
fn opaque(i: usize) -> Option<usize> {
    let cell = TABLE_WAY.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this packet only.
    let i = unsafe {
        write_volatile(cell, i as u32);
        read_volatile(cell) as usize
    };
    (i < WAYS).then_some(i)
}

/// Key equality as ten word compares: a derived `==` compares byte arrays through `bcmp`.
/// The searched key's address goes through an empty asm statement, so its words are read
/// inside the slot loop: hoisted out of it, ten words do not fit BPF's four callee-saved
/// registers and spill onto a stack there is no room for.
#[inline(always)]
fn same(a: &FlowKey, b: &FlowKey) -> bool {
    let a = (a as *const FlowKey).cast::<u32>();
    let mut b = (b as *const FlowKey).cast::<u32>();
    // SAFETY: an empty instruction that claims to change a register.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) b) };
    let mut diff = 0;
    let mut i = 0;
    while i < 10 {
        // SAFETY: FlowKey is 40 bytes of plain integers, 4-aligned: ten u32 words.
        diff |= unsafe { *a.add(i) ^ *b.add(i) };
        i += 1;
    }
    diff == 0
}

#[inline(always)]
fn find<V>(b: *mut Bucket<V>, tag: u32, key: &FlowKey) -> Option<*mut V> {
    let i = find_way(b, tag, key)?;
    // SAFETY: i < WAYS, in a live array element.
    Some(unsafe { &raw mut (*b).slots[i].value })
}

/// What an insert found in a locked bucket.
enum Scan {
    /// The key, in this slot.
    Found(usize),
    /// Not the key; this slot is free (never used), and so are all after it.
    Open(usize),
    /// Not the key, and no slot is free: a new key takes a deleted slot or evicts a flow.
    Full,
}

/// One pass over a bucket's tags: the key's slot, else the first free one (an insert needs
/// both from one pass: the tag loop is most of its instructions). Lookups take no lock: a
/// slot being rewritten has no live tag until its bytes are in place.
#[inline(always)]
fn scan<V>(b: *mut Bucket<V>, tag: u32, key: &FlowKey) -> Scan {
    let n = ways();
    let mut i = 0;
    while i < n && i < WAYS {
        // SAFETY: i < WAYS, in a live array element; the tag is read once, then the key.
        unsafe {
            let t = read_volatile(&raw const (*b).tags[i]);
            if t == TAG_FREE {
                return opaque(i).map_or(Scan::Full, Scan::Open);
            }
            if t == tag && same(&(*b).slots[i].key, key) {
                return opaque(i).map_or(Scan::Full, Scan::Found);
            }
        }
        i += 1;
    }
    Scan::Full
}

/// The slot a new key takes in a bucket without free slots: a deleted one, else the one quiet
/// longest (an LRU per bucket), by the header's stamps alone: reading every slot's `seen`
/// cost 30 cache lines per new flow once tables had filled. `now` is the new value's `seen`.
#[inline(always)]
fn oldest<V>(b: *mut Bucket<V>, now: u32) -> usize {
    let n = ways();
    let mut best = 0;
    let mut best_age = 0;
    let mut i = 0;
    while i < n && i < WAYS {
        // SAFETY: i < WAYS, in a live array element; the lock keeps other writers out.
        let (tag, stamp) = unsafe {
            (
                read_volatile(&raw const (*b).tags[i]),
                read_volatile(&raw const (*b).stamps[i]),
            )
        };
        // A deleted slot counts as quiet forever.
        let age = if is_live(tag) {
            stamp_age(stamp, now) as u32
        } else {
            u32::MAX
        };
        if age >= best_age {
            best = i;
            best_age = age;
        }
        i += 1;
    }
    opaque(best).unwrap_or(WAYS)
}

/// Writes slot `i` of a locked bucket. The tag is cleared first and set last, so a lock-free
/// reader never matches the slot while it holds a mix of old and new bytes.
#[inline(always)]
fn write_slot<V: Aged + Copy>(b: *mut Bucket<V>, i: usize, tag: u32, key: &FlowKey, value: &V) {
    if i >= WAYS {
        return;
    }
    // SAFETY: i < WAYS, in a live array element; the lock keeps other writers out.
    unsafe {
        // Gone, not free: a free slot would end searches for the live flows after it.
        write_volatile(&raw mut (*b).tags[i], TAG_GONE);
        compiler_fence(Ordering::Release);
        (*b).slots[i].key = *key;
        (*b).slots[i].value = *value;
        (*b).stamps[i] = stamp_of(value.seen());
        compiler_fence(Ordering::Release);
        write_volatile(&raw mut (*b).tags[i], tag);
    }
}

#[inline(always)]
fn lock<V>(b: *mut Bucket<V>) -> bool {
    let mut tries = 0;
    while tries < LOCK_TRIES {
        // SAFETY: the lock word of a live array element, taken only by this compare-and-swap
        // and released by its holder (`unlock`). The intrinsic because this target's atomics
        // lack `compare_exchange` (its spec says no CAS), while BPF has had BPF_CMPXCHG since
        // Linux 5.12.
        let (_, won) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
                &raw mut (*b).lock,
                0,
                1,
            )
        };
        if won {
            return true;
        }
        tries += 1;
    }
    false
}

#[inline(always)]
fn unlock<V>(b: *mut Bucket<V>) {
    // A plain store, not an exchange: a locked instruction would wait for the slot's stores
    // (cache misses in a big table) to drain. x86 keeps stores in order, so the slot is
    // written before the lock reads free; see `write_slot` for the same reliance.
    compiler_fence(Ordering::Release);
    // SAFETY: the lock word of a live array element, which this CPU holds.
    unsafe { write_volatile(&raw mut (*b).lock, 0) };
}
