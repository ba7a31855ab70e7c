//! Endpoint choice: round robin, or power of two choices over a peak-EWMA latency estimate
//! weighted by requests in flight (the linkerd/Finagle balancer).
use std::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    Arc,
};
use std::time::Duration;

use crate::snapshot::LoadBalance;

use super::{Endpoint, Tried};

/// Decay time constant of the latency estimate.
const DECAY_MS: f64 = 10_000.0;
/// Latency assumed for an endpoint never measured (nanoseconds).
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

/// Peak-EWMA latency and requests in flight of one endpoint.
#[derive(Debug)]
pub struct PeakEwma {
    /// f64 nanoseconds, as bits.
    rtt_ns: AtomicU64,
    stamp_ms: AtomicU64,
    pending: AtomicU32,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            rtt_ns: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            stamp_ms: AtomicU64::new(0),
            pending: AtomicU32::new(0),
        }
    }
}

impl PeakEwma {
    /// Folds in one latency sample: a peak is taken at once, lower samples decay into it.
    pub fn observe(&self, rtt: Duration, now_ms: u64) {
        let sample = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.rtt_ns.load(Relaxed));
        let elapsed = now_ms.saturating_sub(self.stamp_ms.swap(now_ms, Relaxed)) as f64;
        let next = if sample > prev {
            sample
        } else {
            let w = (-elapsed / DECAY_MS).exp();
            prev * w + sample * (1.0 - w)
        };
        // Racing updates lose a sample at worst; the estimate stays sane.
        self.rtt_ns.store(next.to_bits(), Relaxed);
    }

    /// The estimate at `now_ms` (decayed as [`Self::cost`] reads it), if a sample was ever
    /// taken (or seeded).
    fn measured(&self, now_ms: u64) -> Option<f64> {
        let rtt = f64::from_bits(self.rtt_ns.load(Relaxed));
        // A first sample at time 0 leaves the stamp at 0, but not the estimate at the default.
        (self.stamp_ms.load(Relaxed) != 0 || rtt != DEFAULT_RTT_NS).then(|| self.estimate(now_ms))
    }

    /// Starts the estimate at `rtt_ns` as of `now_ms`.
    fn seed(&self, rtt_ns: f64, now_ms: u64) {
        self.rtt_ns.store(rtt_ns.to_bits(), Relaxed);
        self.stamp_ms.store(now_ms.max(1), Relaxed);
    }

    /// Load score at `now_ms`: latency times (requests in flight + 1).
    pub fn cost(&self, now_ms: u64) -> f64 {
        self.estimate(now_ms) * f64::from(self.pending.load(Relaxed) + 1)
    }

    /// The latency estimate decayed for the time since its last sample, as tower's and
    /// ingress-nginx's `ewma.lua` read it: an endpoint that a peak made the costlier of every
    /// pair gets no requests and so no samples, and without the decay would stay shunned.
    /// Not while requests are in flight on it: an endpoint that takes connections but never
    /// answers gives no samples either, and must not come to look fast. Never measured
    /// (stamp 0): the default as it is.
    fn estimate(&self, now_ms: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt_ns.load(Relaxed));
        let stamp = self.stamp_ms.load(Relaxed);
        if stamp == 0 || self.pending.load(Relaxed) > 0 {
            return rtt;
        }
        let elapsed = now_ms.saturating_sub(stamp) as f64;
        rtt * (-elapsed / DECAY_MS).exp()
    }

    /// Requests in flight.
    pub fn pending(&self) -> u32 {
        self.pending.load(Relaxed)
    }

    fn begin(&self) {
        self.pending.fetch_add(1, Relaxed);
    }

    fn end(&self) {
        self.pending.fetch_sub(1, Relaxed);
    }
}

/// Starts the estimates of endpoints `fresh` (just added to an upstream) at the mean of the
/// measured ones among `all`, as ingress-nginx's `ewma.lua` does. Left at the 1 ms default,
/// a new endpoint looks faster than every busy one and takes nearly all requests until its
/// own samples catch up.
pub fn slow_start(all: &[Arc<Endpoint>], fresh: &[Arc<Endpoint>], now_ms: u64) {
    if fresh.is_empty() {
        return;
    }
    let (sum, n) = all
        .iter()
        .filter_map(|e| e.load.measured(now_ms))
        .fold((0.0, 0u32), |(sum, n), rtt| (sum + rtt, n + 1));
    if n == 0 {
        return;
    }
    let mean = sum / f64::from(n);
    for e in fresh {
        e.load.seed(mean, now_ms);
    }
}

/// Counts one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// Starts counting on `ep`.
    pub fn new(ep: &Arc<Endpoint>) -> Self {
        ep.load.begin();
        InFlight(ep.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.load.end();
    }
}

