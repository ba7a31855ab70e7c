//! aya::Pod impls so userspace can use the shared types as map keys and values.
//!
//! Sound because every type is `#[repr(C)]`, made of integers only, with no padding
//! (sizes asserted next to each type).
use crate::{
    conntrack::*,
    counters::Counter,
    edge::*,
    l4::*,
    passthrough::{SpliceCredit, SplicePeer},
};

macro_rules! pod {
    ($($t:ty),*) => { $( unsafe impl aya::Pod for $t {} )* };
}

pod!(
    Hop,
    VipKey,
    VipAddrKey,
    VipMeta,
    Backend,
    RetiredKey,
    LbConfig,
    FlowKey,
    FlowNat,
    ReplyNat,
    Counter,
    SplicePeer,
    SpliceCredit,
    EdgeDest,
    EdgeConfig,
    SourceKey,
    Bucket<FlowNat>,
    Bucket<ReplyNat>
);
