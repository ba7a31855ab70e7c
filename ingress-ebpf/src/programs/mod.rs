//! One program per concern.
pub mod xdp_lb;
