//! One program per concern.
pub mod bench;
pub mod sk_passthrough;
pub mod xdp_edge;
pub mod xdp_flow;
pub mod xdp_icmp;
pub mod xdp_lb;
pub mod xdp_too_big;
