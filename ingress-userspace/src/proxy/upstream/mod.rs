//! Upstreams as the proxy sees them: pod endpoints with their connection pools, load and
//! health. Endpoint state outlives snapshots: the applier hands the same `Endpoint` to the next
//! table when the (upstream, protocol, address) triple is still there, so pools, latency
//! estimates and ejections survive config changes.
pub mod balance;
pub mod outlier;
pub mod pool;

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicUsize, Arc, OnceLock},
    time::{Duration, Instant},
};

use crate::snapshot::{BackendProtocol, LoadBalance};

use balance::PeakEwma;
use outlier::Outlier;
use pool::Pool;

/// One pod endpoint of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Value of the affinity cookie naming this endpoint (a stable hash, not the address).
    pub cookie: Box<str>,
    pub(crate) pool: Pool,
    pub(crate) outlier: Outlier,
    pub(crate) load: PeakEwma,
}

impl Endpoint {
    /// A fresh endpoint of upstream `name`.
    pub fn new(name: &str, addr: SocketAddr, pool: Pool) -> Self {
        Endpoint {
            addr,
            cookie: affinity_cookie(name, addr).into(),
            pool,
            outlier: Outlier::default(),
            load: PeakEwma::default(),
        }
    }
}

/// An upstream compiled for one table: its endpoints and balancing state.
#[derive(Debug)]
pub struct UpstreamState {
    /// `namespace/service:port` (the snapshot's `Upstream.name`).
    pub name: Arc<str>,
    pub protocol: BackendProtocol,
    pub endpoints: Box<[Arc<Endpoint>]>,
    rr: AtomicUsize,
}

/// Indices already tried for one request, so a retry goes to a different endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried {
    idx: [usize; 16],
    len: usize,
}

impl Tried {
    /// Whether endpoint `i` was tried.
    pub fn contains(&self, i: usize) -> bool {
        self.idx[..self.len].contains(&i)
    }

    /// Records endpoint `i` (beyond 16 entries the oldest ones are forgotten).
    pub fn push(&mut self, i: usize) {
        if self.len < self.idx.len() {
            self.idx[self.len] = i;
            self.len += 1;
        } else {
            self.idx.rotate_left(1);
            self.idx[self.idx.len() - 1] = i;
        }
    }

    /// Number of endpoints tried.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was tried.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl UpstreamState {
    /// An upstream over `endpoints`.
    pub fn new(name: Arc<str>, protocol: BackendProtocol, endpoints: Vec<Arc<Endpoint>>) -> Self {
        UpstreamState {
            name,
            protocol,
            endpoints: endpoints.into(),
            rr: AtomicUsize::new(0),
        }
    }

    /// Chooses an endpoint index not in `tried`, preferring ones not ejected.
    pub fn pick(&self, lb: LoadBalance, tried: &Tried) -> Option<usize> {
        balance::pick(&self.endpoints, &self.rr, lb, tried, now_ms())
    }

    /// The endpoint an affinity cookie names, if it exists and is not ejected.
    pub fn by_cookie(&self, value: &str) -> Option<usize> {
        let now = now_ms();
        self.endpoints
            .iter()
            .position(|e| &*e.cookie == value && !e.outlier.is_ejected(now))
    }

    /// Records a failed exchange with endpoint `i` (connect failure, reset or protocol error,
    /// timeout: what nginx's `max_fails` counts; an HTTP 5xx from the app is an answer, not a
    /// failure); may eject it, never the last healthy one.
    pub fn failed(&self, i: usize) {
        let Some(ep) = self.endpoints.get(i) else {
            return;
        };
        if !ep.outlier.failure() {
            return;
        }
        let now = now_ms();
        let others_healthy = self
            .endpoints
            .iter()
            .enumerate()
            .any(|(j, e)| j != i && !e.outlier.is_ejected(now));
        if others_healthy {
            ep.outlier.eject(now);
            tracing::warn!(upstream = %self.name, endpoint = %ep.addr, "endpoint ejected after repeated failures");
        }
    }

    /// Records a successful exchange with endpoint `i` and its response latency.
    pub fn succeeded(&self, i: usize, latency: Duration) {
        if let Some(ep) = self.endpoints.get(i) {
            ep.outlier.success();
            ep.load.observe(latency, now_ms());
        }
    }
}

/// Milliseconds since the first call (a process-local monotonic clock).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A stable cookie value for an endpoint: FNV-1a over upstream name and address, hex.
/// Stable across restarts and replicas, and does not reveal the pod address.
pub fn affinity_cookie(upstream: &str, addr: SocketAddr) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let addr = addr.to_string();
    for b in upstream.bytes().chain([0u8]).chain(addr.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize) -> UpstreamState {
        let eps = (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 1000 + i)
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"));
                Arc::new(Endpoint::new(
                    "ns/s:80",
                    addr,
                    Pool::new(8, Duration::from_secs(60)),
                ))
            })
            .collect();
        UpstreamState::new("ns/s:80".into(), BackendProtocol::Http, eps)
    }

    #[test]
    fn round_robin_visits_all_and_skips_tried() {
        let u = upstream(3);
        let mut seen = [0; 3];
        for _ in 0..30 {
            let i = u
                .pick(LoadBalance::RoundRobin, &Tried::default())
                .unwrap_or(99);
            seen[i] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
        let mut tried = Tried::default();
        tried.push(0);
        tried.push(1);
        for _ in 0..5 {
            assert_eq!(u.pick(LoadBalance::RoundRobin, &tried), Some(2));
        }
        tried.push(2);
        assert_eq!(u.pick(LoadBalance::RoundRobin, &tried), None);
    }

    #[test]
    fn repeated_failures_eject_but_never_the_last() {
        let u = upstream(2);
        for _ in 0..outlier::FAILURE_THRESHOLD {
            u.failed(0);
        }
        for _ in 0..10 {
            assert_eq!(u.pick(LoadBalance::RoundRobin, &Tried::default()), Some(1));
        }
        for _ in 0..outlier::FAILURE_THRESHOLD * 2 {
            u.failed(1);
        }
        // Endpoint 1 is the last healthy one: not ejected.
        assert_eq!(u.pick(LoadBalance::RoundRobin, &Tried::default()), Some(1));
    }

    #[test]
    fn all_ejected_still_serves() {
        let u = upstream(1);
        u.endpoints[0].outlier.eject(now_ms());
        assert_eq!(u.pick(LoadBalance::RoundRobin, &Tried::default()), Some(0));
        assert_eq!(u.pick(LoadBalance::PeakEwma, &Tried::default()), Some(0));
    }

    #[test]
    fn cookie_is_stable_and_found() {
        let u = upstream(3);
        let c = affinity_cookie("ns/s:80", u.endpoints[2].addr);
        assert_eq!(c, affinity_cookie("ns/s:80", u.endpoints[2].addr));
        assert_eq!(u.by_cookie(&c), Some(2));
        assert_eq!(u.by_cookie("nope"), None);
    }
}
