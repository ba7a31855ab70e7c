//! Helpers of `bench_passthrough` (TLS passthrough throughput and CPU against nginx and
//! HAProxy): CPU accounting from /proc, the proxies as child processes, the TLS endpoints.
pub mod cpu;
pub mod meter;
pub mod peers;
pub mod traffic;
