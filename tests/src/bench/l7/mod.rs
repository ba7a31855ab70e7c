//! Helpers of the L7 benchmark (`bench_l7`): a fixed-response upstream, a full-handshake load
//! generator, `wrk` and `h2load` output parsing, per-process CPU accounting, the peer proxies' configs and a
//! guard that stops the processes it started.
pub mod cpu;
pub mod h2load;
pub mod handshake;
pub mod peers;
pub mod stats;
pub mod upstream;
pub mod wrk;
