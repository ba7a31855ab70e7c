//! One program per concern.
pub mod bench;
pub mod xdp_lb;
