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
    /// The same stable hash, for `upstream-hash-by`'s rendezvous choice.
    pub hash_id: u64,
    pub(crate) pool: Pool,
    pub(crate) outlier: Outlier,
    pub(crate) load: PeakEwma,
}

impl Endpoint {
    /// A fresh endpoint of upstream `name`.
    pub fn new(name: &str, addr: SocketAddr, pool: Pool) -> Self {
        let hash_id = endpoint_hash(name, addr);
        Endpoint {
            addr,
            cookie: format!("{hash_id:016x}").into(),
            hash_id,
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
    /// `proxy-ssl-*`, for TLS upstreams that set it.
    pub tls: Option<Arc<super::tls::UpstreamTlsClients>>,
    /// Names this upstream in affinity cookies on canary routes ([`upstream_tag`] of `name`).
    pub tag: Box<str>,
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
            tag: upstream_tag(&name).into(),
            name,
            protocol,
            endpoints: endpoints.into(),
            tls: None,
            rr: AtomicUsize::new(0),
        }
    }

    /// With `proxy-ssl-*` TLS settings.
    pub fn with_tls(mut self, tls: Option<Arc<super::tls::UpstreamTlsClients>>) -> Self {
        self.tls = tls;
        self
    }

    /// Chooses an endpoint index not in `tried`, preferring ones not ejected.
    pub fn pick(&self, lb: LoadBalance, tried: &Tried) -> Option<usize> {
        balance::pick(&self.endpoints, &self.rr, lb, tried, now_ms())
    }

    /// The endpoint for a `upstream-hash-by` key, by rendezvous hashing: each endpoint scores
    /// the key and the highest score wins, so removing an endpoint moves only its own keys,
    /// and adding one takes about 1/n of them. Ejected endpoints are passed over, which
    /// sends their keys to each key's next-best endpoint until they return.
    pub fn by_hash(&self, key: u64) -> Option<usize> {
        self.scored(key).max().map(|(_, i)| i)
    }

    /// `upstream-hash-by-subset`: the key's `size` best endpoints by the same rendezvous
    /// score as [`UpstreamState::by_hash`] (so a key keeps its set as endpoints come and go,
    /// as far as they allow), and one of them at random. Ejected endpoints are passed over.
    pub fn by_hash_subset(&self, key: u64, size: u32) -> Option<usize> {
        let mut scored: Vec<(u64, usize)> = self.scored(key).collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.truncate(usize::try_from(size).unwrap_or(usize::MAX).max(1));
        if scored.is_empty() {
            return None;
        }
        let pick = rand::random_range(0..scored.len());
        Some(scored[pick].1)
    }

    /// Each endpoint not ejected, with its rendezvous score for `key`: (score, index).
    fn scored(&self, key: u64) -> impl Iterator<Item = (u64, usize)> + '_ {
        let now = now_ms();
        self.endpoints
            .iter()
            .enumerate()
            .filter(move |(_, e)| !e.outlier.is_ejected(now))
            .map(move |(i, e)| (mix64(key ^ e.hash_id), i))
    }

    /// Whether an affinity cookie names an endpoint of this upstream, ejected or not.
    pub fn knows_cookie(&self, value: &str) -> bool {
        self.endpoints.iter().any(|e| &*e.cookie == value)
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
    format!("{:016x}", endpoint_hash(upstream, addr))
}

/// The tag naming upstream `name` in affinity cookies: 8 hex digits of its name's hash, so a
/// session follows the Service, not the position of a route.
pub fn upstream_tag(name: &str) -> String {
    let mut h = super::filters::hash::Fnv::default();
    h.write(name.as_bytes());
    format!("{:08x}", h.finish() as u32)
}

/// FNV-1a of the upstream name and the endpoint address: the same on every node.
fn endpoint_hash(upstream: &str, addr: SocketAddr) -> u64 {
    let mut h = super::filters::hash::Fnv::default();
    h.write(upstream.as_bytes());
    h.write(&[0]);
    h.write(addr.to_string().as_bytes());
    h.finish()
}

/// A 64-bit finalizer (splitmix64's): spreads a key/endpoint pair over the whole range.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
                    Pool::new(pool::PoolSettings::new(Default::default())),
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
    fn a_hash_subset_spreads_a_key_over_its_own_endpoints() {
        let u = upstream(8);
        for key in [1u64, 42, 0xdead_beef] {
            let seen: std::collections::BTreeSet<usize> =
                (0..400).filter_map(|_| u.by_hash_subset(key, 3)).collect();
            assert_eq!(seen.len(), 3, "key {key}: {seen:?}");
            // The key's best endpoint is one of them.
            assert!(u.by_hash(key).is_some_and(|b| seen.contains(&b)));
        }
        // A subset larger than the upstream is the whole upstream.
        let all: std::collections::BTreeSet<usize> =
            (0..400).filter_map(|_| u.by_hash_subset(7, 20)).collect();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn cookie_is_stable_and_found() {
        let u = upstream(3);
        let c = affinity_cookie("ns/s:80", u.endpoints[2].addr);
        assert_eq!(c, affinity_cookie("ns/s:80", u.endpoints[2].addr));
        assert_eq!(u.by_cookie(&c), Some(2));
        assert_eq!(u.by_cookie("nope"), None);
    }

    #[test]
    fn hash_keys_spread_stay_put_and_move_only_with_their_endpoint() {
        let keys: Vec<u64> = (0..20_000u64)
            .map(|i| {
                let mut h = crate::proxy::filters::hash::Fnv::default();
                h.write(format!("/item/{i}").as_bytes());
                h.finish()
            })
            .collect();
        let five = upstream(5);
        let before: Vec<usize> = keys.iter().filter_map(|&k| five.by_hash(k)).collect();
        assert_eq!(before.len(), keys.len());
        let mut per = [0usize; 5];
        for &i in &before {
            per[i] += 1;
        }
        // 4,000 each on average.
        assert!(per.iter().all(|&n| (3_400..=4_600).contains(&n)), "{per:?}");

        // Without the last endpoint (same addresses for the rest): only its keys move.
        let four = upstream(4);
        for (&k, &was) in keys.iter().zip(&before) {
            let now = four.by_hash(k).unwrap_or(99);
            if was < 4 {
                assert_eq!(now, was, "a key of a remaining endpoint moved");
            }
        }

        // An ejected endpoint's keys go elsewhere and the others stay (its keys return
        // when the ejection ends: the choice is recomputed for every request).
        five.endpoints[1].outlier.eject(now_ms());
        for (&k, &was) in keys.iter().zip(&before).take(2_000) {
            let now = five.by_hash(k).unwrap_or(99);
            assert_ne!(now, 1);
            if was != 1 {
                assert_eq!(now, was);
            }
        }
    }
}
