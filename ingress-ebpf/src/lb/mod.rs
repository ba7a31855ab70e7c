//! Load-balancing steps, each a small verb: pick a backend, allocate a SNAT port, look up the
//! next hop, rewrite headers and checksums.
pub mod csum;
pub mod fib;
pub mod maglev;
pub mod nat;
