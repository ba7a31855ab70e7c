//! `limit-rps`: a token bucket per (Ingress, client address), burst of five seconds' worth
//! (ingress-nginx's default `limit-burst-multiplier`), answered 503 when empty. Memory is
//! bounded: each shard holds at most `MAX_PER_SHARD` buckets and drops idle (refilled) ones
//! first. Sharded locks, taken only on routes that have a limit.
use std::{collections::HashMap, hash::BuildHasher, net::IpAddr, sync::Mutex, time::Instant};

const SHARDS: usize = 16;
const MAX_PER_SHARD: usize = 4096;
/// Burst = rate * this.
pub const BURST_MULTIPLIER: u32 = 5;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets by (zone, client).
type Buckets = HashMap<(u64, IpAddr), Bucket>;

/// Token buckets for every limited Ingress.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Box<[Mutex<Buckets>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }
}

impl RateLimiter {
    /// Takes a token for `ip` in `zone` at `rps`; false when the bucket is empty.
    pub fn check(&self, zone: u64, ip: IpAddr, rps: u32, now: Instant) -> bool {
        if rps == 0 {
            return true;
        }
        let key = (zone, ip);
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        let rate = f64::from(rps);
        let burst = rate * f64::from(BURST_MULTIPLIER);
        if buckets.len() >= MAX_PER_SHARD && !buckets.contains_key(&key) {
            evict(&mut buckets, rate, burst, now);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Buckets held (for tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops buckets that have refilled (idle clients); if none has, the half least recently used.
fn evict(buckets: &mut Buckets, rate: f64, burst: f64, now: Instant) {
    buckets.retain(|_, b| {
        b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
    });
    if buckets.len() >= MAX_PER_SHARD {
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.last).collect();
        ages.sort_unstable();
        let cutoff = ages[ages.len() / 2];
        buckets.retain(|_, b| b.last > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let passed = (0..20).filter(|_| rl.check(1, ip, 2, t0)).count();
        assert_eq!(passed, 10);
        assert!(!rl.check(1, ip, 2, t0));
        assert!(rl.check(1, ip, 2, t0 + Duration::from_millis(600)));
        // Another zone or client has its own bucket.
        assert!(rl.check(2, ip, 2, t0));
    }

    #[test]
    fn memory_is_bounded() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..(SHARDS * MAX_PER_SHARD * 2) as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            rl.check(1, ip, 1, t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(rl.len() <= SHARDS * MAX_PER_SHARD, "{}", rl.len());
    }
}
