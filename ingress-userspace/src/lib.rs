//! `ingressd`: the userspace half of the XDP ingress data plane.
//!
//! Data flows one way:
//!
//! ```text
//! source (kube watchers | manifest dir) --SourceEvent--> store (one writer task)
//!   --> translate (pure: objects -> Snapshot + Diagnostics)
//!   --> Arc<Snapshot> --> apply::proxy (ArcSwap) | apply::maps (diffs via MapWriter)
//!                         | apply::status (leader only)
//! ```
//!
//! Glossary: a *snapshot* is one immutable, complete configuration; an *upstream* is a
//! Service port resolved to pod endpoints; a *VIP* is an address:port/protocol balanced in the
//! kernel; *passthrough* is TLS routed by SNI and spliced to the backend without termination.
// Only the kernel seam (`maps`) may opt out, module by module, with a reason.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod apply;
pub mod cli;
pub mod config;
#[allow(unsafe_code)] // mmap of the Maglev ring; see maps/writer.rs
pub mod maps;
pub mod passthrough;
pub mod proxy;
pub mod proxy_protocol;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod translate;

/// Sleeps until `deadline`, forever without one: a `select!` arm for an optional timer.
pub(crate) async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
