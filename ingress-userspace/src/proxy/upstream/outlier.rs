//! Passive outlier detection: endpoints that fail repeatedly (connects that fail or time out,
//! resets, 5xx answers `proxy-next-upstream` passes over) are skipped for a while.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Consecutive failures that eject an endpoint.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long an ejected endpoint is skipped.
pub const EJECTION_MS: u64 = 30_000;

/// Failure count and ejection deadline of one endpoint.
#[derive(Debug, Default)]
pub struct Outlier {
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the endpoint is skipped; 0 when not ejected.
    ejected_until: AtomicU64,
}

impl Outlier {
    /// Whether the endpoint is ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Relaxed) > now_ms
    }

    /// Counts a failure; true when the threshold is reached.
    pub fn failure(&self) -> bool {
        self.consecutive_failures.fetch_add(1, Relaxed) + 1 >= FAILURE_THRESHOLD
    }

    /// Resets the failure count.
    pub fn success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Skips the endpoint for [`EJECTION_MS`] and starts counting afresh.
    pub fn eject(&self, now_ms: u64) {
        self.ejected_until.store(now_ms + EJECTION_MS, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }
}
