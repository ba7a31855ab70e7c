//! ingress-nginx's `config_hash` of the configuration in use, computed on a thread of its
//! own: hashing a large configuration takes tens of milliseconds (80 ms for 10,000
//! Ingresses), which no apply should wait for. Of the snapshots submitted while one is being
//! hashed, only the latest is hashed next.
use std::{
    sync::{Arc, Condvar, Mutex},
    thread,
};

use crate::{proxy::metrics::ProxyMetrics, snapshot::Snapshot};

#[derive(Debug, Default)]
struct Slot {
    next: Option<Arc<Snapshot>>,
    closed: bool,
}

/// Hashes submitted snapshots into the metrics, latest first, until dropped.
#[derive(Debug)]
pub struct ConfigHasher {
    shared: Arc<(Mutex<Slot>, Condvar)>,
}

impl ConfigHasher {
    /// Starts the hashing thread, which sets the hash in `metrics`.
    pub fn start(metrics: Arc<ProxyMetrics>) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let theirs = shared.clone();
        thread::Builder::new()
            .name("config-hash".into())
            .spawn(move || run(&theirs, &metrics))?;
        Ok(ConfigHasher { shared })
    }

    /// Hashes `snapshot` once the thread is free, unless another is submitted first.
    pub fn submit(&self, snapshot: &Arc<Snapshot>) {
        let (slot, wake) = &*self.shared;
        slot.lock().unwrap_or_else(|e| e.into_inner()).next = Some(snapshot.clone());
        wake.notify_one();
    }
}

impl Drop for ConfigHasher {
    fn drop(&mut self) {
        let (slot, wake) = &*self.shared;
        slot.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        wake.notify_one();
    }
}

fn run(shared: &(Mutex<Slot>, Condvar), metrics: &ProxyMetrics) {
    let (slot, wake) = shared;
    loop {
        let snapshot = {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if s.closed {
                    return;
                }
                if let Some(next) = s.next.take() {
                    break next;
                }
                s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        metrics.set_config_hash(snapshot.config_hash());
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_latest_snapshot_submitted_is_hashed_into_the_metrics() {
        let metrics = Arc::new(ProxyMetrics::default());
        let hasher = ConfigHasher::start(metrics.clone()).expect("thread");
        let mut snapshots = Vec::new();
        for code in [301, 302, 308] {
            let mut s = Snapshot::default();
            s.global.http_redirect_code = code;
            snapshots.push(Arc::new(s));
        }
        let want = snapshots[2].config_hash();
        assert_ne!(want, snapshots[1].config_hash());
        for s in &snapshots {
            hasher.submit(s);
        }
        let started = Instant::now();
        while metrics.config_hash() != want {
            assert!(started.elapsed() < Duration::from_secs(5), "never hashed");
            thread::sleep(Duration::from_millis(5));
        }
        drop(hasher);
    }
}
