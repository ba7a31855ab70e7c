//! Plain-data types shared by the kernel programs and `ingressd`.
//!
//! Every map key and value is `#[repr(C)]`, built from fixed-width integers with explicit
//! `_pad` fields and no implicit padding, so both sides agree byte for byte and `bpftool map
//! dump` shows field names through BTF. Sizes are asserted at compile time.
#![no_std]

pub mod conntrack;
pub mod counters;
pub mod edge;
pub mod l4;
pub mod maps;
pub mod passthrough;

#[cfg(feature = "user")]
mod pod;
