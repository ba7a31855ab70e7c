//! Test harness shared by the integration tests and the benchmarks: network-namespace guards,
//! packet builders, certificates, and helpers to run `ingressd`.
// Privileged test helpers call a few libc functions (setns, geteuid).
#![allow(unsafe_code)]

pub mod bench;
pub mod caps;
pub mod certs;
pub mod fake_api;
pub mod fixtures;
pub mod ingressd;
pub mod l7;
pub mod netns;
pub mod packet;
pub mod passthrough;
pub mod ports;
pub mod rbac;
pub mod topology;
pub mod upstream;
pub mod xdp;

/// The value of one sample in Prometheus text, by its whole series (`name{labels}`); 0 when
/// absent or not a number.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
