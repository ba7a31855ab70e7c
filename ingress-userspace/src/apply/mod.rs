//! Appliers: each takes a new snapshot and brings one target up to date with it, by diff.
pub mod config_hash;
pub mod edge;
pub mod events;
pub mod leader;
pub mod local_l4;
pub mod local_ports;
pub mod maps;
pub mod proxy;
pub mod publish;
pub mod status;