/// Chooses an endpoint index. Ejected endpoints are avoided unless nothing else is left.
pub fn pick(
    eps: &[Arc<Endpoint>],
    rr: &AtomicUsize,
    lb: LoadBalance,
    tried: &Tried,
    now_ms: u64,
) -> Option<usize> {
    let n = eps.len();
    if n == 0 {
        return None;
    }
    let healthy = |i: usize| !tried.contains(i) && !eps[i].outlier.is_ejected(now_ms);
    let untried = |i: usize| !tried.contains(i);
    match lb {
        LoadBalance::RoundRobin => {
            let start = rr.fetch_add(1, Relaxed);
            scan(n, start, healthy).or_else(|| scan(n, start, untried))
        }
        LoadBalance::PeakEwma => {
            if n == 1 {
                return untried(0).then_some(0);
            }
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            match (healthy(a), healthy(b)) {
                (true, true) => Some(if eps[b].load.cost(now_ms) < eps[a].load.cost(now_ms) {
                    b
                } else {
                    a
                }),
                (true, false) => Some(a),
                (false, true) => Some(b),
                (false, false) => scan(n, a, healthy).or_else(|| scan(n, a, untried)),
            }
        }
    }
}

fn scan(n: usize, start: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|k| (start.wrapping_add(k)) % n).find(|&i| ok(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_endpoint_starts_at_the_mean_of_the_measured_ones() {
        let ep = |port: u16| {
            Arc::new(Endpoint::new(
                "ns/app:80",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                super::super::Pool::new(super::super::pool::PoolSettings::new(Default::default())),
            ))
        };
        let (a, b, unmeasured) = (ep(1), ep(2), ep(3));
        a.load.observe(Duration::from_millis(300), 5);
        b.load.observe(Duration::from_millis(100), 0);
        let fresh = ep(4);
        // Read when `a` was measured, so nothing has decayed yet.
        slow_start(&[a, b, unmeasured], std::slice::from_ref(&fresh), 5);
        assert!(
            (fresh.load.cost(5) - 200e6).abs() < 1.0,
            "{}",
            fresh.load.cost(5)
        );
        // Nothing measured yet: the default stays.
        let other = ep(5);
        slow_start(&[ep(6)], std::slice::from_ref(&other), 10);
        assert!((other.load.cost(10) - DEFAULT_RTT_NS).abs() < 1.0);
    }

    #[test]
    fn peak_is_taken_then_decays() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(100), 1);
        assert!((e.cost(1) - 100e6).abs() < 1.0);
        e.observe(Duration::from_millis(1), 20_000);
        assert!(e.cost(20_000) < 20e6, "{}", e.cost(20_000));
        e.begin();
        let one = e.cost(20_000);
        e.begin();
        assert!((e.cost(20_000) - one * 1.5).abs() < 1.0);
        e.end();
        e.end();
        assert_eq!(e.pending(), 0);
    }

    /// One slow request must not shut an endpoint out: unpicked, it gets no samples, so its
    /// estimate decays as it is read until a pair prefers it again and a sample resets it.
    #[test]
    fn a_spiked_endpoint_is_picked_again_once_its_peak_has_decayed() {
        let eps: Vec<Arc<Endpoint>> = (1..=2)
            .map(|port| {
                Arc::new(Endpoint::new(
                    "ns/app:80",
                    std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    super::super::Pool::new(super::super::pool::PoolSettings::new(
                        Default::default(),
                    )),
                ))
            })
            .collect();
        eps[0].load.observe(Duration::from_secs(20), 1_000);
        eps[1].load.observe(Duration::from_millis(5), 1_000);
        let rr = AtomicUsize::new(0);
        let picks = |now: u64| {
            (0..200)
                .filter(|_| {
                    pick(&eps, &rr, LoadBalance::PeakEwma, &Tried::default(), now) == Some(0)
                })
                .count()
        };
        assert_eq!(picks(2_000), 0, "right after the spike it is avoided");
        // The other endpoint keeps serving at 5 ms; the spiked one is read 90 s later.
        eps[1].load.observe(Duration::from_millis(5), 91_000);
        assert_eq!(
            picks(91_000),
            200,
            "a 20 s peak decays below 5 ms within 90 s"
        );
        // An endpoint with a request in flight does not decay: one that never answers gives
        // no samples, and its pending count must keep it costly.
        let hung = PeakEwma::default();
        hung.observe(Duration::from_millis(20), 1_000);
        hung.begin();
        assert!(
            (hung.cost(91_000) - 40e6).abs() < 1.0,
            "{}",
            hung.cost(91_000)
        );
        hung.end();
        assert!(hung.cost(91_000) < 1e4, "decays once nothing is in flight");
        eps[0].load.observe(Duration::from_millis(5), 91_000);
        // The sample folds into what is left of the peak (2.5 ms), no longer 20 s.
        assert!(
            eps[0].load.cost(91_000) < 8e6,
            "{}",
            eps[0].load.cost(91_000)
        );
    }
}
