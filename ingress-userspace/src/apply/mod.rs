//! Appliers: each takes a new snapshot and brings one target up to date with it, by diff.
pub mod proxy;
