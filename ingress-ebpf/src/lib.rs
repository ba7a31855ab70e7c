//! Empty library target; the kernel programs live in the `ingress` binary target.
#![no_std]
