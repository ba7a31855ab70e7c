//! Test harness shared by the integration tests and the benchmarks: network-namespace guards,
//! packet builders, certificates, and helpers to run `ingressd`.

pub mod passthrough;
