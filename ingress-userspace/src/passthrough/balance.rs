//! Backend endpoint choice for passthrough connections and the connect with failover.
//!
//! Round robin by default. `load-balance: ewma` has no request latency to measure on an
//! opaque TLS stream, so it becomes its connection-level analogue: power of two choices over
//! the number of open connections per endpoint.
use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::net::TcpStream;

use crate::snapshot::{LoadBalance, Upstream};

/// Endpoints tried per connection before giving up.
const MAX_ATTEMPTS: usize = 3;

/// Balancing state of one upstream; kept across snapshots while its endpoints are unchanged.
#[derive(Debug)]
pub struct Balancer {
    upstream: Arc<Upstream>,
    policy: LoadBalance,
    next: AtomicUsize,
    /// Open connections per endpoint (index into `upstream.endpoints`).
    active: Vec<Arc<AtomicUsize>>,
}

/// Counts one open connection to an endpoint until dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no backend connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream {0} has no endpoints")]
    NoEndpoints(String),
    #[error("upstream {upstream}: {attempts} endpoint(s) failed, last {endpoint}: {source}")]
    Failed {
        upstream: String,
        attempts: usize,
        endpoint: SocketAddr,
        source: io::Error,
    },
}

impl Balancer {
    /// Fresh state for `upstream`.
    pub fn new(upstream: Arc<Upstream>, policy: LoadBalance) -> Self {
        let active = upstream
            .endpoints
            .iter()
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        Balancer {
            upstream,
            policy,
            next: AtomicUsize::new(0),
            active,
        }
    }

    /// Reuses `self` if it balances the same endpoints the same way, else starts afresh.
    pub fn carry_over(
        prev: &HashMap<String, Arc<Balancer>>,
        upstream: &Arc<Upstream>,
        policy: LoadBalance,
    ) -> Arc<Self> {
        match prev.get(&upstream.name) {
            Some(b) if b.upstream == *upstream && b.policy == policy => b.clone(),
            _ => Arc::new(Balancer::new(upstream.clone(), policy)),
        }
    }

    /// The upstream balanced.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Index of the endpoint for the next connection; `None` without endpoints.
    fn pick(&self) -> Option<usize> {
        let n = self.upstream.endpoints.len();
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        match self.policy {
            LoadBalance::RoundRobin => Some(i),
            LoadBalance::PeakEwma => {
                // Second choice: a different, pseudo-random endpoint.
                let j = (i + 1 + rand::random_range(0..n.max(2) - 1)) % n;
                let load = |k: usize| self.active[k].load(Ordering::Relaxed);
                Some(if load(j) < load(i) { j } else { i })
            }
        }
    }

    /// Connects to an endpoint, moving on to the next one on failure.
    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<(TcpStream, SocketAddr, ActiveGuard), ConnectError> {
        let n = self.upstream.endpoints.len();
        let mut last = None;
        let attempts = n.min(MAX_ATTEMPTS);
        for _ in 0..attempts {
            let Some(i) = self.pick() else { break };
            let addr = self.upstream.endpoints[i];
            let res = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                });
            match res {
                Ok(s) => {
                    self.active[i].fetch_add(1, Ordering::Relaxed);
                    return Ok((s, addr, ActiveGuard(self.active[i].clone())));
                }
                Err(e) => {
                    tracing::debug!(upstream = %self.upstream.name, endpoint = %addr, error = %e, "passthrough backend connect failed");
                    last = Some((addr, e));
                }
            }
        }
        match last {
            Some((endpoint, source)) => Err(ConnectError::Failed {
                upstream: self.upstream.name.clone(),
                attempts,
                endpoint,
                source,
            }),
            None => Err(ConnectError::NoEndpoints(self.upstream.name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::BackendProtocol;

    fn upstream(n: u16) -> Arc<Upstream> {
        Arc::new(Upstream {
            name: "ns/svc:443".into(),
            endpoints: (0..n)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
                .collect(),
            protocol: BackendProtocol::Https,
            missing: false,
            tls: None,
        })
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::new(upstream(3), LoadBalance::RoundRobin);
        let picks: Vec<_> = (0..6).filter_map(|_| b.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            Balancer::new(upstream(0), LoadBalance::RoundRobin).pick(),
            None
        );
    }

    #[test]
    fn two_choices_avoid_the_loaded_endpoint() {
        let b = Balancer::new(upstream(2), LoadBalance::PeakEwma);
        b.active[0].store(10, Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(b.pick(), Some(1));
        }
        let one = Balancer::new(upstream(1), LoadBalance::PeakEwma);
        assert_eq!(one.pick(), Some(0));
    }

    #[test]
    fn carry_over_keeps_state_only_for_identical_upstreams() {
        let u = upstream(2);
        let b = Arc::new(Balancer::new(u.clone(), LoadBalance::RoundRobin));
        let prev = HashMap::from([(u.name.clone(), b.clone())]);
        assert!(Arc::ptr_eq(
            &Balancer::carry_over(&prev, &u, LoadBalance::RoundRobin),
            &b
        ));
        assert!(!Arc::ptr_eq(
            &Balancer::carry_over(&prev, &upstream(3), LoadBalance::RoundRobin),
            &b
        ));
        assert!(!Arc::ptr_eq(
            &Balancer::carry_over(&prev, &u, LoadBalance::PeakEwma),
            &b
        ));
    }

    #[tokio::test]
    async fn connect_fails_over_to_a_live_endpoint() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A port that refuses: bind, learn the port, close.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let u = Arc::new(Upstream {
            name: "ns/x:1".into(),
            endpoints: vec![dead, live.local_addr().unwrap()],
            missing: false,
            protocol: BackendProtocol::Https,
            tls: None,
        });
        let b = Balancer::new(u, LoadBalance::RoundRobin);
        let (_s, addr, _g) = b.connect(Duration::from_secs(5)).await.unwrap();
        assert_eq!(addr, live.local_addr().unwrap());
        assert_eq!(b.active[1].load(Ordering::Relaxed), 1);
        drop(_g);
        assert_eq!(b.active[1].load(Ordering::Relaxed), 0);
    }
}
